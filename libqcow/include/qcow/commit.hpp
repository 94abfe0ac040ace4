// commit: write an overlay's data into a backing file below it (qemu-img commit).
//
// qemu-img commit copies into BASE (the image's backing file, or a file
// further down the chain with -b) every range that a layer above BASE
// answers, so that BASE then reads what the image read; the intermediate
// layers are left as they are. Without -b and -d the image is emptied
// afterwards, so it reads through to BASE again. Two calls:
//
//   1. commit_into_base(top, base, base_layer, options): `top` is the image
//      opened read-only with its chain, `base` layer `base_layer` of that
//      chain opened again, writable. BASE grows to the image's size first if
//      it is smaller (as QEMU's commit job does). Ranges are rounded out to
//      BASE's allocation unit (a subcluster with extended L2 entries, a
//      cluster otherwise; 512 bytes for raw) and filled with BASE's own
//      content where nothing above it allocates, so no write makes BASE copy
//      the rest of a unit from its own backing file. Units that read as zeros
//      become zero writes (unmapping). Extended-L2 layers are walked per
//      subcluster, so only allocated subclusters are copied. BASE is flushed
//      at the end.
//   2. make_image_empty(image): every cluster of the image's active L1 table
//      becomes unallocated (reading from the backing file); clusters shared
//      with internal snapshots stay referenced by them.
//
// Crash safety: BASE is complete and flushed before step 2 starts, and a
// crash during step 2 leaves the image reading the same (each cluster either
// still holds the data or reads the identical data from BASE).
//
// Synchronous; uses the images only while it runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

struct CommitOptions {
  uint64_t rate_limit = 0;  // guest bytes per second written into BASE (0: no limit)
  // Called as the copy advances: bytes of the disk done, and the disk size.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct CommitStats {
  uint64_t bytes_written = 0;  // guest bytes written into BASE as data
  uint64_t bytes_zeroed = 0;   // guest bytes written into BASE as zeros
};

// Step 1 (see above). `top` must not be used to read BASE's ranges while BASE
// changes: only ranges answered above `base_layer` are read from it.
Result<CommitStats> commit_into_base(Image& top, Image& base, size_t base_layer, const CommitOptions& options = {});

// Step 2 (see above): `image` opened writable (its backing chain is not
// needed). Raw images have nothing to empty: kUnsupported.
Status make_image_empty(Image& image);

}  // namespace qcow
