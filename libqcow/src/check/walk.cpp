#include "check/walk.hpp"

#include <fmt/format.h>

#include <set>

#include "codec/bytes.hpp"
#include "format/constants.hpp"

namespace qcow {
namespace {

class Walker {
 public:
  Walker(Qcow2Driver& d, RefcountWalk& out, uint64_t file_size, WalkFixes fixes)
      : d_(d), g_(d.geometry()), out_(out), file_size_(file_size), plan_(fixes == WalkFixes::kPlan),
        external_data_(d.header().incompatible_features & kIncompatDataFile) {
    guest_clusters_ = div_round_up(d.header().size, g_.cluster_size);
  }

  // QEMU counts no region that ends a cluster or more past the end of the file.
  bool within_file(uint64_t offset, uint64_t len) const {
    return offset < kMaxHostOffset && offset + len < file_size_ + g_.cluster_size;
  }
  static std::string past_end(uint64_t offset, uint64_t len) {
    return fmt::format("counting reference for region exceeding the end of the file by one cluster or more: "
                       "offset {:#x} size {:#x}", offset, len);
  }

  // Counts [offset, offset+len) as referenced once (QEMU's qcow2_inc_refcounts_imrt).
  // Running out of counter memory stops the counting; status() reports it.
  void ref(uint64_t offset, uint64_t len) {
    if (!len || !status_.is_ok()) return;
    if (!within_file(offset, len)) {
      problem(false, past_end(offset, len), Prefix::kColon);
      return;
    }
    uint64_t first = offset >> g_.cluster_bits, last = (offset + len - 1) >> g_.cluster_bits;
    for (uint64_t c = first; c <= last; ++c) {
      if (out_.counts.get(c) == g_.max_refcount()) {
        out_.messages.push_back(fmt::format("ERROR: overflow cluster offset={:#x}", c << g_.cluster_bits));
        out_.messages.push_back("Use qemu-img amend to increase the refcount entry size");
        ++out_.corruptions;
        continue;
      }
      Status s = out_.counts.add(c);
      if (!s.is_ok()) {
        status_ = s.prepend(fmt::format("{}: ", d_.image_file().path()));
        return;
      }
    }
  }
  const Status& status() const { return status_; }

  // Reads a table; bytes past the end of the file read as zeros (as in QEMU).
  Status table(uint64_t offset, uint64_t bytes, std::vector<uint8_t>& buf) {
    buf.assign(bytes, 0);
    if (offset >= file_size_) return Status::ok();
    auto got = d_.image_file().read_at(offset, std::span<uint8_t>(buf.data(), std::min(bytes, file_size_ - offset)));
    if (!got) {
      out_.messages.push_back(fmt::format("ERROR: I/O error reading the table at {:#x}: {}", offset, got.status().message()));
      ++out_.check_errors;
      return got.status();
    }
    return Status::ok();
  }

  // A finding. Fixable ones become repairs in plan mode; the rest are corruptions.
  // How QEMU prefixes a finding: "ERROR: counting reference ..." but "ERROR snapshot ...",
  // "ERROR l2 ...". The caller that builds the text knows which one it is.
  enum class Prefix { kPlain, kColon };

  void problem(bool fixable, const std::string& text, Prefix prefix = Prefix::kPlain) {
    if (plan_ && fixable) {
      out_.messages.push_back("Repairing " + text);
      ++out_.planned_fixes;
    } else {
      out_.messages.push_back((prefix == Prefix::kColon ? "ERROR: " : "ERROR ") + text);
      ++out_.corruptions;
    }
  }

  // QEMU's check_refcounts_l1. The table is read in slices: the driver already holds the
  // active one (16 MiB for 4 TiB at 4 KiB clusters), and a second whole copy would double
  // check's peak memory.
  Status l1(uint64_t l1_offset, uint32_t l1_size, bool active) {
    if (!l1_size) return Status::ok();
    ref(l1_offset, uint64_t(l1_size) * 8);
    constexpr uint32_t kSliceEntries = 8192;  // 64 KiB per read
    std::vector<uint8_t> raw;
    for (uint32_t first = 0; first < l1_size; first += kSliceEntries) {
      const uint32_t n = std::min(kSliceEntries, l1_size - first);
      QCOW_TRY(table(l1_offset + uint64_t(first) * 8, uint64_t(n) * 8, raw));
      for (uint32_t k = 0; k < n; ++k) {
        const uint64_t e = load_be64(raw.data() + 8 * k);
        if (e) QCOW_TRY(l1_entry(l1_offset, first + k, e, active));
      }
    }
    return Status::ok();
  }

