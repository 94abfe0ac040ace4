// File's default operations (see qcow/file.hpp).
#include <algorithm>
#include <vector>

#include "io/zeros.hpp"
#include "qcow/file.hpp"

namespace qcow {

std::span<const uint8_t> zero_buffer() {
  static const std::vector<uint8_t> zeros(1 << 20);
  return zeros;
}

Status File::zero_range(uint64_t offset, uint64_t len) {
  return write_zeros(offset, len, [this](uint64_t o, std::span<const uint8_t> z) { return write_at(o, z); });
}

}  // namespace qcow
