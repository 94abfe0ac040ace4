#include "check/cluster_counts.hpp"

#include <fmt/format.h>

namespace qcow {

Result<uint16_t*> ClusterCounts::page(uint64_t cluster) {
  const uint64_t p = cluster >> kPageBits;
  if (p == last_page_) return last_;
  auto it = pages_.find(p);
  if (it == pages_.end()) {
    if (memory_bytes() + kPageBytes > limit_)
      return Status::limit(fmt::format("counting references needs more than the {} MiB memory limit (the metadata "
                                       "references clusters all over a large file)", limit_ >> 20));
    it = pages_.emplace(p, std::make_unique<uint16_t[]>(kPageClusters)).first;  // zero-filled
  }
  last_page_ = p;
  last_ = it->second.get();
  return last_;
}

Status ClusterCounts::add(uint64_t cluster) {
  return set(cluster, get(cluster) + 1);
}

Status ClusterCounts::set(uint64_t cluster, uint64_t value) {
  QCOW_ASSIGN_OR_RETURN(uint16_t * p, page(cluster));
  uint16_t& slot = p[cluster & (kPageClusters - 1)];
  if (value >= 0xffff) {
    slot = 0xffff;
    large_[cluster] = value;
  } else {
    if (slot == 0xffff) large_.erase(cluster);
    slot = uint16_t(value);
  }
  if (value && cluster >= end_) end_ = cluster + 1;
  return Status::ok();
}

uint64_t ClusterCounts::get(uint64_t cluster) const {
  const uint64_t p = cluster >> kPageBits;
  const uint16_t* counts = nullptr;
  if (p == last_page_) {
    counts = last_;
  } else {
    auto it = pages_.find(p);
    if (it == pages_.end()) return 0;
    counts = it->second.get();
  }
  const uint16_t v = counts[cluster & (kPageClusters - 1)];
  return v == 0xffff ? large_.at(cluster) : v;
}

bool ClusterCounts::any_in(uint64_t first, uint64_t last) const {
  for (auto it = pages_.lower_bound(first >> kPageBits); it != pages_.end() && (it->first << kPageBits) < last; ++it) {
    const uint64_t base = it->first << kPageBits;
    for (uint64_t i = 0; i < kPageClusters; ++i)
      if (base + i >= first && base + i < last && it->second[i]) return true;
  }
  return false;
}

}  // namespace qcow