  // One non-zero L1 entry: its reserved bits, its L2 table's place, then the table.
  Status l1_entry(uint64_t l1_offset, uint32_t i, uint64_t e, bool active) {
    uint64_t fixed = e;
    if (e & kL1eReservedMask) {
      problem(true, fmt::format("found L1 entry with reserved bits set: {:x}", e));
      fixed &= ~kL1eReservedMask;
    }
    uint64_t off = e & kL1eOffsetMask;
    bool drop = false;
    if (!within_file(off, g_.cluster_size)) {  // the table reads as zeros: clearing the entry keeps the guest view
      problem(true, past_end(off, g_.cluster_size) + (plan_ ? " (L1 entry cleared)" : ""), Prefix::kColon);
      drop = true;
    } else if (!plan_) {
      ref(off, g_.cluster_size);
    }
    if (off & (g_.cluster_size - 1)) {
      problem(true, fmt::format("l2_offset={:x}: Table is not cluster aligned; L1 entry corrupted{}", off,
                                plan_ ? " (L1 entry cleared: its guest data is lost)" : ""));
      drop = true;
    }
    if (drop) fixed = 0;
    if (plan_ && fixed != e) out_.l1_fixes.push_back({l1_offset, i, fixed});
    if (plan_ && drop) return Status::ok();
    if (plan_) ref(off, g_.cluster_size);
    return l2(off, active, uint64_t(i) * g_.l2_entries);
  }

  // QEMU's check_refcounts_l2, plus the extended-L2 descriptor bit 0 check.
  Status l2(uint64_t l2_offset, bool active, uint64_t first_guest_cluster) {
    std::vector<uint8_t> raw;
    QCOW_TRY(table(l2_offset, g_.cluster_size, raw));
    // A table shared with snapshots is reported on every visit (as QEMU does) but repaired once.
    // (Only repairs need to know: a plain check keeps no set of visited tables.)
    bool first_visit = !plan_ || visited_l2_.insert(l2_offset).second;
    bool plan_here = plan_ && first_visit;
    uint64_t next_contiguous = 0;
    for (uint64_t j = 0; j < g_.l2_entries; ++j) {
      const L2Entry e = load_l2_entry(raw.data(), g_, j);
      L2Entry fixed = e;
      in_disk_ = first_guest_cluster + j < guest_clusters_;
      entry(l2_offset, j, e, active, fixed, next_contiguous, plan_ && !first_visit);
      if (plan_here && !(fixed == e)) out_.l2_fixes.push_back({l2_offset, j, fixed});
    }
    return Status::ok();
  }

  // One L2 entry. `quiet`: a repeated visit in plan mode (findings already recorded).
  bool entry(uint64_t l2_offset, uint64_t j, L2Entry e, bool active, L2Entry& fixed, uint64_t& next_contiguous, bool quiet) {
    auto finding = [&](bool fixable, const std::string& text, Prefix prefix = Prefix::kPlain) {
      if (!quiet) problem(fixable, text, prefix);
    };
    const uint64_t cs = g_.cluster_size;
    const bool ext = g_.extended_l2;
    if (!e.compressed()) {
      if (e.word & kL2eStdReservedMask) {
        finding(true, fmt::format("found l2 entry with reserved bits set: {:x}", e.word));
        fixed.word &= ~kL2eStdReservedMask;
      }
      // Not checked by QEMU: with extended L2 entries bit 0 is reserved (spec, "Standard Cluster Descriptor").
      if (ext && (e.word & kOflagZero)) {
        finding(true, fmt::format("l2 entry {:x} (L2 table {:#x}, index {}): bit 0 set in an extended L2 entry", e.word,
                                  l2_offset, j));
        fixed.word &= ~kOflagZero;
      }
    }
    if (e.compressed()) {
      CompressedExtent ce = compressed_extent(g_, e);
      if (e.copied()) {
        finding(true, fmt::format("coffset={:#x}: copied flag must never be set for compressed clusters", ce.offset));
        fixed.word &= ~kOflagCopied;
      }
      if (e.bitmap) {
        finding(true, fmt::format("compressed cluster {} with non-zero subcluster allocation bitmap, entry={:#x}", j, e.word));
        fixed.bitmap = 0;
        if (!plan_) return false;  // QEMU stops here: the compressed data is not counted
      }
      if (!within_file(ce.offset, ce.length)) {  // reads fail: the data is gone
        finding(true, past_end(ce.offset, ce.length) + (plan_ ? " (L2 entry now reads as zeros)" : ""), Prefix::kColon);
        fixed = zero_entry();
      } else {
        ref(ce.offset, ce.length);
      }
      if (active) {
        ++out_.allocated_clusters;
        ++out_.compressed_clusters;
        ++out_.fragmented_clusters;  // compressed clusters are fragmented by nature (QEMU)
        if (ext && in_disk_) out_.subclusters.allocated += g_.subclusters;
      }
      return false;
    }
    const uint64_t off = e.word & kL2eOffsetMask;
    const uint64_t alloc = e.bitmap & kL2BitmapAllAlloc, zero = e.bitmap >> 32;
    bool drop = false;
    if (has_host(g_, e)) {  // QEMU's QCOW2_CLUSTER_NORMAL and QCOW2_CLUSTER_ZERO_ALLOC
      if (ext && (alloc & zero)) {
        finding(true, fmt::format("offset={:x}: Allocated cluster has corrupted subcluster allocation bitmap", off));
        fixed.bitmap &= ~(alloc << 32);  // the host cluster exists: keep its data readable
        if (active) ++out_.subclusters.bitmap_errors;
      }
      if (off & (cs - 1)) {
        bool has_data = ext ? alloc != 0 : !(e.word & kOflagZero);
        finding(true, fmt::format("offset={:x}: {} cluster is not properly aligned; L2 entry corrupted.{}", off,
                                  has_data ? "Data" : "Preallocated", plan_ && has_data ? " (now reads as zeros)" : ""));
        fixed = zero_entry();
        drop = true;
      }
      if (active) {
        ++out_.allocated_clusters;
        if (next_contiguous && off != next_contiguous) ++out_.fragmented_clusters;
        next_contiguous = off + cs;
      }
      if (external_data_) {
        // Clusters of an external data file are not refcounted (spec), nor in this file.
      } else if (!within_file(off, cs)) {  // QEMU reads zeros past the end of the file: keep reading zeros
        finding(true, past_end(off, cs) + (plan_ ? " (L2 entry now reads as zeros)" : ""), Prefix::kColon);
        fixed = zero_entry();
        drop = true;
      } else if (!(drop && plan_)) {
        ref(off, cs);
      }
    } else if (ext && alloc) {  // QCOW2_CLUSTER_UNALLOCATED with allocation bits
      finding(true, fmt::format("Unallocated cluster has non-zero subcluster allocation map (L2 table {:#x}, index {}, "
                                "bitmap {:#018x})", l2_offset, j, e.bitmap));
      fixed.bitmap &= ~kL2BitmapAllAlloc;
      if (active) ++out_.subclusters.bitmap_errors;
    }
    if (active && ext && !quiet && in_disk_) count_subclusters(fixed);
    return drop;
  }

