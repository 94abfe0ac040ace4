// amend: change an existing qcow2 image's format options in place.
//
// Everything qemu-img amend changes (compat, refcount_bits, lazy_refcounts,
// backing_file, backing_fmt) and, beyond it, extended_l2=on|off without
// copying guest data: every L2 table reachable from the active and snapshot L1
// tables is rewritten in the other entry format into new clusters, then one
// header write switches to them (the commit point), then the old tables are
// freed. A crash before the commit leaves the old image (plus leaked clusters),
// after it the new one.
//
// Synchronous; opens the image writable and takes its exclusive lock, so it
// fails with kLocked while another process uses the image. Safe to call from
// any thread for different images.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

struct AmendOptions {
  std::optional<int> version;              // 2 (compat=0.10) or 3 (compat=1.1)
  std::optional<int> refcount_bits;        // 1..64, a power of two
  std::optional<bool> lazy_refcounts;
  std::optional<std::string> backing_file; // "" removes the backing file
  std::optional<std::string> backing_format;
  std::optional<bool> extended_l2;
  std::optional<std::string> data_file;    // new name of the external data file ("" removes the name)
  std::optional<bool> data_file_raw;       // only false (QEMU cannot set it on existing images either)
  bool force = false;                      // qemu-img's --force (accepted; nothing here needs it)
  // Passphrase of an encrypted (LUKS) image. Encrypted images take the changes that
  // leave guest data where it is (lazy_refcounts, refcount_bits, backing_file,
  // backing_format, compat=1.1); the others give kUnsupported.
  std::optional<std::string> key_secret;
  OverlapCheck overlap_check = OverlapCheck::kCached;  // checks on amend's writes
  // The most memory the L1 tables of the image and its snapshots may take while their
  // tables are rewritten (extended_l2, compat=0.10); more fails with kLimit.
  uint64_t memory_limit = uint64_t(1) << 30;
  std::function<void(double)> progress;    // fraction done, 0..1
  FileWrapFn wrap_file;                    // fault injection in tests
};

// Applies every option that is set, in one go; unset options keep their value.
// Errors: kUnsupported for changes the format cannot express (e.g. compat=0.10 with
// extended L2 or zstd), kInvalidArgument for bad values, kNotFound / kLocked as
// Image::open, plus any I/O or corruption error.
Status amend_image(const std::string& path, const AmendOptions& options);

}  // namespace qcow
