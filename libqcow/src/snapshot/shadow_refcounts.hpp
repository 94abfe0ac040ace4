// ShadowRefcounts: the refcount structures an image will have after a change that
// one header write commits (snapshot create, delete and apply; snapshot/commit.hpp).
//
// Copy-on-write over the current structures, which stay untouched, and in charge,
// until the commit: the first change to a refcount block copies it into a fresh
// cluster, and finish() writes the copies and a new refcount table. Fresh clusters
// are free in both the current and the new structures (a cluster the change frees
// is still in use until the commit), so nothing written before the commit is
// reachable from the current image: a crash leaves it as it was. In the new
// structures every replaced block and the old table count 0 and the new ones count
// themselves, so the switch frees the old structures without another write.
//
// Refcounts are the stored ones plus the changes made through update(), so leaks the
// image had stay leaks. Counts are checked like Refcounts::update(): overflow is
// kLimit, dropping below zero kCorrupt.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "cache/table_cache.hpp"
#include "map/geometry.hpp"
#include "meta/image_file.hpp"
#include "qcow/status.hpp"

namespace qcow {

class ShadowRefcounts {
 public:
  // `reftable`: the current table's entries (at reftable_offset, reftable_clusters long).
  ShadowRefcounts(ImageFile& file, const Geometry& g, std::vector<uint64_t> reftable, uint64_t reftable_offset,
                  uint32_t reftable_clusters);

  Result<uint64_t> get(uint64_t cluster);
  Status update(uint64_t cluster, int64_t delta);
  // n contiguous fresh clusters, each with refcount 1; returns the byte offset of the first.
  // `what` is registered for the overlap checks, so nothing else can be written there.
  Result<uint64_t> alloc(uint64_t n, Structure what);
  // Writes the copied blocks and the new table (the current table counted as freed);
  // returns the new table's offset and clusters. Nothing may change afterwards.
  Result<std::pair<uint64_t, uint32_t>> finish();
  // Unregisters every range alloc() and the block copies registered (a failed change).
  void release_claims();

 private:
  // The new offset of the copy of block `rt`, made on first use (0: no block, and `copy`
  // is false).
  Result<uint64_t> block(uint64_t rt, bool copy);
  Result<uint64_t> next_fresh_cluster();
  Result<bool> fresh(uint64_t cluster);  // free now and after the change
  Result<uint64_t> current_refcount(uint64_t cluster);
  void claim(Structure what, uint64_t offset, uint64_t length);

  ImageFile& file_;
  Geometry g_;
  std::vector<uint64_t> current_;    // the current table
  std::vector<uint64_t> table_;      // the new table: current entries, copies swapped in
  std::vector<bool> copied_;         // per table index: table_ holds a copy
  uint64_t old_table_offset_;
  uint32_t old_table_clusters_;
  uint64_t next_ = 1;                // allocator: next cluster to try (0 is the header)
  TableCache blocks_;                // the copies, at their new offsets
  bool finished_ = false;
  struct Claim {
    Structure what;
    uint64_t offset, length;
  };
  std::vector<Claim> claims_;
};

}  // namespace qcow
