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

void OverlapMap::add(Structure s, uint64_t offset, uint64_t length) {
  if (!length) return;
  length = std::min(length, UINT64_MAX - offset);  // ranges from a damaged header may wrap
  Ranges& r = ranges_[size_t(s)];
  r.by_start.emplace(offset, length);
  r.max_length = std::max(r.max_length, length);
}

void OverlapMap::remove(Structure s, uint64_t offset, uint64_t length) {
  length = std::min(length, UINT64_MAX - offset);
  Ranges& r = ranges_[size_t(s)];
  auto [first, last] = r.by_start.equal_range(offset);
  for (auto it = first; it != last; ++it) {
    if (it->second == length) {
      r.by_start.erase(it);
      return;
    }
  }
}

void OverlapMap::clear(Structure s) {
  Ranges& r = ranges_[size_t(s)];
  r.by_start.clear();
  r.max_length = 0;
}

std::optional<OverlapHit> OverlapMap::find(uint64_t offset, uint64_t length, StructureMask mask) const {
  if (!length || !mask) return std::nullopt;
  // Whole clusters, as QEMU checks them (saturating at the top of the address space).
  const uint64_t start = align_down(offset, cluster_size_);
  const uint64_t end =
      offset + length < offset || offset + length > UINT64_MAX - cluster_size_ ? UINT64_MAX : align_up(offset + length, cluster_size_);
  for (int i = 0; i < kStructureCount; ++i) {
    if (!(mask & (1u << i))) continue;
    const Ranges& r = ranges_[size_t(i)];
    if (r.by_start.empty()) continue;
    // A range that overlaps [start, end) begins after start - max_length.
    const uint64_t from = start >= r.max_length ? start - r.max_length + 1 : 0;
    for (auto it = r.by_start.lower_bound(from); it != r.by_start.end() && it->first < end; ++it) {
      if (it->first + it->second > start) return OverlapHit{Structure(i), it->first, it->second};
    }
  }
  return std::nullopt;
}

}  // namespace qcow
