// Where the metadata of an image lies, and whether a write would land on it
// (QEMU's overlap checks, qcow2_check_metadata_overlap in block/qcow2-refcount.c).
//
// Every structure is registered as byte ranges by the code that owns it (the
// driver registers its L1 and L2 tables, Refcounts its table and blocks). A
// query rounds the write out to whole clusters, as QEMU does, and names the
// first structure of the mask it overlaps.
//
// Unlike QEMU, which scans the L1 and refcount tables on every write, the
// structures are kept sorted. Those within one cluster (L2 tables, refcount
// blocks, small L1 tables) are bits, one bitset per structure in words of 64
// clusters keyed by word; the larger ones (tables of several clusters) are a
// map by start. A check is a few ordered lookups, whatever the size of the
// tables. The bitsets replaced one tree node per cluster: a 4 TiB image with
// 4 KiB clusters and 64 Ki L2 tables spent 4.2 MB on them (80 bytes a table),
// where its tables, close together in the host file, now fill a few thousand
// words (48 bytes per node, at most one node per registration when scattered).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>

#include "qcow/image.hpp"

namespace qcow {

// The metadata structures of a qcow2 image, in QEMU's order (QCOW2_OL_*_BITNR),
// plus the encryption header, which QEMU leaves unprotected (qimg checks it at
// every level but none).
enum class Structure : uint8_t {
  kMainHeader,
  kActiveL1,
  kActiveL2,
  kRefcountTable,
  kRefcountBlock,
  kSnapshotTable,
  kInactiveL1,
  kInactiveL2,
  kBitmapDirectory,
  kEncryptionHeader,
};
inline constexpr int kStructureCount = 10;

using StructureMask = uint16_t;
constexpr StructureMask structure_bit(Structure s) { return StructureMask(1u << unsigned(s)); }
inline constexpr StructureMask kAllStructures = (1u << kStructureCount) - 1;

// QEMU's names ("active L1 table", "refcount block", ...), as its messages print them.
const char* structure_name(Structure s);

// The structures each overlap-check level covers (QEMU's QCOW2_OL_CONSTANT,
// QCOW2_OL_CACHED, QCOW2_OL_ALL).
StructureMask overlap_mask(OverlapCheck level);

struct OverlapHit {
  Structure structure;
  uint64_t offset;  // the structure's range
  uint64_t length;
};

class OverlapMap {
 public:
  explicit OverlapMap(uint64_t cluster_size) : cluster_size_(cluster_size) {}
  void set_cluster_size(uint64_t cluster_size) { cluster_size_ = cluster_size; }

  // Registers one range of a structure (the same range may be registered twice,
  // e.g. an L2 table referenced by two snapshots; each add needs its remove).
  void add(Structure s, uint64_t offset, uint64_t length);
  // Unregisters one earlier add() of exactly this range; no-op if there is none.
  void remove(Structure s, uint64_t offset, uint64_t length);
  void clear(Structure s);
  // The first registered structure in `mask` that [offset, offset+length),
  // rounded out to clusters, overlaps.
  std::optional<OverlapHit> find(uint64_t offset, uint64_t length, StructureMask mask) const;
  size_t count(Structure s) const;  // registrations (for tests)

 private:
  // Single-cluster registrations: bit (cluster % 64) of word cluster / 64. A cluster
  // registered more than once keeps the extra count in repeats_, saturating (hostile
  // duplicates stay registered).
  using Words = std::map<uint64_t, uint64_t>;
  static constexpr uint16_t kSaturated = UINT16_MAX;
  static uint64_t repeat_key(Structure s, uint64_t cluster) { return cluster << 4 | uint64_t(s); }
  struct Range {
    uint64_t length;
    Structure structure;
  };
  bool single_cluster(uint64_t offset, uint64_t length) const;
  // The first registered cluster of `s` in [first, end) (cluster indices), if any.
  std::optional<uint64_t> first_cluster(Structure s, uint64_t first, uint64_t end) const;

  // Whether any structure has a bit in `words` for a cluster in [first, end).
  static std::optional<uint64_t> first_set(const Words& words, uint64_t first, uint64_t end);

  uint64_t cluster_size_;
  std::array<Words, kStructureCount> bits_;
  // The union of bits_: a write that overlaps nothing (nearly every write) costs one
  // lookup here instead of one per structure.
  Words any_;
  std::map<uint64_t, uint16_t> repeats_;  // by repeat_key
  std::multimap<uint64_t, Range> ranges_;  // by offset
  uint64_t max_length_ = 0;                // bounds the backward search in ranges_
};

}  // namespace qcow
