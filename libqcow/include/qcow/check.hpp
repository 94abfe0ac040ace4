// Consistency check and repair of an image (qemu-img check).
//
// check_image() recomputes the reference count of every host cluster from all
// metadata and compares it with the stored refcounts; it also verifies the
// OFLAG_COPIED flags, reserved bits, alignment and extended-L2 bitmaps.
// Counts and their meaning follow qemu-img check, so the two agree on the
// same file. With Repair::kLeaks leaked clusters are freed; with Repair::kAll
// refcounts, COPIED flags and L2 entries are fixed too, and the refcount
// structures are rebuilt when they are too damaged to patch. After a repair
// the image is checked again and the report describes that second check (the
// *_fixed counts describe the repair).
//
// Synchronous; takes the image lock like Image::open (exclusive when
// repairing, shared otherwise, none with force_share), so it fails with
// kLocked while another process writes the image. Safe to call from any
// thread for different images.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

enum class Repair { kNone, kLeaks, kAll };

// The most memory check (and a refcount rebuild) uses to count references: 16 bits
// per host cluster that metadata references, in pages, so a sparse file of any length
// costs only what its metadata references. An image that needs more fails with kLimit.
inline constexpr uint64_t kDefaultCheckMemoryLimit = uint64_t(1) << 30;

struct CheckOptions {
  std::optional<Format> format;  // probed when empty
  Repair repair = Repair::kNone;
  bool force_share = false;      // -U: take no lock (read-only checks only)
  OverlapCheck overlap_check = OverlapCheck::kCached;  // for the writes of a repair
  uint64_t memory_limit = kDefaultCheckMemoryLimit;    // for counting references (see above)
  FileWrapFn wrap_file;          // decorates the image file (fault injection and recording in tests)
  bool open_data_file = true;    // false: an external data file stays closed (check reads no guest data)
};

// Extended L2 images only: subclusters of the active L2 tables.
struct SubclusterCounts {
  uint64_t allocated = 0;      // read from the host cluster (compressed clusters count here too)
  uint64_t zero = 0;           // read as zeros
  uint64_t unallocated = 0;    // read from the backing file
  uint64_t bitmap_errors = 0;  // L2 entries whose bitmap is invalid
};

struct CheckReport {
  std::string filename;
  std::string format;
  bool supported = true;       // false: the format has no checks (raw; qemu-img exits 63)
  uint64_t image_end_offset = 0;
  uint64_t total_clusters = 0;  // guest clusters
  uint64_t check_errors = 0;
  uint64_t corruptions = 0;
  uint64_t leaks = 0;
  uint64_t corruptions_fixed = 0;
  uint64_t leaks_fixed = 0;
  uint64_t allocated_clusters = 0;
  uint64_t fragmented_clusters = 0;
  uint64_t compressed_clusters = 0;
  bool extended_l2 = false;
  SubclusterCounts subclusters;
  // One line per finding and per repair, in qemu-img's wording where it has one
  // ("ERROR cluster 5 refcount=1 reference=2"). Repair lines come first.
  std::vector<std::string> messages;

  // qemu-img check's exit status: 0 clean, 1 check errors, 2 corruptions,
  // 3 leaks only, 63 no checks for this format.
  int exit_code() const;
};

// Checks (and with options.repair, repairs) the image at path. An error Status
// means the check could not run at all (the image does not open, I/O failed).
Result<CheckReport> check_image(const std::string& path, const CheckOptions& options);

}  // namespace qcow
