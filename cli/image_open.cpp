#include "cli/image_open.hpp"

#include <cstdio>
#include <cstring>

#include <fmt/format.h>

#include "cli/secrets.hpp"

namespace qimg {

std::string open_failure_reason(const std::string& filename, const qcow::Status& status) {
  std::string reason = status.message();
  if (!filename.empty() && reason.rfind(filename + ": ", 0) == 0) reason.erase(0, filename.size() + 2);
  // The library already said it in qemu-img's words (an external data file that is missing).
  const std::string named = fmt::format("Could not open '{}': ", filename);
  if (!filename.empty() && reason.rfind(named, 0) == 0) reason.erase(0, named.size());
  // A backing file that failed: qemu-img says why in the same words, one level down.
  static const std::string kBacking = "could not open backing file: ";
  if (reason.rfind(kBacking, 0) == 0) {
    std::string rest = reason.substr(kBacking.size());
    const size_t colon = rest.find(": ");
    const std::string backing = colon == std::string::npos ? std::string() : rest.substr(0, colon);
    return "Could not open backing file: " +
           open_failure_reason(backing, qcow::Status::error(status.code(), rest, status.saved_errno()));
  }
  if (status.saved_errno() != 0 && reason.rfind("open ", 0) == 0) {
    // The host file itself could not be opened: qemu's file driver names it.
    reason = fmt::format("Could not open '{}': {}", filename, std::strerror(status.saved_errno()));
  } else if (status.code() == qcow::ErrorCode::kCorrupt && reason.find("bad magic") != std::string::npos) {
    reason = "Image is not in qcow2 format";
  }
  return reason;
}

std::string could_not_open(const std::string& filename, const qcow::Status& status) {
  return fmt::format("Could not open '{}': {}", filename, open_failure_reason(filename, status));
}

qcow::Result<qcow::Image> open_source_image(std::string filename, std::string format, qcow::OpenOptions options) {
  QCOW_TRY(apply_secret_options(&filename, &format, &options));
  if (!format.empty()) {
    auto f = qcow::parse_format(format);
    if (!f) return qcow::Status::invalid(fmt::format("Could not open '{}': Unknown driver '{}'", filename, format));
    options.format = *f;
  }
  auto image = qcow::Image::open(filename, options);
  if (!image) return qcow::Status::error(image.status().code(), could_not_open(filename, image.status()));
  if (!options.key_secret && image->info().encrypt_format != qcow::EncryptionFormat::kNone)
    return qcow::Status::invalid(
        fmt::format("Could not open '{}': Parameter 'encrypt.key-secret' is required for cipher", filename));
  return image;
}

void warn_if_probed_raw(const std::string& filename, const std::string& format, const qcow::Image& image) {
  if (!format.empty() || image.format() != qcow::Format::kRaw) return;
  std::fflush(stdout);
  std::fprintf(stderr,
               "WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
               "         Automatically detecting the format is dangerous for raw images, write operations on block 0 "
               "will be restricted.\n"
               "         Specify the 'raw' format explicitly to remove the restrictions.\n",
               filename.c_str());
}

}  // namespace qimg
