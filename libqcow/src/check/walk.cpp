#include "check/walk.hpp"

#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "map/l2_entry.hpp"

namespace qcow {
namespace {

constexpr uint64_t kMaxWalkClusters = 1ull << 28;  // 2 GiB of counters at most

class Walker {
 public:
  Walker(Qcow2Driver& d, RefcountWalk& out, uint64_t file_size)
      : d_(d), g_(d.geometry()), out_(out), file_size_(file_size) {}

  // Counts [offset, offset+len) as referenced once by `what`.
  void ref(uint64_t offset, uint64_t len, const std::string& what) {
    if (!len) return;
    if (offset >= kMaxHostOffset || offset + len > align_up(file_size_, g_.cluster_size)) {
      out_.corruptions.push_back(fmt::format("{} at {:#x} (+{:#x}) lies beyond the end of the file", what, offset, len));
      return;
    }
    for (uint64_t c = offset >> g_.cluster_bits; c <= (offset + len - 1) >> g_.cluster_bits; ++c) {
      if (c >= out_.counts.size()) out_.counts.resize(c + 1, 0);
      ++out_.counts[c];
    }
  }

  Status table(uint64_t offset, uint64_t bytes, std::vector<uint8_t>& buf, const std::string& what) {
    buf.assign(bytes, 0);
    if (offset + bytes > file_size_) {
      out_.corruptions.push_back(fmt::format("{} at {:#x} lies beyond the end of the file", what, offset));
      return Status::corrupt("table beyond the end of the file");
    }
    QCOW_ASSIGN_OR_RETURN(size_t got, d_.file().read_at(offset, buf));
    (void)got;
    return Status::ok();
  }

  Status l1(uint64_t l1_offset, uint32_t l1_size, const std::string& name) {
    if (!l1_size) return Status::ok();
    ref(l1_offset, uint64_t(l1_size) * 8, name + " L1 table");
    std::vector<uint8_t> raw;
    if (!table(l1_offset, uint64_t(l1_size) * 8, raw, name + " L1 table").is_ok()) return Status::ok();
    std::vector<uint8_t> l2;
    for (uint32_t i = 0; i < l1_size; ++i) {
      uint64_t e = load_be64(raw.data() + 8 * i);
      uint64_t off = e & kL1eOffsetMask;
      if (!off) continue;
      if (off & (g_.cluster_size - 1)) {
        out_.corruptions.push_back(fmt::format("L2 table offset {:#x} unaligned ({} L1 index {:#x})", off, name, i));
        continue;
      }
      ref(off, g_.cluster_size, "L2 table");
      if (!table(off, g_.cluster_size, l2, "L2 table").is_ok()) continue;
      for (uint64_t j = 0; j < g_.l2_entries; ++j) {
        L2Entry le;
        le.word = load_be64(l2.data() + j * g_.l2_entry_size);
        if (g_.extended_l2) le.bitmap = load_be64(l2.data() + j * g_.l2_entry_size + 8);
        if (le.compressed()) {
          CompressedExtent ce = compressed_extent(g_, le);
          ref(ce.offset, ce.length, "compressed cluster");
          ++out_.compressed_clusters;
          ++out_.allocated_clusters;
        } else if (uint64_t h = le.host_offset()) {
          if (h & (g_.cluster_size - 1)) {
            out_.corruptions.push_back(fmt::format("cluster allocation offset {:#x} unaligned (L2 offset {:#x}, L2 index {:#x})", h, off, j));
            continue;
          }
          ref(h, g_.cluster_size, "data cluster");
          ++out_.allocated_clusters;
        }
      }
    }
    return Status::ok();
  }

 private:
  Qcow2Driver& d_;
  const Geometry& g_;
  RefcountWalk& out_;
  uint64_t file_size_;
};

}  // namespace

Status walk_refcounts(Qcow2Driver& d, WalkRefcountStructures mode, RefcountWalk& out) {
  const Header& h = d.header();
  const Geometry& g = d.geometry();
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, d.file().size());
  uint64_t nclusters = div_round_up(file_size, g.cluster_size);
  if (nclusters > kMaxWalkClusters) return Status::limit("image file too large to walk (more than 2^28 clusters)");
  out.counts.assign(nclusters, 0);
  Walker w(d, out, file_size);
  w.ref(0, g.cluster_size, "header");
  QCOW_TRY(w.l1(h.l1_table_offset, h.l1_size, "active"));
  for (const auto& s : d.snapshots()) QCOW_TRY(w.l1(s.l1_table_offset, s.l1_size, fmt::format("snapshot '{}'", s.name)));
  if (h.nb_snapshots) {
    w.ref(h.snapshots_offset, d.snapshot_table_bytes(), "snapshot table");
  }
  if (h.bitmaps && h.bitmaps->bitmap_directory_size) {
    const auto& b = *h.bitmaps;
    if (b.bitmap_directory_size > (64ull << 20)) return Status::limit("bitmap directory larger than 64 MiB");
    w.ref(b.bitmap_directory_offset, b.bitmap_directory_size, "bitmap directory");
    std::vector<uint8_t> dir;
    if (w.table(b.bitmap_directory_offset, b.bitmap_directory_size, dir, "bitmap directory").is_ok()) {
      std::vector<uint8_t> bt;
      for (uint64_t p = 0; p + 24 <= dir.size();) {
        uint64_t table_off = load_be64(dir.data() + p);
        uint32_t table_size = load_be32(dir.data() + p + 8);
        uint32_t name_size = load_be16(dir.data() + p + 18), extra = load_be32(dir.data() + p + 20);
        if (uint64_t(table_size) * 8 > kMaxL1Bytes) return Status::limit("bitmap table too large");
        w.ref(table_off, uint64_t(table_size) * 8, "bitmap table");
        if (table_size && w.table(table_off, uint64_t(table_size) * 8, bt, "bitmap table").is_ok())
          for (uint32_t i = 0; i < table_size; ++i)
            if (uint64_t o = load_be64(bt.data() + 8 * i) & kL2eOffsetMask) w.ref(o, g.cluster_size, "bitmap data");
        p += align_up(24 + uint64_t(extra) + name_size, 8);
      }
    }
  }
  if (h.crypto) w.ref(h.crypto->offset, h.crypto->length, "encryption header");
  if (mode == WalkRefcountStructures::kInclude) {
    w.ref(h.refcount_table_offset, uint64_t(h.refcount_table_clusters) << g.cluster_bits, "refcount table");
    std::vector<uint8_t> rt;
    if (w.table(h.refcount_table_offset, uint64_t(h.refcount_table_clusters) << g.cluster_bits, rt, "refcount table").is_ok()) {
      for (size_t i = 0; i < rt.size() / 8; ++i) {
        uint64_t off = load_be64(rt.data() + 8 * i) & kReftOffsetMask;
        if (off) w.ref(off, g.cluster_size, "refcount block");
      }
    }
  }
  return Status::ok();
}

}  // namespace qcow
