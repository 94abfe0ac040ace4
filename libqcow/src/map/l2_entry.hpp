// L2 entries: one type for standard and extended entries, and their classification.
//
// Classification follows QEMU's two levels. Per subcluster (one per cluster
// without extended L2) an entry is one of:
//
//   type               host offset  alloc bit  zero bit  reads
//   kUnallocatedPlain  0            0          0         backing file (or zeros)
//   kUnallocatedAlloc  set          0          0         backing file (host space reserved)
//   kZeroPlain         0            0          1         zeros
//   kZeroAlloc         set          0          1         zeros (host space reserved)
//   kNormal            set          1          0         host cluster
//   kCompressed        -            -          -         decompressed cluster
//   kInvalid           alloc and zero both set, or alloc bits without host offset
//
// Disk bytes never reach an assert: impossible combinations classify as kInvalid.
#pragma once

#include <cstdint>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "map/geometry.hpp"

namespace qcow {

enum class SubclusterType { kUnallocatedPlain, kUnallocatedAlloc, kZeroPlain, kZeroAlloc, kNormal, kCompressed, kInvalid };

struct L2Entry {
  uint64_t word = 0;
  uint64_t bitmap = 0;  // extended L2 only

  bool compressed() const { return word & kOflagCompressed; }
  bool copied() const { return word & kOflagCopied; }
  uint64_t host_offset() const { return compressed() ? 0 : (word & kL2eOffsetMask); }
  bool operator==(const L2Entry&) const = default;
};

// The one encoding of L2 entries in a table's bytes: 8 bytes (standard) or 16
// (extended: descriptor, then the subcluster bitmap), big-endian.
inline L2Entry load_l2_entry(const uint8_t* table, const Geometry& g, uint64_t index) {
  const uint8_t* p = table + index * g.l2_entry_size;
  L2Entry e;
  e.word = load_be64(p);
  if (g.extended_l2) e.bitmap = load_be64(p + 8);
  return e;
}
inline void store_l2_entry(uint8_t* table, const Geometry& g, uint64_t index, L2Entry e) {
  uint8_t* p = table + index * g.l2_entry_size;
  store_be64(p, e.word);
  if (g.extended_l2) store_be64(p + 8, e.bitmap);
}

struct CompressedExtent {
  uint64_t offset;  // byte offset of the compressed data in the host file
  uint64_t length;  // bytes to read (whole 512-byte sectors from offset's sector)
};

// The offset keeps every bit of its field, as QEMU reads it: with small clusters the
// field reaches past bit 55, where the spec requires zeros, and such an entry then
// points beyond any file (check reports it, repair clears it, reads fail).
inline CompressedExtent compressed_extent(const Geometry& g, L2Entry e) {
  uint64_t off = e.word & g.coffset_mask();
  uint64_t nb_sectors = (e.word >> g.csize_shift()) & g.csize_mask();
  uint64_t len = (nb_sectors + 1) * 512 - (off & 511);
  return {off, len};
}

inline uint64_t encode_compressed(const Geometry& g, uint64_t off, uint64_t size) {
  uint64_t nb_sectors = ((off + size - 1) >> 9) - (off >> 9);
  return kOflagCompressed | (nb_sectors << g.csize_shift()) | off;
}

// Whether an uncompressed entry has a host cluster. Offset 0 means none, except in an
// external data file, where OFLAG_COPIED tells a cluster at offset 0 apart (QEMU's rule).
inline bool has_host(const Geometry& g, L2Entry e) {
  if (e.compressed()) return false;
  return (e.word & kL2eOffsetMask) || (g.external_data && e.copied());
}

inline SubclusterType subcluster_type(const Geometry& g, L2Entry e, uint32_t sc) {
  if (e.compressed()) return SubclusterType::kCompressed;
  const bool off = has_host(g, e);
  if (!g.extended_l2) {
    if (e.word & kOflagZero) return off ? SubclusterType::kZeroAlloc : SubclusterType::kZeroPlain;
    return off ? SubclusterType::kNormal : SubclusterType::kUnallocatedPlain;
  }
  uint64_t alloc = e.bitmap & kL2BitmapAllAlloc;
  uint64_t zero = e.bitmap >> 32;
  if (off) {
    if (alloc & zero) return SubclusterType::kInvalid;
    if (zero & (1ull << sc)) return SubclusterType::kZeroAlloc;
    if (alloc & (1ull << sc)) return SubclusterType::kNormal;
    return SubclusterType::kUnallocatedAlloc;
  }
  if (alloc) return SubclusterType::kInvalid;
  if (zero & (1ull << sc)) return SubclusterType::kZeroPlain;
  return SubclusterType::kUnallocatedPlain;
}

inline bool is_zero_type(SubclusterType t) { return t == SubclusterType::kZeroPlain || t == SubclusterType::kZeroAlloc; }
inline bool is_unallocated_type(SubclusterType t) {
  return t == SubclusterType::kUnallocatedPlain || t == SubclusterType::kUnallocatedAlloc;
}

// Bitmap of subclusters [first, last) for the allocation half (shift 32 for the zero half).
inline uint64_t sc_range_mask(uint32_t first, uint32_t last) {
  if (last <= first) return 0;
  uint64_t n = last - first;
  return (n >= 64 ? ~0ull : ((1ull << n) - 1)) << first;
}

}  // namespace qcow
