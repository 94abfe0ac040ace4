// rebase: give a qcow2 image another backing file (qemu-img rebase).
//
// Safe mode (the default) keeps the guest content: before the backing file
// changes, every range the image does not allocate itself and where its
// current backing chain reads differently from the new one is written into
// the image, with what the current chain reads. Two calls, in this order:
//
//   1. rebase_copy_differences(image, new_backing, options), with `image`
//      opened writable together with its current backing chain and
//      `new_backing` the new backing file opened read-only (nullptr: no
//      backing file, which copies everything the chain provides);
//   2. set_backing_file(image, name, format): flushes the image, then one
//      header write records the new name and format (the commit point).
//
// A crash during step 1 leaves the image reading as before (it only gains
// clusters holding what it already read); after step 2 it reads the same
// through the new backing file. Unsafe mode (-u) is step 2 alone, usually on
// an image opened without its backing chain.
//
// What is written is aligned to the image's allocation unit (a subcluster
// with extended L2 entries, a cluster otherwise), so no write makes the driver
// copy the rest of a unit from the old backing file; a unit that must change
// is filled from the old view as a whole. Units whose old content is all
// zeros are written as zeros (zero flags on version 3 images, so nothing is
// allocated for them). With Compress::kYes whole clusters are written
// compressed, where the image allocates nothing of the cluster; a cluster it
// partly allocates (extended L2) keeps its host cluster and gets the differing
// units uncompressed, as without compression.
//
// Synchronous; uses the images only while it runs.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

struct RebaseOptions {
  Compress compress = Compress::kNo;
  // The new backing file is this layer of the image's current chain
  // (Image::chain_info() index, >= 1; see find_backing_image() in
  // qcow/chain.hpp): ranges that this layer, or one below it, answers read
  // the same either way and are skipped without reading.
  std::optional<size_t> new_backing_layer;
  // Called as the walk advances: bytes of the disk done, and the disk size.
  std::function<void(uint64_t done, uint64_t total)> progress;
};

struct RebaseStats {
  uint64_t bytes_compared = 0;  // guest bytes read from both views
  uint64_t bytes_written = 0;   // guest bytes written as data
  uint64_t bytes_zeroed = 0;    // guest bytes written as zeros
};

// Step 1 (see above). A raw image, which allocates everything, needs nothing.
// Errors carry qemu-img's wording: "error while reading image metadata: ...",
// "error while reading from old backing file: ...", "error while reading from
// new backing file: ...", "Error while writing to COW image: ...".
Result<RebaseStats> rebase_copy_differences(Image& image, Image* new_backing, const RebaseOptions& options = {});

// Step 2: records `backing_file` (as given: a relative name is relative to the
// image's directory; "" removes the backing file and its format) and
// `backing_format` (nullopt: none recorded). The message of an error is what
// qemu-img prints after "Could not change the backing file to 'NAME': ":
// kUnsupported "Operation not supported" (raw images), kInvalidArgument
// "backing format must be specified" (a name without a format), "Invalid
// argument" (a format without a name, a name longer than 1023 bytes, an image
// whose data file is raw), kNoSpace "No space left in the file header" (the
// header, its extensions and the name do not fit in the first cluster); other
// errors (I/O) as they come. The image's open backing chain stays the old one:
// close the image afterwards.
Status set_backing_file(Image& image, const std::string& backing_file, const std::optional<std::string>& backing_format);

}  // namespace qcow
