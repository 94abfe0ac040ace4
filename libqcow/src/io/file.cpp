// File's default operations (see qcow/file.hpp).
#include <algorithm>
#include <vector>

#include "qcow/file.hpp"

namespace qcow {

Status File::zero_range(uint64_t offset, uint64_t len) {
  static const std::vector<uint8_t> zeros(64 << 10);
  while (len) {
    const uint64_t n = std::min<uint64_t>(len, zeros.size());
    QCOW_TRY(write_at(offset, std::span<const uint8_t>(zeros.data(), n)));
    offset += n;
    len -= n;
  }
  return Status::ok();
}

}  // namespace qcow
