// Internal snapshots of qcow2 images: create, delete and apply (qemu-img snapshot
// -c, -d and -a). Listing them is Image::info().snapshots.
//
// Each call opens the image writable (taking its exclusive lock; the backing chain
// is not opened), makes the change and closes it. The change is crash-safe: every
// structure it touches is written anew in fresh clusters and one header write
// commits them all, so a crash leaves the image as before or as after, with no
// corruption and no leaked clusters either way (qemu-img check is clean). The
// snapshots are QEMU's: qemu-img lists, reads, applies and deletes the ones made
// here, and these calls handle the ones QEMU made, extended L2 images included.
//
// Thread-safety: independent calls on different images may run concurrently.
#pragma once

#include <optional>
#include <string>

#include "qcow/image.hpp"
#include "qcow/info.hpp"
#include "qcow/status.hpp"

namespace qcow {

struct SnapshotOptions {
  std::optional<std::string> key_secret;               // passphrase of an encrypted image
  OverlapCheck overlap_check = OverlapCheck::kCached;  // checks on the writes
  FileWrapFn wrap_file;                                // fault injection and recording in tests
};

// How a snapshot is looked up: by id first, then by name (QEMU's
// find_snapshot_by_id_or_name, what qemu-img snapshot -a does), or by name only
// (qemu-img snapshot -d). The first match counts.
enum class SnapshotMatch { kIdOrName, kName };

// Records the current state as a snapshot called `name` (names need not be unique,
// as in QEMU), with the next free numeric id (one more than the largest), the
// current time, the virtual size as its disk size and no VM state, and returns it.
// Errors: kUnsupported (not a qcow2 image), kLimit (a refcount would exceed its
// width, e.g. with refcount_bits=1; 65536 snapshots; a snapshot table over 64 MiB),
// kInvalidArgument (a name longer than 65535 bytes), kLocked, kNotFound, kIo,
// kCorrupt.
Result<SnapshotInfo> create_snapshot(const std::string& path, const std::string& name, const SnapshotOptions& o = {});

// Deletes a snapshot; what only it referenced is freed and the active image's COPIED
// flags follow (QEMU's qcow2_snapshot_delete). kNotFound when no snapshot matches.
Status delete_snapshot(const std::string& path, const std::string& which, SnapshotMatch match,
                       const SnapshotOptions& o = {});

// Makes the snapshot's state the current one, its disk size included; the snapshot
// stays (QEMU's qcow2_snapshot_goto). kNotFound when no snapshot matches;
// kUnsupported when a compat=0.10 image would change its size (QEMU cannot either).
Status apply_snapshot(const std::string& path, const std::string& which, SnapshotMatch match,
                      const SnapshotOptions& o = {});

}  // namespace qcow
