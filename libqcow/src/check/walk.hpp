// Walks every structure of a qcow2 image and recomputes the reference count of
// each host cluster (for check and for rebuilding refcounts of dirty images).
//
// The walk follows QEMU's calculate_refcounts() (block/qcow2-refcount.c) so
// that counts, findings and their numbers agree with qemu-img check: header,
// active L1/L2 (with allocation and fragmentation statistics), snapshot L1/L2,
// snapshot table, refcount table and blocks, encryption header, bitmaps.
// Tables are read from the file directly (zero-filled past its end, as QEMU's
// file driver reads), never through the driver's caches.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "check/cluster_counts.hpp"
#include "map/l2_entry.hpp"
#include "qcow/check.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

// A planned rewrite of one table entry (check -r all), applied by apply_entry_fixes().
struct L1Fix {
  uint64_t table_offset;  // L1 table (active or snapshot)
  uint64_t index;
  uint64_t entry;         // new value
};
struct L2Fix {
  uint64_t table_offset;  // L2 table
  uint64_t index;
  L2Entry entry;          // new value (bitmap written only with extended L2)
};

struct RefcountWalk {
  explicit RefcountWalk(uint64_t memory_limit = kDefaultCheckMemoryLimit) : counts(memory_limit) {}
  ClusterCounts counts;                  // recomputed refcount per host cluster
  std::vector<std::string> messages;     // one line per finding, QEMU's wording where it has one
  uint64_t corruptions = 0;              // findings that stay (not planned for repair)
  uint64_t refblock_corruptions = 0;     // of these, the ones a refcount rebuild fixes
  uint64_t check_errors = 0;
  uint64_t planned_fixes = 0;            // findings the L1/L2 fixes below repair
  uint64_t incomplete_snapshots = 0;     // kPlan: v3 snapshot entries to complete (complete_snapshot_table)
  uint64_t allocated_clusters = 0, compressed_clusters = 0, fragmented_clusters = 0;  // active L1 only
  SubclusterCounts subclusters;          // active L1 only, extended L2 only
  std::vector<L1Fix> l1_fixes;
  std::vector<L2Fix> l2_fixes;
  bool rebuild = false;                  // refcount table/blocks too damaged to patch
};

enum class WalkRefcountStructures { kInclude, kExclude };
// kPlan: the caller repairs (check -r all). Fixable findings become L1Fix/L2Fix
// entries instead of corruptions, and references the fixes drop are not counted.
enum class WalkFixes { kReport, kPlan };

// Memory follows the clusters the metadata references (ClusterCounts), up to the
// RefcountWalk's limit: past it the walk fails with kLimit.
Status walk_refcounts(Qcow2Driver& d, WalkRefcountStructures mode, RefcountWalk& out,
                      WalkFixes fixes = WalkFixes::kReport);

}  // namespace qcow
