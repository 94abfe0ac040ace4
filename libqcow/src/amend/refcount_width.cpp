// amend -o refcount_bits, from the stored refcounts (as QEMU's
// qcow2_change_refcount_order does) rather than by recounting every reference the
// way check does: memory is a few blocks and the list of used ranges, whatever the
// size of the image, and leaks stay leaks, as under qemu-img.
#include "amend/refcount_width.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "refcount/refcount.hpp"

namespace qcow {
namespace {

// Calls fn(index, value) for every nonzero entry in [first, last) of a refcount
// block, skipping all-zero 64-bit words (most of a sparse image's blocks).
template <class Fn>
Status for_each_nonzero(const std::vector<uint8_t>& block, uint32_t order, uint64_t first, uint64_t last, Fn fn) {
  const uint64_t per_word = 64 >> order;
  for (uint64_t w = first / per_word; w * per_word < last; ++w) {
    uint64_t word;
    std::memcpy(&word, block.data() + 8 * w, 8);
    if (!word) continue;
    for (uint64_t i = std::max(first, w * per_word); i < std::min(last, (w + 1) * per_word); ++i)
      if (uint64_t v = get_refcount_entry(block.data(), order, i)) QCOW_TRY(fn(i, v));
  }
  return Status::ok();
}

// The old structures, read one block at a time, with the refcount their own clusters
// hold taken away (they are free once the new structures are in charge).
class OldRefcounts {
 public:
  explicit OldRefcounts(Qcow2Driver& d) : d_(d), geo_(d.geometry()), block_(geo_.cluster_size) {}

  // Collects the old structures' own clusters; a block listed twice is corruption
  // (it would also let a tiny file make us scan the same block a million times).
  Status init() {
    Refcounts& r = d_.refcounts();
    for (uint64_t c = 0; c < r.reftable_clusters(); ++c) own_.push_back((r.reftable_offset() >> geo_.cluster_bits) + c);
    for (uint64_t k = 0; k < blocks(); ++k) {
      QCOW_ASSIGN_OR_RETURN(uint64_t off, r.block_offset(k));
      if (off) own_.push_back(off >> geo_.cluster_bits);
    }
    std::sort(own_.begin(), own_.end());
    auto dup = std::adjacent_find(own_.begin(), own_.end());
    if (dup != own_.end())
      return Status::corrupt(fmt::format("{}: cluster {:#x} is used twice by the refcount structures", d_.path(),
                                         *dup << geo_.cluster_bits));
    return Status::ok();
  }

  uint64_t blocks() const { return d_.refcounts().reftable().size(); }
  uint64_t entries_per_block() const { return geo_.refblock_entries; }

  // fn(cluster, refcount) for every cluster of [first, last) with a refcount above 0.
  template <class Fn>
  Status for_each(uint64_t first, uint64_t last, Fn fn) {
    const uint64_t rbe = geo_.refblock_entries;
    for (uint64_t k = first / rbe; k < blocks() && k * rbe < last; ++k) {
      QCOW_ASSIGN_OR_RETURN(bool present, load(k));
      if (!present) continue;
      const uint64_t lo = std::max(first, k * rbe) - k * rbe, hi = std::min(last, (k + 1) * rbe) - k * rbe;
      QCOW_TRY(for_each_nonzero(block_, geo_.refcount_order, lo, hi, [&](uint64_t i, uint64_t v) -> Status {
        const uint64_t c = k * rbe + i;
        if (std::binary_search(own_.begin(), own_.end(), c)) --v;
        return v ? fn(c, v) : Status::ok();
      }));
    }
    return Status::ok();
  }

 private:
  Result<bool> load(uint64_t k) {
    QCOW_ASSIGN_OR_RETURN(uint64_t off, d_.refcounts().block_offset(k));
    if (!off) return false;
    if (k == loaded_) return true;
    QCOW_ASSIGN_OR_RETURN(size_t got, d_.image_file().read_at(off, block_));
    if (got < block_.size())
      return Status::corrupt(fmt::format("{}: refcount block at {:#x} is truncated", d_.path(), off));
    loaded_ = k;
    return true;
  }