  // An entry that reads as zeros without a host cluster (unallocated on version 2).
  L2Entry zero_entry() const {
    L2Entry z;
    if (g_.version < 3) return z;
    if (g_.extended_l2) z.bitmap = kL2BitmapAllZero;
    else z.word = kOflagZero;
    return z;
  }

  // Subcluster statistics, on the entry as it reads once repaired.
  void count_subclusters(L2Entry e) {
    for (uint32_t sc = 0; sc < g_.subclusters; ++sc) {
      SubclusterType t = subcluster_type(g_, e, sc);
      if (t == SubclusterType::kNormal) ++out_.subclusters.allocated;
      else if (is_zero_type(t)) ++out_.subclusters.zero;
      else ++out_.subclusters.unallocated;
    }
  }

  // Bitmap directory, bitmap tables and bitmap data clusters.
  Status bitmaps(const BitmapsExtension& b) {
    if (b.bitmap_directory_size > (64ull << 20)) return Status::limit("bitmap directory larger than 64 MiB");
    ref(b.bitmap_directory_offset, b.bitmap_directory_size);
    std::vector<uint8_t> dir, bt;
    QCOW_TRY(table(b.bitmap_directory_offset, b.bitmap_directory_size, dir));
    for (uint64_t p = 0; p + 24 <= dir.size();) {
      uint64_t table_off = load_be64(dir.data() + p);
      uint32_t table_size = load_be32(dir.data() + p + 8);
      uint32_t name_size = load_be16(dir.data() + p + 18), extra = load_be32(dir.data() + p + 20);
      if (uint64_t(table_size) * 8 > kMaxL1Bytes) return Status::limit("bitmap table too large");
      ref(table_off, uint64_t(table_size) * 8);
      if (table_size) {
        QCOW_TRY(table(table_off, uint64_t(table_size) * 8, bt));
        for (uint32_t i = 0; i < table_size; ++i)
          if (uint64_t o = load_be64(bt.data() + 8 * i) & kL2eOffsetMask) ref(o, g_.cluster_size);
      }
      p += align_up(24 + uint64_t(extra) + name_size, 8);
    }
    return Status::ok();
  }

