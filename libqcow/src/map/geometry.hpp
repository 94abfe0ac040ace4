// Sizes and shifts derived once from the header, and guest-offset splitting.
#pragma once

#include <cstdint>

#include "format/constants.hpp"
#include "format/header.hpp"

namespace qcow {

struct Geometry {
  uint32_t cluster_bits = 16;
  uint64_t cluster_size = 65536;
  bool extended_l2 = false;
  uint32_t l2_entry_size = 8;        // bytes: 8, or 16 with extended L2
  uint32_t l2_bits = 13;             // log2(entries per L2 table)
  uint64_t l2_entries = 8192;
  uint32_t subcluster_bits = 16;
  uint64_t subcluster_size = 65536;
  uint32_t subclusters = 1;          // per cluster: 1 or 32
  uint32_t refcount_order = 4;
  uint32_t refcount_bits = 16;
  uint32_t refblock_bits = 15;       // log2(entries per refcount block)
  uint64_t refblock_entries = 32768;
  int version = 3;
  // Data clusters live in an external data file, where host offset 0 is a real cluster
  // (marked by OFLAG_COPIED, as all such clusters are: their refcount is implicitly 1).
  bool external_data = false;

  static Geometry from(const Header& h) {
    Geometry g;
    g.cluster_bits = h.cluster_bits;
    g.cluster_size = uint64_t(1) << h.cluster_bits;
    g.extended_l2 = h.extended_l2();
    g.external_data = h.incompatible_features & kIncompatDataFile;
    g.l2_entry_size = g.extended_l2 ? 16 : 8;
    g.l2_bits = h.cluster_bits - (g.extended_l2 ? 4 : 3);
    g.l2_entries = uint64_t(1) << g.l2_bits;
    g.subclusters = g.extended_l2 ? 32 : 1;
    g.subcluster_bits = g.extended_l2 ? h.cluster_bits - 5 : h.cluster_bits;
    g.subcluster_size = uint64_t(1) << g.subcluster_bits;
    g.refcount_order = h.refcount_order;
    g.refcount_bits = 1u << h.refcount_order;
    g.refblock_bits = h.cluster_bits + 3 - h.refcount_order;
    g.refblock_entries = uint64_t(1) << g.refblock_bits;
    g.version = int(h.version);
    return g;
  }

  uint64_t offset_into_cluster(uint64_t off) const { return off & (cluster_size - 1); }
  uint64_t cluster_index(uint64_t off) const { return off >> cluster_bits; }
  uint64_t l1_index(uint64_t guest) const { return guest >> (cluster_bits + l2_bits); }
  uint64_t l2_index(uint64_t guest) const { return (guest >> cluster_bits) & (l2_entries - 1); }
  uint32_t sc_index(uint64_t guest) const { return uint32_t(offset_into_cluster(guest) >> subcluster_bits); }
  // Guest bytes one L2 table maps.
  uint64_t l2_coverage() const { return uint64_t(1) << (cluster_bits + l2_bits); }
  uint64_t l1_entries_for(uint64_t size) const { return (size + l2_coverage() - 1) >> (cluster_bits + l2_bits); }
  // Compressed descriptor split point: x = 62 - (cluster_bits - 8).
  uint32_t csize_shift() const { return 62 - (cluster_bits - 8); }
  uint64_t csize_mask() const { return (uint64_t(1) << (cluster_bits - 8)) - 1; }
  uint64_t coffset_mask() const { return (uint64_t(1) << csize_shift()) - 1; }
  uint64_t max_refcount() const { return refcount_bits == 64 ? ~uint64_t(0) : (uint64_t(1) << refcount_bits) - 1; }
};

}  // namespace qcow
