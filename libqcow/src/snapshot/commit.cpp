#include "snapshot/commit.hpp"

#include <fmt/format.h>

#include <map>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "snapshot/shadow_refcounts.hpp"

namespace qcow {

namespace {

class Committer {
 public:
  Committer(Qcow2Driver& d, uint64_t file_size)
      : d_(d),
        g_(d.geometry()),
        file_(d.image_file()),
        file_size_(file_size),
        rc_(file_, g_, d.refcounts().reftable(), d.refcounts().reftable_offset(), d.refcounts().reftable_clusters()) {}

  Status run(const L1Change& change);
  bool committed() const { return committed_; }
  void release_claims() { rc_.release_claims(); }

 private:
  Status add_references(const std::vector<uint64_t>& l1, int64_t delta);
  Status free_clusters(uint64_t offset, uint64_t bytes);
  Result<std::vector<uint8_t>> load_l2(uint64_t offset);
  Status rewrite_shared_flags(const std::vector<uint64_t>& active, uint64_t uses_per_entry);
  Result<std::vector<uint64_t>> final_active(const std::vector<uint64_t>& active, size_t entries);
  Result<uint64_t> write_l1(const std::vector<uint64_t>& l1, Structure what);
  Result<uint64_t> write_snapshot_table(const std::vector<SnapshotEntry>& entries);

  Qcow2Driver& d_;
  const Geometry g_;
  ImageFile& file_;
  uint64_t file_size_;
  ShadowRefcounts rc_;
  std::map<uint64_t, uint64_t> copies_;  // active L2 table -> its copy with corrected COPIED flags
  bool committed_ = false;
};

Result<std::vector<uint8_t>> Committer::load_l2(uint64_t offset) {
  if ((offset & (g_.cluster_size - 1)) || offset >= file_size_)
    return Status::corrupt(fmt::format("L2 table offset {:#x} is unaligned or beyond the end of the file", offset));
  std::vector<uint8_t> table(g_.cluster_size);
  QCOW_ASSIGN_OR_RETURN(size_t got, file_.read_at(offset, table));
  if (got < table.size()) return Status::corrupt(fmt::format("L2 table at {:#x} is truncated", offset));
  return table;
}

// One more (or one less) L1 table reaching the L2 tables in `l1`: QEMU's
// qcow2_update_snapshot_refcount() with addend `delta`.
Status Committer::add_references(const std::vector<uint64_t>& l1, int64_t delta) {
  for (uint64_t entry : l1) {
    const uint64_t table_offset = entry & kL1eOffsetMask;
    if (!table_offset) continue;
    QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t> table, load_l2(table_offset));
    QCOW_TRY(rc_.update(table_offset >> g_.cluster_bits, delta));
    for (uint64_t j = 0; j < g_.l2_entries; ++j) {
      const L2Entry e = load_l2_entry(table.data(), g_, j);
      if (e.compressed()) {
        const CompressedExtent ce = compressed_extent(g_, e);
        if (ce.offset >= file_size_)
          return Status::corrupt(fmt::format("compressed cluster at {:#x} lies beyond the end of the file", ce.offset));
        for (uint64_t c = ce.offset >> g_.cluster_bits; c <= (ce.offset + ce.length - 1) >> g_.cluster_bits; ++c)
          QCOW_TRY(rc_.update(c, delta));
      } else if (const uint64_t host = e.host_offset()) {
        if (host & (g_.cluster_size - 1))
          return Status::corrupt(fmt::format("Cannot update refcount: data cluster offset {:#x} unaligned (L2 offset: "
                                             "{:#x}, L2 index: {:#x})", host, table_offset, j));
        QCOW_TRY(rc_.update(host >> g_.cluster_bits, delta));
      }
    }
  }
  return Status::ok();
}

Status Committer::free_clusters(uint64_t offset, uint64_t bytes) {
  for (uint64_t c = 0; c < div_round_up(bytes, g_.cluster_size); ++c)
    QCOW_TRY(rc_.update((offset >> g_.cluster_bits) + c, -1));
  return Status::ok();
}

// COPIED on an active L2 entry must say "refcount 1". Tables whose flags change are
// copied with the flags corrected (the originals may be a snapshot's, and stay as
// they are); each use of a table by an L1 table this change writes moves to the copy.
Status Committer::rewrite_shared_flags(const std::vector<uint64_t>& active, uint64_t uses_per_entry) {
  std::map<uint64_t, uint64_t> uses;
  for (uint64_t entry : active)
    if (entry & kL1eOffsetMask) uses[entry & kL1eOffsetMask] += uses_per_entry;
  for (const auto& [table_offset, n] : uses) {
    QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t> table, load_l2(table_offset));
    bool changed = false;
    for (uint64_t j = 0; j < g_.l2_entries; ++j) {
      L2Entry e = load_l2_entry(table.data(), g_, j);
      if (e.compressed() || !e.host_offset()) continue;
      QCOW_ASSIGN_OR_RETURN(uint64_t refs, rc_.get(e.host_offset() >> g_.cluster_bits));
      if (e.copied() == (refs == 1)) continue;
      e.word ^= kOflagCopied;
      store_l2_entry(table.data(), g_, j, e);
      changed = true;
    }
    if (!changed) continue;
    QCOW_ASSIGN_OR_RETURN(uint64_t copy, rc_.alloc(1, Structure::kActiveL2));
    QCOW_TRY(file_.write_metadata(Structure::kActiveL2, copy, table));
    QCOW_TRY(rc_.update(copy >> g_.cluster_bits, int64_t(n) - 1));
    QCOW_TRY(rc_.update(table_offset >> g_.cluster_bits, -int64_t(n)));
    copies_[table_offset] = copy;
  }
  return Status::ok();
}

