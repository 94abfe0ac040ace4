#include "meta/overlap.hpp"

#include <bit>

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
    const uint64_t cluster = offset / cluster_size_, bit = uint64_t(1) << (cluster % 64);
    uint64_t& word = bits_[size_t(s)][cluster / 64];
    if (!(word & bit)) {
      word |= bit;
      any_[cluster / 64] |= bit;
    } else if (uint16_t& extra = repeats_[repeat_key(s, cluster)]; extra != kSaturated) {
      ++extra;
    }
    return;
  }
  ranges_.emplace(offset, Range{length, s});
  max_length_ = std::max(max_length_, length);
}

void OverlapMap::remove(Structure s, uint64_t offset, uint64_t length) {
  if (!length) return;
  length = std::min(length, UINT64_MAX - offset);
  if (single_cluster(offset, length)) {
    const uint64_t cluster = offset / cluster_size_, bit = uint64_t(1) << (cluster % 64);
    if (auto extra = repeats_.find(repeat_key(s, cluster)); extra != repeats_.end()) {
      if (extra->second != kSaturated && --extra->second == 0) repeats_.erase(extra);
      return;
    }
    Words& words = bits_[size_t(s)];
    auto word = words.find(cluster / 64);
    if (word == words.end()) return;
    word->second &= ~bit;
    if (!word->second) words.erase(word);
    bool still = false;  // another structure in the same cluster (a hostile image's)
    for (const Words& other : bits_) {
      auto w = other.find(cluster / 64);
      still |= w != other.end() && (w->second & bit);
    }
    if (!still) {
      auto any = any_.find(cluster / 64);
      if (any != any_.end() && !(any->second &= ~bit)) any_.erase(any);
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
  bits_[size_t(s)].clear();
  any_.clear();
  for (const Words& words : bits_)
    for (const auto& [w, bits] : words) any_[w] |= bits;
  for (auto it = repeats_.begin(); it != repeats_.end();) it = (it->first & 15) == uint64_t(s) ? repeats_.erase(it) : std::next(it);
  for (auto it = ranges_.begin(); it != ranges_.end();) it = it->second.structure == s ? ranges_.erase(it) : std::next(it);
}

size_t OverlapMap::count(Structure s) const {
  size_t n = 0;
  for (const auto& [w, bits] : bits_[size_t(s)]) n += size_t(std::popcount(bits));
  for (const auto& [key, extra] : repeats_) n += (key & 15) == uint64_t(s) ? extra : 0;
  for (const auto& [o, r] : ranges_) n += r.structure == s;
  return n;
}

std::optional<uint64_t> OverlapMap::first_cluster(Structure s, uint64_t first, uint64_t end) const {
  return first_set(bits_[size_t(s)], first, end);
}

std::optional<uint64_t> OverlapMap::first_set(const Words& words, uint64_t first, uint64_t end) {
  for (auto it = words.lower_bound(first / 64); it != words.end() && it->first * 64 < end; ++it) {
    uint64_t bits = it->second;
    if (it->first == first / 64) bits &= ~uint64_t(0) << (first % 64);  // clusters before `first`
    if (!bits) continue;
    const uint64_t cluster = it->first * 64 + uint64_t(std::countr_zero(bits));
    return cluster < end ? std::optional(cluster) : std::nullopt;
  }
  return std::nullopt;
}

std::optional<OverlapHit> OverlapMap::find(uint64_t offset, uint64_t length, StructureMask mask) const {
  if (!length || !mask) return std::nullopt;
  // Whole clusters, as QEMU checks them (saturating at the top of the address space).
  const uint64_t start = align_down(offset, cluster_size_);
  const uint64_t end =
      offset + length < offset || offset + length > UINT64_MAX - cluster_size_ ? UINT64_MAX : align_up(offset + length, cluster_size_);
  // Structures within one cluster: the lowest cluster hit, and in it the first structure.
  const uint64_t end_cluster = end / cluster_size_ + (end % cluster_size_ != 0);
  std::optional<OverlapHit> lowest;
  const bool any = first_set(any_, start / cluster_size_, end_cluster).has_value();
  for (int i = 0; any && i < kStructureCount; ++i) {
    if (!(mask & (1u << i))) continue;
    const auto cluster = first_cluster(Structure(i), start / cluster_size_, end_cluster);
    if (cluster && (!lowest || *cluster * cluster_size_ < lowest->offset))
      lowest = OverlapHit{Structure(i), *cluster * cluster_size_, cluster_size_};
  }
  if (lowest) return lowest;
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
