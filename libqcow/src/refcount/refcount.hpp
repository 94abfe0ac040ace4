// Refcounts: the refcount table, refcount blocks (through a TableCache) and the cluster allocator.
//
// Widths 1..64 bits (refcount_order 0..6). Sub-byte entries are packed with
// entry 0 in the least significant bits of byte 0, as the spec says.
//
// Allocation never needs an outside resource: missing refcount blocks for the
// ranges a run touches are created just before the run (so a run can be longer
// than one block's range); a block placed in its own range describes itself,
// e.g. at the range's first cluster when the run starts a fresh range; a refcount
// table too small for a new block is moved to a fresh area that carries its
// own new blocks. Frees are deferred (free_later) and applied only after the
// metadata that stopped referencing the clusters is durable, so a crash can
// leak clusters but never leave a cluster referenced with a refcount of 0.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "cache/table_cache.hpp"
#include "map/geometry.hpp"
#include "meta/image_file.hpp"
#include "qcow/status.hpp"

namespace qcow {

uint64_t get_refcount_entry(const uint8_t* block, uint32_t order, uint64_t index);
void set_refcount_entry(uint8_t* block, uint32_t order, uint64_t index, uint64_t value);

class Refcounts {
 public:
  // Writes the new table location into the header and makes it durable.
  using ReftableMovedFn = std::function<Status(uint64_t offset, uint32_t clusters)>;

  Refcounts(ImageFile* file, const Geometry& geo, size_t cache_slices);

  // Reads the refcount table and registers it and its blocks as metadata
  // (replacing what an earlier load registered).
  Status load(uint64_t reftable_offset, uint32_t reftable_clusters);
  void set_reftable_moved(ReftableMovedFn fn) { on_moved_ = std::move(fn); }

  Result<uint64_t> get(uint64_t cluster_index);
  // Adds delta to a cluster's refcount; the refcount block must exist when delta > 0
  // (alloc guarantees it). Overflow and underflow are corruption.
  Status update(uint64_t cluster_index, int64_t delta);
  // Allocates n contiguous clusters with refcount 1 and returns the host offset of the first.
  Result<uint64_t> alloc(uint64_t n);
  // Allocates n contiguous clusters starting at exactly host_offset if they are all free.
  Result<bool> try_alloc_at(uint64_t host_offset, uint64_t n);
  // Schedules a refcount decrement of n clusters from host_offset (see apply_deferred).
  void free_later(uint64_t host_offset, uint64_t n);
  Status apply_deferred();
  bool has_deferred() const { return !deferred_.empty(); }
  Status flush() { return cache_.flush(); }
  TableCache& cache() { return cache_; }
  uint64_t reftable_offset() const { return reftable_offset_; }
  uint32_t reftable_clusters() const { return reftable_clusters_; }
  const std::vector<uint64_t>& reftable() const { return reftable_; }
  // The refcount block of reftable index rt_index (0: none), validated (aligned, below
  // the largest host offset).
  Result<uint64_t> block_offset(uint64_t rt_index);
  // One past the highest cluster that has a refcount block range (bounds scans).
  uint64_t covered_clusters() const { return uint64_t(reftable_.size()) << geo_.refblock_bits; }

 private:
  // First run of n free clusters from start; *first_free gets the first free cluster seen.
  Result<uint64_t> find_free_run(uint64_t start, uint64_t n, uint64_t* first_free = nullptr);
  // Writes new refcount blocks for `ranges` at consecutive clusters from first_cluster.
  Status create_blocks(uint64_t first_cluster, const std::vector<uint64_t>& ranges);
  Status grow_table(uint64_t needed_index);
  // Refuses a run of free clusters that metadata occupies (see the class comment).
  Status check_unused(uint64_t first_cluster, uint64_t n);
  void register_table();
  void register_block(uint64_t offset);

  ImageFile* file_;
  Geometry geo_;
  TableCache cache_;
  std::vector<uint64_t> reftable_;
  uint64_t reftable_offset_ = 0;
  uint32_t reftable_clusters_ = 0;
  uint64_t free_hint_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> deferred_;
  ReftableMovedFn on_moved_;
};

}  // namespace qcow
