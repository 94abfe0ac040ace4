#include "snapshot/shadow_refcounts.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "refcount/refcount.hpp"

namespace qcow {

namespace {
constexpr uint64_t kCacheBytes = 16ull << 20;  // copied blocks kept in memory before they are written
}

ShadowRefcounts::ShadowRefcounts(ImageFile& file, const Geometry& g, std::vector<uint64_t> reftable,
                                 uint64_t reftable_offset, uint32_t reftable_clusters)
    : file_(file),
      g_(g),
      current_(reftable),
      table_(std::move(reftable)),
      copied_(table_.size(), false),
      old_table_offset_(reftable_offset),
      old_table_clusters_(reftable_clusters),
      blocks_(&file, Structure::kRefcountBlock, g.cluster_size, std::max<uint64_t>(16, kCacheBytes / g.cluster_size)) {}

// The current blocks are never written (copies are), so they read as stored.
Result<uint64_t> ShadowRefcounts::current_refcount(uint64_t cluster) {
  const uint64_t rt = cluster >> g_.refblock_bits;
  const uint64_t offset = rt < current_.size() ? current_[rt] & kReftOffsetMask : 0;
  if (!offset) return uint64_t(0);
  if ((offset & (g_.cluster_size - 1)) || offset >= kMaxHostOffset)
    return Status::corrupt(fmt::format("refcount block offset {:#x} invalid (refcount table index {:#x})", offset, rt));
  QCOW_ASSIGN_OR_RETURN(uint8_t * p, blocks_.get(offset));
  return get_refcount_entry(p, g_.refcount_order, cluster & (g_.refblock_entries - 1));
}

Result<bool> ShadowRefcounts::fresh(uint64_t cluster) {
  QCOW_ASSIGN_OR_RETURN(uint64_t now, current_refcount(cluster));
  if (now) return false;
  QCOW_ASSIGN_OR_RETURN(uint64_t after, get(cluster));
  return after == 0;
}

Result<uint64_t> ShadowRefcounts::block(uint64_t rt, bool copy) {
  if (rt < table_.size() && copied_[rt]) return table_[rt];
  const uint64_t old = rt < table_.size() ? table_[rt] & kReftOffsetMask : 0;
  if (old && ((old & (g_.cluster_size - 1)) || old >= kMaxHostOffset))
    return Status::corrupt(fmt::format("refcount block offset {:#x} invalid (refcount table index {:#x})", old, rt));
  if (!copy) return old;
  std::vector<uint8_t> data(g_.cluster_size, 0);
  if (old) {
    QCOW_ASSIGN_OR_RETURN(uint8_t * p, blocks_.get(old));
    std::memcpy(data.data(), p, data.size());
  }
  QCOW_ASSIGN_OR_RETURN(uint64_t fresh, next_fresh_cluster());
  const uint64_t offset = fresh << g_.cluster_bits;
  if (rt >= table_.size()) {
    table_.resize(rt + 1, 0);
    copied_.resize(rt + 1, false);
  }
  table_[rt] = offset;
  copied_[rt] = true;
  claim(Structure::kRefcountBlock, offset, g_.cluster_size);
  QCOW_ASSIGN_OR_RETURN(uint8_t * p, blocks_.get_empty(offset));
  std::memcpy(p, data.data(), data.size());
  blocks_.mark_dirty(offset);
  // The copy counts itself (in whichever block covers it); the block it replaces is free.
  QCOW_TRY(update(fresh, 1));
  if (old) QCOW_TRY(update(old >> g_.cluster_bits, -1));
  return offset;
}

Result<uint64_t> ShadowRefcounts::get(uint64_t cluster) {
  QCOW_ASSIGN_OR_RETURN(uint64_t offset, block(cluster >> g_.refblock_bits, false));
  if (!offset) return uint64_t(0);
  QCOW_ASSIGN_OR_RETURN(uint8_t * p, blocks_.get(offset));
  return get_refcount_entry(p, g_.refcount_order, cluster & (g_.refblock_entries - 1));
}

Status ShadowRefcounts::update(uint64_t cluster, int64_t delta) {
  if (finished_) return Status::internal("refcount change after the new refcount table was written");
  if (delta == 0) return Status::ok();
  const uint64_t rt = cluster >> g_.refblock_bits;
  if (delta < 0) {
    QCOW_ASSIGN_OR_RETURN(uint64_t existing, block(rt, false));
    if (!existing)
      return Status::corrupt(fmt::format("cannot decrease the refcount of cluster {:#x}: it has no refcount block",
                                         cluster << g_.cluster_bits));
  }
  QCOW_ASSIGN_OR_RETURN(uint64_t offset, block(rt, true));
  QCOW_ASSIGN_OR_RETURN(uint8_t * p, blocks_.get(offset));
  const uint64_t index = cluster & (g_.refblock_entries - 1);
  const uint64_t v = get_refcount_entry(p, g_.refcount_order, index);
  if (delta < 0 && v < uint64_t(-delta))
    return Status::corrupt(fmt::format("refcount of cluster {:#x} would drop below zero", cluster << g_.cluster_bits));
  if (delta > 0 && g_.max_refcount() - v < uint64_t(delta))
    return Status::limit(fmt::format("refcount of cluster {:#x} would exceed the {}-bit maximum",
                                     cluster << g_.cluster_bits, g_.refcount_bits));
  set_refcount_entry(p, g_.refcount_order, index, v + delta);
  blocks_.mark_dirty(offset);
  return Status::ok();
}

Result<uint64_t> ShadowRefcounts::next_fresh_cluster() {
  for (;;) {
    const uint64_t c = next_++;
    if ((c + 1) << g_.cluster_bits > kMaxHostOffset)
      return Status::error(ErrorCode::kNoSpace, "no free host cluster below the 64 PB offset limit");
    QCOW_ASSIGN_OR_RETURN(bool free, fresh(c));
    if (free) return c;
  }
}

Result<uint64_t> ShadowRefcounts::alloc(uint64_t n, Structure what) {
  for (;;) {
    QCOW_ASSIGN_OR_RETURN(uint64_t first, next_fresh_cluster());
    uint64_t k = 1;
    for (; k < n; ++k) {
      QCOW_ASSIGN_OR_RETURN(bool free, fresh(first + k));
      if (!free) break;
    }
    if (k < n) {
      next_ = first + k + 1;
      continue;
    }
    next_ = first + n;
    for (uint64_t c = first; c < first + n; ++c) QCOW_TRY(update(c, 1));
    claim(what, first << g_.cluster_bits, n << g_.cluster_bits);
    return first << g_.cluster_bits;
  }
}

void ShadowRefcounts::claim(Structure what, uint64_t offset, uint64_t length) {
  if (!file_.tracks(what)) return;
  file_.overlaps().add(what, offset, length);
  claims_.push_back({what, offset, length});
}

void ShadowRefcounts::release_claims() {
  for (const Claim& c : claims_) file_.overlaps().remove(c.what, c.offset, c.length);
  claims_.clear();
}

Result<std::pair<uint64_t, uint32_t>> ShadowRefcounts::finish() {
  for (uint64_t c = 0; c < old_table_clusters_; ++c) QCOW_TRY(update((old_table_offset_ >> g_.cluster_bits) + c, -1));
  const uint64_t entries_per_cluster = g_.cluster_size / 8;
  for (;;) {
    const uint64_t clusters = std::max<uint64_t>(1, div_round_up(table_.size(), entries_per_cluster));
    if ((clusters << g_.cluster_bits) > kMaxReftableBytes)
      return Status::error(ErrorCode::kNoSpace, "refcount table would exceed the 8 MiB limit");
    QCOW_ASSIGN_OR_RETURN(uint64_t offset, alloc(clusters, Structure::kRefcountTable));
    // Its own refcounts may have needed blocks past what the table can hold: try a larger one.
    if (div_round_up(table_.size(), entries_per_cluster) > clusters) {
      for (uint64_t c = 0; c < clusters; ++c) QCOW_TRY(update((offset >> g_.cluster_bits) + c, -1));
      continue;
    }
    QCOW_TRY(blocks_.flush());
    QCOW_TRY(store_table(file_, Structure::kRefcountTable, offset, table_, clusters << g_.cluster_bits));
    finished_ = true;
    return std::make_pair(offset, uint32_t(clusters));
  }
}

}  // namespace qcow
