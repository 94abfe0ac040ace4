// Pieces of check_image() shared by check/check.cpp, check/compare.cpp and check/repair.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check/stored_refcounts.hpp"
#include "check/walk.hpp"
#include "qcow/check.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

// Counts of one check pass (QEMU's BdrvCheckResult).
struct CheckTally {
  uint64_t corruptions = 0, leaks = 0, check_errors = 0;
  uint64_t corruptions_fixed = 0, leaks_fixed = 0;
  uint64_t refcount_corruptions = 0;  // stored < recomputed (a rebuild fixes these)
  uint64_t highest_cluster = 0;       // highest cluster in use or with a refcount
  bool rebuild = false;               // a used cluster has no refcount: patching cannot fix it
  uint64_t incomplete_snapshots = 0;  // v3 snapshot entries complete_snapshot_table() is to complete
};

// QEMU's compare_refcounts(): stored against recomputed counts. With `fix` the
// mismatches it may fix are changed in `stored` (write_back() makes them real):
// leaks with kLeaks and kAll, too-low refcounts with kAll. A used cluster whose
// stored refcount is 0 always sets tally.rebuild.
Status compare_refcounts(StoredRefcounts& stored, const ClusterCounts& counts, Repair fix, CheckTally& tally,
                         std::vector<std::string>& messages);

// QEMU's check_oflag_copied(): COPIED on active L1 and L2 entries must be set
// exactly when the stored refcount is 1. Repairs (entry by entry) when `repair`.
Status check_copied(Qcow2Driver& d, StoredRefcounts& stored, bool repair, CheckTally& tally,
                    std::vector<std::string>& messages);

// Writes the L1/L2 entry fixes a WalkFixes::kPlan walk planned, then flushes.
Status apply_entry_fixes(Qcow2Driver& d, const RefcountWalk& walk);

// check -r: one repairing pass over an image opened writable with OpenOptions::repair.
// Rewrites the snapshot table of a v3 image with every entry's extra data completed as
// QEMU's check -r all does (64-bit VM state size, the disk size, icount -1), through
// the same atomic switch as snapshot create/delete. Needs correct refcounts (run it
// after repair_pass, on a fresh writable open); `d` is stale afterwards. Returns the
// number of entries completed.
Result<uint64_t> complete_snapshot_table(Qcow2Driver& d);

Status repair_pass(Qcow2Driver& d, Repair repair, uint64_t memory_limit, CheckTally& tally,
                   std::vector<std::string>& messages);

// One read-only pass: findings, counts and statistics into the report.
Status check_pass(Qcow2Driver& d, uint64_t memory_limit, CheckReport& report);

}  // namespace qcow
