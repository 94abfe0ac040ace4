// check -r: the repairing pass.
//
// Crash safety comes from the order of the writes; each step is flushed before
// the next starts, and a second repair after an interruption finishes the job:
//   1. the corrupt bit is set (when corruptions are to be fixed), so nothing
//      writes to the image until a repair completes;
//   2. L1/L2 entry fixes: they only clear bits or drop references, so at worst
//      clusters leak;
//   3. refcounts that are too low are raised (or the whole refcount structure is
//      rebuilt, whose header switch is its commit point);
//   4. COPIED flags follow the now correct refcounts;
//   5. leaked clusters are freed: they are referenced by nothing on disk;
//   6. the dirty and corrupt bits are cleared once nothing is left to fix.
// No intermediate state has a referenced cluster with a lower refcount than
// the image had before the repair.
#include <fmt/format.h>

#include "check/check_internal.hpp"
#include "check/rebuild.hpp"
#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "snapshot/commit.hpp"

namespace qcow {

// An entry fix is skipped when its "table" lies on another structure (a damaged snapshot
// L1 table can name the header as an L2 table): writing it would damage that structure,
// and the overlap check would refuse it anyway. The re-check then still reports it.
Status apply_entry_fixes(Qcow2Driver& d, const RefcountWalk& w) {
  ImageFile& f = d.image_file();
  const Geometry& g = d.geometry();
  auto on_other_metadata = [&](uint64_t offset, uint64_t length, StructureMask same_kind) {
    return f.overlaps().find(offset, length, ~same_kind).has_value();
  };
  const StructureMask l2 = structure_bit(Structure::kActiveL2) | structure_bit(Structure::kInactiveL2);
  const StructureMask l1 = structure_bit(Structure::kActiveL1) | structure_bit(Structure::kInactiveL1);
  for (const L2Fix& x : w.l2_fixes)
    if (!on_other_metadata(x.table_offset + x.index * g.l2_entry_size, g.l2_entry_size, l2))
      QCOW_TRY(repair_l2_entry(f, g, x.table_offset, x.index, x.entry));
  for (const L1Fix& x : w.l1_fixes)
    if (!on_other_metadata(x.table_offset + 8 * x.index, 8, l1)) QCOW_TRY(repair_l1_entry(f, x.table_offset, x.index, x.entry));
  return f.flush();
}

Result<uint64_t> complete_snapshot_table(Qcow2Driver& d) {
  L1Change c;
  c.size = d.size();
  c.snapshots = d.snapshots();
  uint64_t completed = 0;
  for (SnapshotEntry& e : c.snapshots) {
    if (e.extra.size() >= 16) continue;
    std::vector<uint8_t> extra(24, 0);
    if (e.extra.size() >= 8) std::copy_n(e.extra.begin(), 8, extra.begin());  // the 64-bit VM state size
    else store_be64(extra.data(), e.vm_state_size32);
    store_be64(extra.data() + 8, c.size);
    store_be64(extra.data() + 16, ~uint64_t(0));  // icount: none recorded
    e.extra = std::move(extra);
    ++completed;
  }
  if (completed) QCOW_TRY(commit_l1_change(d, c));
  return completed;
}

Status repair_pass(Qcow2Driver& d, Repair repair, uint64_t memory_limit, CheckTally& t,
                   std::vector<std::string>& messages) {
  const Geometry& g = d.geometry();
  RefcountWalk w(memory_limit);
  QCOW_TRY(walk_refcounts(d, WalkRefcountStructures::kInclude, w,
                          repair == Repair::kAll ? WalkFixes::kPlan : WalkFixes::kReport));
  messages.insert(messages.end(), w.messages.begin(), w.messages.end());
  t.check_errors += w.check_errors;
  t.corruptions += w.corruptions;
  t.incomplete_snapshots = w.incomplete_snapshots;
  StoredRefcounts stored(d.image_file(), g);
  QCOW_TRY(stored.load(d.header().refcount_table_offset, d.header().refcount_table_clusters));
  CheckTally pre;
  std::vector<std::string> pre_messages;
  QCOW_TRY(compare_refcounts(stored, w.counts, Repair::kNone, pre, pre_messages));
  const bool rebuild = w.rebuild || pre.rebuild;
  if (rebuild && repair != Repair::kAll) {
    messages.insert(messages.end(), pre_messages.begin(), pre_messages.end());
    messages.push_back("ERROR need to rebuild refcount structures");
    ++t.check_errors;
    t.corruptions += pre.corruptions;
    t.leaks += pre.leaks;
    return Status::ok();
  }
  bool marked = false;
  if (repair == Repair::kAll && (w.planned_fixes || rebuild || pre.refcount_corruptions) &&
      !(d.header().incompatible_features & kIncompatCorrupt) && d.header().version >= 3) {
    QCOW_TRY(d.update_incompatible(kIncompatCorrupt, 0));
    marked = true;
  }
  if (repair == Repair::kAll) {
    QCOW_TRY(apply_entry_fixes(d, w));
    t.corruptions_fixed += w.planned_fixes;
  }
  if (rebuild) {
    messages.insert(messages.end(), pre_messages.begin(), pre_messages.end());
    messages.push_back("Rebuilding refcount structure");
    QCOW_TRY(rebuild_refcounts(d, memory_limit));
    t.corruptions -= w.refblock_corruptions;
    t.corruptions_fixed += w.refblock_corruptions + pre.corruptions;
    t.leaks_fixed += pre.leaks;
    // The old refcount structures are leaked now: free them.
    RefcountWalk after(memory_limit);
    QCOW_TRY(walk_refcounts(d, WalkRefcountStructures::kInclude, after));
    QCOW_TRY(stored.load(d.header().refcount_table_offset, d.header().refcount_table_clusters));
    CheckTally fresh;
    std::vector<std::string> ignored;
    QCOW_TRY(compare_refcounts(stored, after.counts, Repair::kLeaks, fresh, ignored));
    if (fresh.rebuild || fresh.corruptions) messages.push_back("ERROR rebuilt refcount structure is still broken");
    t.corruptions += fresh.corruptions;
    t.check_errors += fresh.check_errors;
  } else {
    // Raises and frees go out together: every entry is either its old value or the
    // recomputed one, and neither is below what the structures on disk reference.
    QCOW_TRY(compare_refcounts(stored, w.counts, repair, t, messages));
  }
  QCOW_TRY(stored.write_back());
  QCOW_TRY(d.image_file().flush());
  bool repair_copied = repair == Repair::kAll || (!t.check_errors && !t.corruptions && !t.leaks);
  QCOW_TRY(check_copied(d, stored, repair_copied, t, messages));
  if (!t.check_errors && !t.corruptions) {
    QCOW_TRY(d.update_incompatible(0, kIncompatDirty | kIncompatCorrupt));
  } else if (marked) {
    messages.push_back(fmt::format("The image stays marked corrupt: {} corruptions could not be repaired", t.corruptions));
  }
  return Status::ok();
}

}  // namespace qcow
