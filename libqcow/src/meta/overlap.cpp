#include "meta/overlap.hpp"

#include "codec/bytes.hpp"

namespace qcow {

const char* structure_name(Structure s) {
  switch (s) {
    case Structure::kMainHeader: return "qcow2_header";
    case Structure::kActiveL1: return "active L1 table";
    case Structure::kActiveL2: return "active L2 table";
    case Structure::kRefcountTable: return "refcount table";
    case Structure::kRefcountBlock: return "refcount block";
    case Structure::kSnapshotTable: return "snapshot table";
    case Structure::kInactiveL1: return "inactive L1 table";
    case Structure::kInactiveL2: return "inactive L2 table";
    case Structure::kBitmapDirectory: return "bitmap directory";
    case Structure::kEncryptionHeader: return "encryption header";
  }
  return "metadata";
}

StructureMask overlap_mask(OverlapCheck level) {
  constexpr StructureMask kConstant = structure_bit(Structure::kMainHeader) | structure_bit(Structure::kActiveL1) |
                                      structure_bit(Structure::kRefcountTable) |
                                      structure_bit(Structure::kSnapshotTable) |
                                      structure_bit(Structure::kBitmapDirectory) |
                                      structure_bit(Structure::kEncryptionHeader);
  constexpr StructureMask kCached = kConstant | structure_bit(Structure::kActiveL2) |
                                    structure_bit(Structure::kRefcountBlock) | structure_bit(Structure::kInactiveL1);
  switch (level) {
    case OverlapCheck::kNone: return 0;
    case OverlapCheck::kConstant: return kConstant;
    case OverlapCheck::kCached: return kCached;
    case OverlapCheck::kAll: return kAllStructures;
  }
  return kCached;
}

bool OverlapMap::single_cluster(uint64_t offset, uint64_t length) const {
  return offset / cluster_size_ == (offset + length - 1) / cluster_size_;
}

void OverlapMap::add(Structure s, uint64_t offset, uint64_t length) {
  if (!length) return;
  length = std::min(length, UINT64_MAX - offset);  // ranges from a damaged header may wrap
  if (single_cluster(offset, length)) {
    Cluster& c = clusters_[offset / cluster_size_];
    if (c.count[size_t(s)] < UINT16_MAX) ++c.count[size_t(s)];  // saturates: hostile duplicates stay registered
    c.mask |= structure_bit(s);
    return;
  }
  ranges_.emplace(offset, Range{length, s});
  max_length_ = std::max(max_length_, length);
}

void OverlapMap::remove(Structure s, uint64_t offset, uint64_t length) {
  if (!length) return;
  length = std::min(length, UINT64_MAX - offset);
  if (single_cluster(offset, length)) {
    auto it = clusters_.find(offset / cluster_size_);
    if (it == clusters_.end() || it->second.count[size_t(s)] == 0) return;
    if (it->second.count[size_t(s)] != UINT16_MAX && --it->second.count[size_t(s)] == 0) {
      it->second.mask &= StructureMask(~structure_bit(s));
      if (!it->second.mask) clusters_.erase(it);
    }
    return;
  }
  auto [first, last] = ranges_.equal_range(offset);
  for (auto it = first; it != last; ++it) {
    if (it->second.length == length && it->second.structure == s) {
      ranges_.erase(it);
      return;
    }
  }
}

void OverlapMap::clear(Structure s) {
  for (auto it = clusters_.begin(); it != clusters_.end();) {
    it->second.count[size_t(s)] = 0;
    it->second.mask &= StructureMask(~structure_bit(s));
    it = it->second.mask ? std::next(it) : clusters_.erase(it);
  }
  for (auto it = ranges_.begin(); it != ranges_.end();) it = it->second.structure == s ? ranges_.erase(it) : std::next(it);
}

size_t OverlapMap::count(Structure s) const {
  size_t n = 0;
  for (const auto& [c, e] : clusters_) n += e.count[size_t(s)];
  for (const auto& [o, r] : ranges_) n += r.structure == s;
  return n;
}

std::optional<OverlapHit> OverlapMap::find(uint64_t offset, uint64_t length, StructureMask mask) const {
  if (!length || !mask) return std::nullopt;
  // Whole clusters, as QEMU checks them (saturating at the top of the address space).
  const uint64_t start = align_down(offset, cluster_size_);
  const uint64_t end =
      offset + length < offset || offset + length > UINT64_MAX - cluster_size_ ? UINT64_MAX : align_up(offset + length, cluster_size_);
  // Structures within one cluster: one ordered lookup covers them all.
  for (auto it = clusters_.lower_bound(start / cluster_size_); it != clusters_.end() && it->first * cluster_size_ < end; ++it) {
    const StructureMask hit = it->second.mask & mask;
    if (!hit) continue;
    for (int i = 0; i < kStructureCount; ++i)
      if (hit & (1u << i)) return OverlapHit{Structure(i), it->first * cluster_size_, cluster_size_};
  }
  // Larger structures (tables): few, found by start.
  if (ranges_.empty()) return std::nullopt;
  const uint64_t from = start >= max_length_ ? start - max_length_ + 1 : 0;
  for (auto it = ranges_.lower_bound(from); it != ranges_.end() && it->first < end; ++it) {
    if ((mask & structure_bit(it->second.structure)) && it->first + it->second.length > start)
      return OverlapHit{it->second.structure, it->first, it->second.length};
  }
  return std::nullopt;
}

}  // namespace qcow
