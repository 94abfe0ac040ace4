// Opening the image a command writes (rebase, commit) the way qemu-img's
// img_open() does: --image-opts and secrets applied, the format named by -f,
// qemu-img's "Could not open 'FILE': ..." messages and its warning for a raw
// probe, and the -t cache mode.
#pragma once

#include <string>

#include "cli/options.hpp"
#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qimg {

// A -t/-T cache mode applied to images opened for writing: the library's cache
// mode, and for "unsafe" a wrapper that turns every flush into a no-op (the
// metadata write order stays the same; only the fdatasync calls are skipped, as
// in QEMU's cache=unsafe).
void apply_cache_choice(const CacheChoice& cache, qcow::OpenOptions* options);

struct WritableImage {
  qcow::Image image;
  std::string filename;       // the file (file.filename with --image-opts)
  qcow::OpenOptions options;  // as it was opened: secrets, cache mode, format
};

// Opens `arg` (a file name, or an option list with --image-opts) writable with
// format `format` ("" probes), with or without its backing chain.
qcow::Result<WritableImage> open_writable_image(const std::string& arg, const std::string& format,
                                                const CacheChoice& cache, bool open_backing);

}  // namespace qimg