  Qcow2Driver& d_;
  const Geometry geo_;
  std::vector<uint8_t> block_;
  uint64_t loaded_ = UINT64_MAX;
  std::vector<uint64_t> own_;  // clusters of the old table and blocks
};

}  // namespace

Status change_refcount_width(Qcow2Driver& d, uint32_t new_order) {
  Header nh = d.header();
  nh.refcount_order = new_order;
  const Geometry g = Geometry::from(nh);
  const uint64_t cs = g.cluster_size, rbe = g.refblock_entries;
  if (d.refcounts().cache().has_dirty() || d.refcounts().has_deferred())
    return Status::internal("refcount width change with refcount updates pending");
  OldRefcounts old(d);
  QCOW_TRY(old.init());
  const uint64_t old_end = old.blocks() * old.entries_per_block();
  const uint64_t max_clusters = kMaxHostOffset >> g.cluster_bits;
  const auto too_large = [] { return Status::limit("the new refcount table would exceed 8 MiB"); };

  // Pass 1: which new blocks have something to count, and does every value fit.
  std::vector<uint64_t> used;  // new reftable indices, ascending
  uint64_t end = 0;            // one past the last cluster with a refcount
  QCOW_TRY(old.for_each(0, old_end, [&](uint64_t c, uint64_t v) -> Status {
    if (v > g.max_refcount())
      return Status::limit(fmt::format("Cannot decrease refcount entry width to {} bits: Cluster at offset {:#x} has a "
                                       "refcount of {}", g.refcount_bits, c * cs, v));
    if (c >= max_clusters)
      return Status::corrupt(fmt::format("{}: a refcount for cluster {:#x}, past the largest host offset", d.path(), c));
    if ((c / rbe + 1) * 8 > kMaxReftableBytes) return too_large();
    if (used.empty() || used.back() != c / rbe) used.push_back(c / rbe);
    end = c + 1;
    return Status::ok();
  }));

  // The new blocks (B) and table (T) go past everything, and count themselves.
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, d.image_file().size());
  const uint64_t E = std::max(end, div_round_up(file_size, cs));
  uint64_t B = 0, T = 1;
  std::vector<uint64_t> needed;
  for (int iter = 0;; ++iter) {
    if (iter > 64) return Status::internal("refcount width change did not converge");
    const uint64_t N = E + B + T, nrt = div_round_up(N, rbe);
    needed = used;
    for (uint64_t rt = E / rbe; rt < nrt; ++rt)
      if (needed.empty() || needed.back() < rt) needed.push_back(rt);
    const uint64_t t_need = div_round_up(nrt * 8, cs);
    if (needed.size() <= B && t_need <= T) break;
    B = std::max<uint64_t>(B, needed.size());
    T = std::max(T, t_need);
  }
  if (T * cs > kMaxReftableBytes) return too_large();
  if (E + B + T > max_clusters) return Status::limit(fmt::format("{}: the image would grow past the largest host offset", d.path()));
  const uint64_t own_first = E, own_end = E + B + T, table_cluster = E + B;

  // Pass 2: each new block from the old values, written to its place.
  ImageFile& file = d.image_file();
  std::vector<uint8_t> block(cs);
  std::vector<uint64_t> table(T * cs / 8, 0);
  for (uint64_t j = 0; j < needed.size(); ++j) {
    const uint64_t rt = needed[j], first = rt * rbe, last = first + rbe;
    std::fill(block.begin(), block.end(), 0);
    QCOW_TRY(old.for_each(first, std::min(last, old_end), [&](uint64_t c, uint64_t v) {
      set_refcount_entry(block.data(), new_order, c - first, v);
      return Status::ok();
    }));
    for (uint64_t c = std::max(first, own_first); c < std::min(last, own_end); ++c)
      set_refcount_entry(block.data(), new_order, c - first, 1);
    QCOW_TRY(file.write_metadata(Structure::kRefcountBlock, (E + j) * cs, block));
    table[rt] = (E + j) * cs;
  }
  QCOW_TRY(store_table(file, Structure::kRefcountTable, table_cluster * cs, table, T * cs));
  return d.install_refcounts(table_cluster * cs, uint32_t(T), new_order);
}

}  // namespace qcow
