#include "refcount/refcount.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"

namespace qcow {

uint64_t get_refcount_entry(const uint8_t* b, uint32_t order, uint64_t i) {
  switch (order) {
    case 0: return (b[i / 8] >> (i % 8)) & 1;
    case 1: return (b[i / 4] >> (2 * (i % 4))) & 3;
    case 2: return (b[i / 2] >> (4 * (i % 2))) & 15;
    case 3: return b[i];
    case 4: return load_be16(b + 2 * i);
    case 5: return load_be32(b + 4 * i);
    default: return load_be64(b + 8 * i);
  }
}

void set_refcount_entry(uint8_t* b, uint32_t order, uint64_t i, uint64_t v) {
  auto set_bits = [&](uint64_t byte, unsigned shift, unsigned mask) {
    b[byte] = uint8_t((b[byte] & ~(mask << shift)) | ((v & mask) << shift));
  };
  switch (order) {
    case 0: set_bits(i / 8, unsigned(i % 8), 1); break;
    case 1: set_bits(i / 4, unsigned(2 * (i % 4)), 3); break;
    case 2: set_bits(i / 2, unsigned(4 * (i % 2)), 15); break;
    case 3: b[i] = uint8_t(v); break;
    case 4: store_be16(b + 2 * i, uint16_t(v)); break;
    case 5: store_be32(b + 4 * i, uint32_t(v)); break;
    default: store_be64(b + 8 * i, v); break;
  }
}

Refcounts::Refcounts(ImageFile* file, const Geometry& geo, size_t cache_slices)
    : file_(file), geo_(geo), cache_(file, Structure::kRefcountBlock, geo.cluster_size, cache_slices) {}

Status Refcounts::load(uint64_t offset, uint32_t clusters) {
  uint64_t bytes = uint64_t(clusters) << geo_.cluster_bits;
  if (clusters == 0) return Status::corrupt("refcount table has no clusters");
  if (bytes > kMaxReftableBytes)
    return Status::limit(fmt::format("refcount table of {} clusters is larger than the 8 MiB limit", clusters));
  if (offset & (geo_.cluster_size - 1))
    return Status::corrupt(fmt::format("refcount table offset {:#x} is not cluster aligned", offset));
  QCOW_ASSIGN_OR_RETURN(reftable_, load_table(*file_, offset, bytes / 8, "refcount table"));
  reftable_offset_ = offset;
  reftable_clusters_ = clusters;
  file_->overlaps().clear(Structure::kRefcountTable);
  file_->overlaps().clear(Structure::kRefcountBlock);
  register_table();
  for (uint64_t e : reftable_)
    if (e & kReftOffsetMask) register_block(e & kReftOffsetMask);
  return Status::ok();
}

void Refcounts::register_table() {
  if (file_->tracks(Structure::kRefcountTable))
    file_->overlaps().add(Structure::kRefcountTable, reftable_offset_, uint64_t(reftable_clusters_) << geo_.cluster_bits);
}

void Refcounts::register_block(uint64_t offset) {
  if (file_->tracks(Structure::kRefcountBlock)) file_->overlaps().add(Structure::kRefcountBlock, offset, geo_.cluster_size);
}

Status Refcounts::check_unused(uint64_t first_cluster, uint64_t n) {
  return file_->check_free(first_cluster << geo_.cluster_bits, n << geo_.cluster_bits, "newly allocated cluster");
}

Result<uint64_t> Refcounts::block_offset(uint64_t rt_index) {
  if (rt_index >= reftable_.size()) return uint64_t(0);
  uint64_t e = reftable_[rt_index];
  uint64_t off = e & kReftOffsetMask;
  if (off && ((off & (geo_.cluster_size - 1)) || off >= kMaxHostOffset))
    return Status::corrupt(fmt::format("refcount block offset {:#x} invalid (refcount table index {:#x})", off, rt_index));
  return off;
}

Result<uint64_t> Refcounts::get(uint64_t cluster) {
  QCOW_ASSIGN_OR_RETURN(uint64_t off, block_offset(cluster >> geo_.refblock_bits));
  if (!off) return uint64_t(0);
  QCOW_ASSIGN_OR_RETURN(uint8_t * b, cache_.get(off));
  return get_refcount_entry(b, geo_.refcount_order, cluster & (geo_.refblock_entries - 1));
}

Status Refcounts::update(uint64_t cluster, int64_t delta) {
  QCOW_ASSIGN_OR_RETURN(uint64_t off, block_offset(cluster >> geo_.refblock_bits));
  if (!off) {
    if (delta < 0)
      return Status::corrupt(fmt::format("cannot decrease the refcount of cluster {:#x}: it has no refcount block",
                                         cluster << geo_.cluster_bits));
    return Status::internal("refcount update without a refcount block");
  }
  QCOW_ASSIGN_OR_RETURN(uint8_t * b, cache_.get(off));
  uint64_t idx = cluster & (geo_.refblock_entries - 1);
  uint64_t v = get_refcount_entry(b, geo_.refcount_order, idx);
  if (delta < 0 && v < uint64_t(-delta))
    return Status::corrupt(fmt::format("refcount of cluster {:#x} would drop below zero", cluster << geo_.cluster_bits));
  if (delta > 0 && geo_.max_refcount() - v < uint64_t(delta))
    return Status::error(ErrorCode::kLimit, fmt::format("refcount of cluster {:#x} would exceed the {}-bit maximum",
                                                        cluster << geo_.cluster_bits, geo_.refcount_bits));
  v += delta;
  set_refcount_entry(b, geo_.refcount_order, idx, v);
  cache_.mark_dirty(off);
  if (v == 0 && cluster < free_hint_) free_hint_ = cluster;
  return Status::ok();
}

Result<uint64_t> Refcounts::find_free_run(uint64_t start, uint64_t n, uint64_t* first_free) {
  uint64_t run_start = start, run = 0, c = start;
  uint64_t first = UINT64_MAX;
  const uint64_t max_cluster = kMaxHostOffset >> geo_.cluster_bits;
  while (run < n) {
    if (c >= max_cluster) return Status::error(ErrorCode::kNoSpace, "no free host cluster below the 64 PB offset limit");
    uint64_t rt = c >> geo_.refblock_bits;
    QCOW_ASSIGN_OR_RETURN(uint64_t boff, block_offset(rt));
    uint64_t block_end = (rt + 1) << geo_.refblock_bits;
    if (!boff) {  // all free in this range
      first = std::min(first, c);
      if (run == 0) run_start = c;
      uint64_t take = std::min(block_end - c, n - run);
      run += take;
      c += take;
      continue;
    }
    QCOW_ASSIGN_OR_RETURN(uint8_t * b, cache_.get(boff));
    for (; c < block_end && run < n; ++c) {
      if (get_refcount_entry(b, geo_.refcount_order, c & (geo_.refblock_entries - 1)) == 0) {
        first = std::min(first, c);
        if (run == 0) run_start = c;
        ++run;
      } else {
        run = 0;
      }
    }
  }
  if (first_free) *first_free = first;
  return run_start;
}

Status Refcounts::create_blocks(uint64_t first_cluster, const std::vector<uint64_t>& ranges) {
  // New blocks go to clusters first_cluster, first_cluster+1, ... (free; their ranges all
  // have blocks or are in `ranges`). A block whose cluster lies in its own range describes
  // itself; one outside it is counted by the block of the range it lies in.
  const uint64_t k = ranges.size();
  if (((first_cluster + k) << geo_.cluster_bits) > kMaxHostOffset)
    return Status::error(ErrorCode::kNoSpace, "host offset limit reached");
  for (uint64_t j = 0; j < k; ++j) {
    uint64_t off = (first_cluster + j) << geo_.cluster_bits;
    QCOW_ASSIGN_OR_RETURN(uint8_t * b, cache_.get_empty(off));
    std::fill(b, b + geo_.cluster_size, 0);
    cache_.mark_dirty(off);
  }
  for (uint64_t j = 0; j < k; ++j) {
    uint64_t c = first_cluster + j, rt = c >> geo_.refblock_bits;
    auto it = std::find(ranges.begin(), ranges.end(), rt);
    if (it == ranges.end()) {
      QCOW_TRY(update(c, 1));
      continue;
    }
    uint64_t off = (first_cluster + uint64_t(it - ranges.begin())) << geo_.cluster_bits;
    QCOW_ASSIGN_OR_RETURN(uint8_t * b, cache_.get(off));
    set_refcount_entry(b, geo_.refcount_order, c & (geo_.refblock_entries - 1), 1);
    cache_.mark_dirty(off);
  }
  // The blocks (and the counts of their clusters) must be durable before the table entries.
  QCOW_TRY(cache_.flush());
  QCOW_TRY(file_->barrier());
  // And an entry may only become durable once the block that counts its block's cluster is
  // reachable: a power cut may keep any subset of the unflushed entry writes, and an entry
  // for range 44 kept without the one for range 40 (whose new block counts the cluster that
  // range 44's block lives in) left a referenced cluster with refcount 0 (found by the
  // crash harness at 2,000 states: refcount-growth). So entries go in rounds: a round links
  // every block whose own cluster is counted by a linked block (or by itself), then a barrier.
  std::vector<bool> linked(k, false);
  for (uint64_t left = k; left;) {
    std::vector<uint64_t> round;
    for (uint64_t j = 0; j < k; ++j) {
      if (linked[j]) continue;
      const uint64_t counted_by = (first_cluster + j) >> geo_.refblock_bits;
      if (counted_by == ranges[j] || (counted_by < reftable_.size() && reftable_[counted_by])) round.push_back(j);
    }
    if (round.empty()) return Status::internal("new refcount blocks that count each other in a cycle");
    for (uint64_t j : round) {
      const uint64_t off = (first_cluster + j) << geo_.cluster_bits;
      QCOW_TRY(store_table_entry(*file_, Structure::kRefcountTable, reftable_offset_, ranges[j], off));
    }
    QCOW_TRY(file_->barrier());
    for (uint64_t j : round) {
      const uint64_t off = (first_cluster + j) << geo_.cluster_bits;
      reftable_[ranges[j]] = off;
      register_block(off);
      linked[j] = true;
      --left;
    }
  }
  return Status::ok();
}

Status Refcounts::grow_table(uint64_t needed) {
  const uint64_t epc = geo_.cluster_size / 8;
  uint64_t table_clusters = std::max<uint64_t>(uint64_t(reftable_clusters_) * 2, div_round_up(needed + 1, epc));
  uint64_t spare = 0, area = 0;
  std::vector<uint64_t> new_blocks;
  for (int iter = 0;; ++iter) {
    if (iter > 64) return Status::internal("refcount table growth did not converge");
    QCOW_ASSIGN_OR_RETURN(area, find_free_run(free_hint_, table_clusters + spare));
    QCOW_TRY(check_unused(area, table_clusters + spare));
    uint64_t area_end = area + table_clusters + spare;
    new_blocks.clear();
    for (uint64_t rt = area >> geo_.refblock_bits; rt <= (area_end - 1) >> geo_.refblock_bits; ++rt) {
      QCOW_ASSIGN_OR_RETURN(uint64_t b, block_offset(rt));
      if (!b) new_blocks.push_back(rt);
    }
    uint64_t max_index = std::max(needed, (area_end - 1) >> geo_.refblock_bits);
    uint64_t want_clusters = std::max(table_clusters, div_round_up(max_index + 1, epc));
    if (new_blocks.size() <= spare && want_clusters == table_clusters) break;
    spare = std::max<uint64_t>(spare, new_blocks.size());
    table_clusters = want_clusters;
  }
  if ((table_clusters << geo_.cluster_bits) > kMaxReftableBytes)
    return Status::error(ErrorCode::kNoSpace, "refcount table would exceed the 8 MiB limit");

  // Layout of the area: [new refcount blocks][new table]; spare clusters beyond stay free.
  const uint64_t used = new_blocks.size() + table_clusters;
  const uint64_t table_cluster = area + new_blocks.size();
  std::vector<uint64_t> table(table_clusters * epc, 0);
  std::copy(reftable_.begin(), reftable_.end(), table.begin());
  std::vector<std::vector<uint8_t>> blocks(new_blocks.size(), std::vector<uint8_t>(geo_.cluster_size, 0));
  for (size_t j = 0; j < new_blocks.size(); ++j) table[new_blocks[j]] = (area + j) << geo_.cluster_bits;
  for (uint64_t c = area; c < area + used; ++c) {
    uint64_t rt = c >> geo_.refblock_bits;
    auto it = std::find(new_blocks.begin(), new_blocks.end(), rt);
    if (it != new_blocks.end()) {
      set_refcount_entry(blocks[it - new_blocks.begin()].data(), geo_.refcount_order, c & (geo_.refblock_entries - 1), 1);
    } else {
      QCOW_TRY(update(c, 1));
    }
  }
  for (size_t j = 0; j < blocks.size(); ++j)
    QCOW_TRY(file_->write_metadata(Structure::kRefcountBlock, (area + j) << geo_.cluster_bits, blocks[j]));
  QCOW_TRY(store_table(*file_, Structure::kRefcountTable, table_cluster << geo_.cluster_bits, table, table.size() * 8));
  QCOW_TRY(cache_.flush());
  QCOW_TRY(file_->flush());
  if (!on_moved_) return Status::internal("refcount table moved without a header writer");
  QCOW_TRY(on_moved_(table_cluster << geo_.cluster_bits, uint32_t(table_clusters)));
  uint64_t old_offset = reftable_offset_, old_clusters = reftable_clusters_;
  if (file_->tracks(Structure::kRefcountTable))
    file_->overlaps().remove(Structure::kRefcountTable, old_offset, old_clusters << geo_.cluster_bits);
  reftable_ = std::move(table);
  reftable_offset_ = table_cluster << geo_.cluster_bits;
  reftable_clusters_ = uint32_t(table_clusters);
  register_table();
  for (size_t j = 0; j < blocks.size(); ++j) register_block((area + j) << geo_.cluster_bits);
  // The header no longer points at the old table: free it now.
  for (uint64_t c = 0; c < old_clusters; ++c) QCOW_TRY(update((old_offset >> geo_.cluster_bits) + c, -1));
  return Status::ok();
}

Result<uint64_t> Refcounts::alloc(uint64_t n) {
  // Look for n free clusters preceded by room for the refcount blocks their ranges lack
  // (`spare`), so a run may span any number of ranges without a block: the new blocks
  // go in front of it instead of at the start of each range, which would split the run.
  uint64_t spare = 0;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    uint64_t first_free = 0;
    QCOW_ASSIGN_OR_RETURN(uint64_t area, find_free_run(free_hint_, n + spare, &first_free));
    QCOW_TRY(check_unused(area, n + spare));
    const uint64_t area_end = area + n + spare;
    const uint64_t last_rt = (area_end - 1) >> geo_.refblock_bits;
    if (last_rt >= reftable_.size()) {
      QCOW_TRY(grow_table(last_rt));
      continue;
    }
    std::vector<uint64_t> missing;
    for (uint64_t rt = area >> geo_.refblock_bits; rt <= last_rt; ++rt) {
      QCOW_ASSIGN_OR_RETURN(uint64_t b, block_offset(rt));
      if (!b) missing.push_back(rt);
    }
    if (missing.size() > spare) {
      spare = missing.size();
      continue;
    }
    if (!missing.empty()) {
      QCOW_TRY(create_blocks(area, missing));
      spare = 0;
      continue;
    }
    for (uint64_t c = area; c < area + n; ++c) QCOW_TRY(update(c, 1));
    // Everything from the hint up to the first free cluster seen is in use: skip it next time.
    free_hint_ = first_free == area ? area + n : first_free;
    return area << geo_.cluster_bits;
  }
  return Status::internal("cluster allocation did not converge");
}

