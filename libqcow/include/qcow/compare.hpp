// Comparing the guest content of two images (qemu-img compare).
//
// Both images are walked with block status, as QEMU 7.2 walks them: ranges
// that read as zeros in both are skipped without reading, a range allocated
// in one image and not in the other is read only there (and must be zeros),
// and only ranges with data in both are read from both. Data is read in
// pieces of at most 2 MiB. The first difference is reported at the start of
// its 512-byte sector (relative to where the piece started, as QEMU reports
// it). The part of the larger image beyond the smaller one's end must read as
// zeros.
//
// Strict mode also compares what block status says (allocated, zero, data,
// host offset valid, end of image) for every range, with QEMU's run lengths
// (a qcow2 run ends at its L2 table's end, a compressed cluster is its own
// run), and refuses images of different sizes.
//
// Synchronous; reads through each image's backing chain. Not thread-safe for
// the images passed (they are used by this call only while it runs).
#pragma once

#include <cstdint>
#include <functional>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

enum class CompareMode { kNormal, kStrict };

struct CompareReport {
  enum class Outcome {
    kIdentical,
    kContentMismatch,     // guest bytes differ at `offset`
    kStatusMismatch,      // strict: block status differs at `offset`
    kSizeMismatch,        // strict: the sizes differ (nothing was read)
    kBlockStatusError,    // block status of image `failed_image` failed (`error`)
    kReadError,           // reading image `failed_image` at `offset` failed (`error`)
  };
  Outcome outcome = Outcome::kIdentical;
  uint64_t offset = 0;
  // The common part was identical and the sizes differ: qemu-img warns before
  // it checks the rest of the larger image (so the warning precedes a
  // mismatch or an error found there).
  bool sizes_differ = false;
  int failed_image = 0;  // 0: the first image, 1: the second (errors only)
  Status error;          // errors only
};

// Called after every step with the bytes compared so far and the total
// (the larger size); for progress output.
using CompareProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// Compares `a` with `b`. Failures of either image's block status or reads are
// reported in the CompareReport (as qemu-img reports them, with the image
// that failed); the Result fails only for kLimit (out of memory) or
// kInternal.
Result<CompareReport> compare_images(Image& a, Image& b, CompareMode mode, const CompareProgressFn& progress = {});

}  // namespace qcow
