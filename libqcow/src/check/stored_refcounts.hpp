// The refcounts an image stores, read straight from the refcount table and
// blocks into memory (check compares them with the recomputed ones and patches
// them). Blocks past the end of the file read as zeros, as in QEMU.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "map/geometry.hpp"
#include "meta/image_file.hpp"
#include "qcow/status.hpp"

namespace qcow {

class StoredRefcounts {
 public:
  StoredRefcounts(ImageFile& file, const Geometry& geo) : file_(file), geo_(geo) {}

  // Reads the refcount table (offset and size from the header).
  Status load(uint64_t reftable_offset, uint32_t reftable_clusters);

  // The stored refcount of a cluster: 0 when no refcount block covers it; an error
  // when the block's table entry is unusable (QEMU: "Can't get refcount").
  Result<uint64_t> get(uint64_t cluster);
  // Changes a stored refcount in memory (the block must exist inside the file).
  Status set(uint64_t cluster, uint64_t value);
  // Writes every changed refcount block back (whole blocks; no flush).
  Status write_back();
  // Clusters of the file (the domain QEMU's check compares), and of one block's range.
  uint64_t file_clusters() const { return (file_size_ + geo_.cluster_size - 1) / geo_.cluster_size; }
  uint64_t clusters_per_block() const { return geo_.refblock_entries; }
  // Whether the refcount table has an entry (usable or not) for block range rt.
  bool has_block(uint64_t rt) const { return rt < reftable_.size() && (reftable_[rt] & ~uint64_t(0x1ff)); }

 private:
  // Bytes of blocks kept in memory at most (at least 4 blocks); dirty ones are written
  // back before the cache is dropped. check reads the blocks mostly in order, so a small
  // cache costs few re-reads; 16 MiB here (256 blocks) made check's peak memory half as large again
  // as qemu-img's on an image with 10 Mi clusters (docs/benchmarks.md, large images).
  static constexpr uint64_t kMaxCachedBytes = 1 << 20;
  size_t max_cached_blocks() const { return std::max<size_t>(4, kMaxCachedBytes >> geo_.cluster_bits); }
  Result<std::vector<uint8_t>*> block(uint64_t rt_index);

  ImageFile& file_;
  Geometry geo_;
  uint64_t file_size_ = 0;
  std::vector<uint64_t> reftable_;
  std::map<uint64_t, std::vector<uint8_t>> blocks_;  // by refcount table index
  std::map<uint64_t, bool> dirty_;
};

}  // namespace qcow