Result<bool> Refcounts::try_alloc_at(uint64_t host_offset, uint64_t n) {
  uint64_t c0 = host_offset >> geo_.cluster_bits;
  for (uint64_t c = c0; c < c0 + n; ++c) {
    if ((c >> geo_.refblock_bits) >= reftable_.size()) return false;
    QCOW_ASSIGN_OR_RETURN(uint64_t b, block_offset(c >> geo_.refblock_bits));
    if (!b) return false;
    QCOW_ASSIGN_OR_RETURN(uint64_t rc, get(c));
    if (rc) return false;
  }
  QCOW_TRY(check_unused(c0, n));
  for (uint64_t c = c0; c < c0 + n; ++c) QCOW_TRY(update(c, 1));
  if (free_hint_ >= c0 && free_hint_ < c0 + n) free_hint_ = c0 + n;
  return true;
}

void Refcounts::free_later(uint64_t host_offset, uint64_t n) {
  if (n) deferred_.emplace_back(host_offset, n);
}

Status Refcounts::apply_deferred() {
  auto list = std::move(deferred_);
  deferred_.clear();
  for (auto [off, n] : list)
    for (uint64_t c = off >> geo_.cluster_bits; c < (off >> geo_.cluster_bits) + n; ++c) QCOW_TRY(update(c, -1));
  return Status::ok();
}

}  // namespace qcow
