// Creation options: the checks qemu-img makes of a creation request, with its
// messages, in its order (one place for `qimg create`, `convert -O`, bench and
// Image::create).
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "qcow/image.hpp"

namespace qcow {
namespace {

constexpr const char* kNeedsV3 = "compatibility level 1.1 and above (use version=v3 or greater)";

Status validate_qcow2(const CreateOptions& o) {
  if (o.version != 2 && o.version != 3) return Status::invalid("compat must be 0.10 or 1.1");
  if (o.extended_l2 && o.version < 3)
    return Status::invalid(fmt::format("Extended L2 entries are only supported with {}", kNeedsV3));
  if (!is_power_of_two(o.cluster_size) || o.cluster_size < 512 || o.cluster_size > (2u << 20))
    return Status::invalid("Cluster size must be a power of two between 512 and 2048k");
  if (o.extended_l2 && o.cluster_size < 512 * 32)
    return Status::invalid("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  if (!o.backing_file.empty() && o.preallocation != Preallocation::kOff && !o.extended_l2)
    return Status::invalid("Backing file and preallocation can only be used at the same time if extended_l2 is on");
  if (!o.backing_format.empty() && o.backing_file.empty())
    return Status::invalid("Backing format cannot be used without backing file");
  if (!o.backing_format.empty() && !parse_format(o.backing_format))
    return Status::invalid(fmt::format("Unknown backing file format '{}'", o.backing_format));
  if (!o.data_file.empty() && o.version < 3)
    return Status::invalid(fmt::format("External data files are only supported with {}", kNeedsV3));
  if (o.data_file_raw && o.data_file.empty()) return Status::invalid("data-file-raw requires data-file");
  if (o.data_file_raw && !o.backing_file.empty())
    return Status::invalid("Backing file and data-file-raw cannot be used at the same time");
  if (o.lazy_refcounts && o.version < 3)
    return Status::invalid(fmt::format("Lazy refcounts only supported with {}", kNeedsV3));
  if (o.refcount_bits < 1 || o.refcount_bits > 64 || !is_power_of_two(uint64_t(o.refcount_bits)))
    return Status::invalid("Refcount width must be a power of two and may not exceed 64 bits");
  if (o.version < 3 && o.refcount_bits != 16)
    return Status::invalid(fmt::format("Different refcount widths than 16 bits require {}", kNeedsV3));
  if (o.version < 3 && o.compression_type != CompressionType::kZlib)
    return Status::invalid(fmt::format("Non-zlib compression type is only supported with {}", kNeedsV3));
  if (o.encrypt.format == "aes")
    return Status::invalid("Use of AES-CBC encrypted qcow2 images is no longer supported: use encrypt.format=luks");
  if (!o.encrypt.format.empty() && o.encrypt.format != "luks")
    return Status::invalid(fmt::format("Parameter 'encrypt.format' does not accept value '{}'", o.encrypt.format));
  return Status::ok();
}

}  // namespace

Status validate_create_options(const CreateOptions& o) {
  if (o.format == Format::kRaw) {
    if (o.preallocation == Preallocation::kMetadata) return Status::invalid("Unsupported preallocation mode: metadata");
    if (!o.backing_file.empty()) return Status::invalid("raw images cannot have a backing file");
    return Status::ok();
  }
  return validate_qcow2(o);
}

}  // namespace qcow
