#include "codec/bytes.hpp"

namespace qcow {

bool buffer_is_zero(const uint8_t* p, size_t len) {
  while (len && (reinterpret_cast<uintptr_t>(p) & 7)) {
    if (*p) return false;
    ++p; --len;
  }
  const uint64_t* w = reinterpret_cast<const uint64_t*>(p);
  while (len >= 64) {
    if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) return false;
    w += 8; len -= 64;
  }
  p = reinterpret_cast<const uint8_t*>(w);
  while (len--) if (*p++) return false;
  return true;
}

}  // namespace qcow