// The active L1 table's entries: copies swapped in, COPIED set where the L2 table's
// refcount is 1.
Result<std::vector<uint64_t>> Committer::final_active(const std::vector<uint64_t>& active, size_t entries) {
  std::vector<uint64_t> l1(std::max(entries, active.size()), 0);
  for (size_t i = 0; i < active.size(); ++i) {
    uint64_t t = active[i] & kL1eOffsetMask;
    if (!t) continue;
    if (auto it = copies_.find(t); it != copies_.end()) t = it->second;
    QCOW_ASSIGN_OR_RETURN(uint64_t refs, rc_.get(t >> g_.cluster_bits));
    l1[i] = t | (refs == 1 ? kOflagCopied : 0);
  }
  return l1;
}

Result<uint64_t> Committer::write_l1(const std::vector<uint64_t>& l1, Structure what) {
  if (l1.empty()) return uint64_t(0);
  const uint64_t bytes = align_up(l1.size() * 8, g_.cluster_size);
  QCOW_ASSIGN_OR_RETURN(uint64_t offset, rc_.alloc(bytes >> g_.cluster_bits, what));
  QCOW_TRY(store_table(file_, what, offset, l1, bytes));
  return offset;
}

Result<uint64_t> Committer::write_snapshot_table(const std::vector<SnapshotEntry>& entries) {
  if (entries.empty()) return uint64_t(0);
  std::vector<uint8_t> bytes = encode_snapshot_table(entries);
  if (bytes.size() > kMaxSnapshotTableBytes)
    return Status::error(ErrorCode::kLimit, "the snapshot table would exceed 64 MiB", EFBIG);
  bytes.resize(align_up(bytes.size(), g_.cluster_size), 0);
  QCOW_ASSIGN_OR_RETURN(uint64_t offset, rc_.alloc(bytes.size() >> g_.cluster_bits, Structure::kSnapshotTable));
  QCOW_TRY(file_.write_metadata(Structure::kSnapshotTable, offset, bytes));
  return offset;
}

