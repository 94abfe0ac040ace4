// Opening a source image the way qemu-img's img_open() does for commands that
// read guest data (compare, measure): --image-opts and secrets applied, the
// format named by -f, and failures reported as qemu-img reports them:
//   Could not open 'FILE': Could not open 'FILE': No such file or directory
//   Could not open 'FILE': Image is not in qcow2 format
//   Could not open 'FILE': Unknown driver 'vmdk'
//   Could not open 'FILE': Parameter 'encrypt.key-secret' is required for cipher
#pragma once

#include <string>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qimg {

// `filename` and `format` as given on the command line (an --image-opts list,
// an empty format to probe); `options` supplies the rest (force_share, cache,
// snapshot). An encrypted image needs its key here, as in qemu-img.
qcow::Result<qcow::Image> open_source_image(std::string filename, std::string format, qcow::OpenOptions options);

// "Could not open 'FILE': <reason>" for a failed qcow::Image::open of FILE.
std::string could_not_open(const std::string& filename, const qcow::Status& status);
// The <reason> alone, as qemu-img words it: "Could not open 'FILE': No such file or
// directory", "Image is not in qcow2 format", "Could not open backing file: <reason>".
std::string open_failure_reason(const std::string& filename, const qcow::Status& status);

}  // namespace qimg

namespace qimg {

// qemu-img's three-line warning when an image opened for writing was probed as
// raw (no -f): "WARNING: Image format was not specified for 'FILE' and probing
// guessed raw. ..." on stderr.
void warn_if_probed_raw(const std::string& filename, const std::string& format, const qcow::Image& image);

}  // namespace qimg
