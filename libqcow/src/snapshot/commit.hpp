// Changing which L1 tables an image has (the active one and the snapshots'), and
// its virtual size, in one atomic step: the engine of snapshot create, delete and
// apply (snapshot/snapshot.cpp).
//
// qcow2 keeps two facts about a shared cluster in two places: its refcount (in a
// refcount block) and the COPIED flag of the active L1/L2 entries that point at it
// (set exactly when the refcount is 1; qemu-img check reports any mismatch as a
// corruption). Creating or deleting a snapshot changes both, and no order of two
// in-place writes keeps them in step at every instant. So nothing is changed in
// place: every structure that changes is written anew in clusters that are free
// before and after the change (the active L1/L2 tables whose COPIED flags change, new L1 tables,
// the snapshot table, the refcount blocks that change and a refcount table:
// ShadowRefcounts), made durable, and then one header write of the fields that
// name them (size, L1 table, refcount table, snapshot table: bytes 24 to 71, inside
// the first sector) switches the image over. A crash before that write leaves the
// image as it was (only free clusters were written), after it the new one, with
// the replaced structures free and no leak.
//
// Refcounts follow QEMU's qcow2_update_snapshot_refcount(): every L1 table that
// reaches an L2 table adds one to it, and every L2 entry reached through an L1
// table adds one to its host cluster(s), once per L1 table.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "format/snapshot_table.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

struct L1Change {
  // The entries (L2 table offsets; flags are recomputed) of the L1 table the image
  // reads after the change; nullopt keeps the current table's.
  std::optional<std::vector<uint64_t>> active;
  // The L1 table size of a new active table (at least what `size` needs).
  uint32_t active_l1_size = 0;
  uint64_t size = 0;  // the virtual size afterwards
  // The snapshot table afterwards, in order. The entry at `copy_of_active` (if any) is
  // new: it gets an L1 table written by the change with the active image's L2 tables.
  std::vector<SnapshotEntry> snapshots;
  std::optional<size_t> copy_of_active;
  // Snapshots of the current table that the change drops (their L1 tables are freed).
  std::vector<SnapshotEntry> dropped;
};

// Applies `change` to an image opened writable (flushed first). On success the
// driver's in-memory state is stale: the caller abandons it. On failure before the
// commit the image is unchanged (the file is cut back to its old length).
Status commit_l1_change(Qcow2Driver& d, const L1Change& change);

}  // namespace qcow