  // QEMU's check_refblocks: the refcount blocks must be aligned, inside the file and referenced once.
  Status refblocks(const Header& h) {
    const uint64_t cs = g_.cluster_size;
    std::vector<uint8_t> rt;
    QCOW_TRY(table(h.refcount_table_offset, uint64_t(h.refcount_table_clusters) << g_.cluster_bits, rt));
    auto broken = [&](const std::string& text) {
      out_.messages.push_back("ERROR " + text);
      ++out_.corruptions;
      ++out_.refblock_corruptions;
      out_.rebuild = true;
    };
    for (uint64_t i = 0; i < rt.size() / 8; ++i) {
      uint64_t e = load_be64(rt.data() + 8 * i), off = e & kReftOffsetMask, cluster = off >> g_.cluster_bits;
      if (e & kReftReservedMask) {
        broken(fmt::format("refcount table entry {} has reserved bits set", i));
      } else if (off & (cs - 1)) {
        broken(fmt::format("refcount block {} is not cluster aligned; refcount table entry corrupted", i));
      } else if (off && cluster >= std::max(out_.counts.end(), div_round_up(file_size_, cs))) {
        broken(fmt::format("refcount block {} is outside image", i));
      } else if (off) {
        ref(off, cs);
        if (out_.counts.get(cluster) != 1)
          broken(fmt::format("refcount block {} refcount={}", i, out_.counts.get(cluster)));
      }
    }
    return Status::ok();
  }

 private:
  Qcow2Driver& d_;
  const Geometry& g_;
  RefcountWalk& out_;
  uint64_t file_size_;
  bool plan_;
  bool external_data_;  // data clusters live in an external data file (not counted here)
  uint64_t guest_clusters_ = 0;  // clusters of the virtual disk
  bool in_disk_ = false;         // the current L2 entry maps a guest cluster below the virtual size
  std::set<uint64_t> visited_l2_;
  Status status_;
};

}  // namespace

Status walk_refcounts(Qcow2Driver& d, WalkRefcountStructures mode, RefcountWalk& out, WalkFixes fixes) {
  const Header& h = d.header();
  const Geometry& g = d.geometry();
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, d.image_file().size());
  Walker w(d, out, file_size, fixes);
  w.ref(0, g.cluster_size);
  QCOW_TRY(w.l1(h.l1_table_offset, h.l1_size, true));
  // Version 3 entries carry the large VM state size and the disk size (16 bytes of extra
  // data); QEMU's check reports shorter ones, and its -r all rewrites the table with the
  // entries completed (complete_snapshot_table, once the refcounts are right).
  if (h.version >= 3)
    for (size_t i = 0; i < d.snapshots().size(); ++i) {
      if (d.snapshots()[i].extra.size() >= 16) continue;
      const std::string text = fmt::format("snapshot table entry {} is incomplete", i);
      if (fixes == WalkFixes::kPlan) {
        out.messages.push_back("Repairing " + text);
        ++out.incomplete_snapshots;
      } else {
        w.problem(false, text);
      }
    }
  for (const auto& s : d.snapshots()) {
    if (s.l1_table_offset & (g.cluster_size - 1)) {
      w.problem(false, fmt::format("snapshot {} ({}) l1_offset={:#x}: L1 table is not cluster aligned; snapshot table "
                                   "entry corrupted", s.id, s.name, s.l1_table_offset));
      continue;
    }
    if (s.l1_size > kMaxL1Bytes / 8) {
      w.problem(false, fmt::format("snapshot {} ({}) l1_size={:#x}: L1 table is too large; snapshot table entry corrupted",
                                   s.id, s.name, s.l1_size));
      continue;
    }
    // More than a cluster past the end of the file: reported as QEMU's counting does, and
    // not followed. Anything QEMU still follows is walked, so no reference goes uncounted.
    const uint64_t l1_bytes = uint64_t(s.l1_size) * 8;
    if (!w.within_file(s.l1_table_offset, l1_bytes)) {
      w.ref(s.l1_table_offset, l1_bytes);
      continue;
    }
    QCOW_TRY(w.l1(s.l1_table_offset, s.l1_size, false));
  }
  if (h.nb_snapshots) w.ref(h.snapshots_offset, d.snapshot_table_bytes());
  if (mode == WalkRefcountStructures::kInclude)
    w.ref(h.refcount_table_offset, uint64_t(h.refcount_table_clusters) << g.cluster_bits);
  if (h.crypto) w.ref(h.crypto->offset, h.crypto->length);
  // Without autoclear bit 0 the bitmaps extension is stale (a program unaware of
  // bitmaps wrote the image): QEMU ignores it, and so counts none of its clusters.
  if (h.bitmaps && h.bitmaps->bitmap_directory_size && (h.autoclear_features & kAutoclearBitmaps))
    QCOW_TRY(w.bitmaps(*h.bitmaps));
  if (mode == WalkRefcountStructures::kInclude) QCOW_TRY(w.refblocks(h));
  return w.status();
}

}  // namespace qcow