Status Committer::run(const L1Change& change) {
  const Header& h = d_.header();
  const std::vector<uint64_t>& current = d_.l1_table();
  const std::vector<uint64_t>& active = change.active ? *change.active : current;
  // References first dropped, then added: counts never pass their final value on the way.
  if (change.active) QCOW_TRY(add_references(current, -1));
  for (const SnapshotEntry& s : change.dropped) {
    QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, load_table(file_, s.l1_table_offset, s.l1_size,
                                                               fmt::format("snapshot '{}' L1 table", s.name)));
    QCOW_TRY(add_references(l1, -1));
    QCOW_TRY(free_clusters(s.l1_table_offset, uint64_t(s.l1_size) * 8));
  }
  if (change.active) QCOW_TRY(add_references(active, 1));
  if (change.copy_of_active) QCOW_TRY(add_references(active, 1));

  QCOW_TRY(rewrite_shared_flags(active, change.copy_of_active ? 2 : 1));
  const size_t l1_entries = change.active ? std::max<size_t>(change.active_l1_size, active.size()) : h.l1_size;
  QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, final_active(active, l1_entries));
  uint64_t l1_offset = h.l1_table_offset;
  if (l1 != current) {
    QCOW_ASSIGN_OR_RETURN(l1_offset, write_l1(l1, Structure::kActiveL1));
    QCOW_TRY(free_clusters(h.l1_table_offset, uint64_t(h.l1_size) * 8));
  }
  std::vector<SnapshotEntry> snapshots = change.snapshots;
  if (change.copy_of_active) {
    std::vector<uint64_t> copy(h.l1_size, 0);
    for (size_t i = 0; i < copy.size() && i < l1.size(); ++i) copy[i] = l1[i] & kL1eOffsetMask;
    SnapshotEntry& fresh = snapshots.at(*change.copy_of_active);
    QCOW_ASSIGN_OR_RETURN(fresh.l1_table_offset, write_l1(copy, Structure::kInactiveL1));
    fresh.l1_size = uint32_t(copy.size());
  }
  QCOW_ASSIGN_OR_RETURN(uint64_t table_offset, write_snapshot_table(snapshots));
  if (h.nb_snapshots) QCOW_TRY(free_clusters(h.snapshots_offset, d_.snapshot_table_bytes()));
  QCOW_ASSIGN_OR_RETURN(auto reftable, rc_.finish());

  // Everything the new header names is durable; the switch is one write in sector 0.
  QCOW_TRY(file_.flush());
  auto apply = [&](Header& x) {
    x.size = change.size;
    x.l1_size = uint32_t(l1.size());
    x.l1_table_offset = l1_offset;
    x.refcount_table_offset = reftable.first;
    x.refcount_table_clusters = reftable.second;
    x.nb_snapshots = uint32_t(snapshots.size());
    x.snapshots_offset = table_offset;
  };
  if (change.size != h.size)
    QCOW_TRY(d_.commit_fields({HeaderField::kSize, HeaderField::kL1Table, HeaderField::kRefcountTable,
                               HeaderField::kSnapshotTable}, apply));
  else
    QCOW_TRY(d_.commit_fields({HeaderField::kL1Table, HeaderField::kRefcountTable, HeaderField::kSnapshotTable}, apply));
  committed_ = true;
  return file_.flush();
}

}  // namespace

Status commit_l1_change(Qcow2Driver& d, const L1Change& change) {
  QCOW_TRY(d.flush());
  ImageFile& file = d.image_file();
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, file.size());
  Committer c(d, file_size);
  Status s = c.run(change);
  if (!s.is_ok() && !c.committed() && !file.failed()) {
    // What was written lies in free clusters; past the old end it is cut off again.
    c.release_claims();
    file.shrink(align_up(file_size, d.geometry().cluster_size)).ignore();
  }
  return s;
}

}  // namespace qcow
