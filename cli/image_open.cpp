#include "cli/image_open.hpp"

#include <cstring>

#include <fmt/format.h>

#include "cli/secrets.hpp"

namespace qimg {

std::string could_not_open(const std::string& filename, const qcow::Status& status) {
  std::string reason = status.message();
  if (reason.rfind(filename + ": ", 0) == 0) reason.erase(0, filename.size() + 2);
  if (status.saved_errno() != 0 && reason.rfind("open ", 0) == 0) {
    // The host file itself could not be opened: qemu's file driver names it again.
    reason = fmt::format("Could not open '{}': {}", filename, std::strerror(status.saved_errno()));
  } else if (status.code() == qcow::ErrorCode::kCorrupt && reason.find("bad magic") != std::string::npos) {
    reason = "Image is not in qcow2 format";
  }
  return fmt::format("Could not open '{}': {}", filename, reason);
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

}  // namespace qimg
