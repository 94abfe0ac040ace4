// ClusterCounts: the recomputed reference count of every host cluster, for check
// and refcount rebuilds.
//
// Paged: counts live in pages of 4096 clusters, allocated when a cluster in them is
// first referenced, 16 bits each (QEMU's check keeps 16 bits per cluster too), with
// the rare larger counts in a side map. So memory follows the clusters the metadata
// references, not the file's length (a sparse file of any length costs nothing),
// and a cap bounds it: past memory_limit bytes add() fails with kLimit.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <unordered_map>

#include "qcow/status.hpp"

namespace qcow {

class ClusterCounts {
 public:
  static constexpr uint64_t kPageBits = 12;
  static constexpr uint64_t kPageClusters = uint64_t(1) << kPageBits;
  static constexpr uint64_t kPageBytes = kPageClusters * sizeof(uint16_t);

  explicit ClusterCounts(uint64_t memory_limit) : limit_(memory_limit) {}

  // Adds one reference. kLimit when a new page would pass the memory limit.
  Status add(uint64_t cluster);
  Status set(uint64_t cluster, uint64_t value);
  uint64_t get(uint64_t cluster) const;
  // One past the highest cluster ever counted (0 when none).
  uint64_t end() const { return end_; }
  // Whether a cluster in [first, last) has a non-zero count.
  bool any_in(uint64_t first, uint64_t last) const;
  // The clusters of allocated pages, for walking only what was referenced: calls
  // fn(first_cluster) for each page in order.
  template <class Fn>
  void for_each_page(Fn fn) const {
    for (const auto& [page, counts] : pages_) fn(page << kPageBits);
  }
  uint64_t memory_bytes() const { return pages_.size() * kPageBytes + large_.size() * 32; }
  uint64_t memory_limit() const { return limit_; }

 private:
  Result<uint16_t*> page(uint64_t cluster);

  uint64_t limit_;
  uint64_t end_ = 0;
  std::map<uint64_t, std::unique_ptr<uint16_t[]>> pages_;
  std::unordered_map<uint64_t, uint64_t> large_;  // counts >= 0xffff
  // The page of the last access: references come in runs.
  uint64_t last_page_ = UINT64_MAX;
  uint16_t* last_ = nullptr;
};

}  // namespace qcow
