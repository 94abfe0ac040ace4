#include "qcow/status.hpp"

#include <cstring>

#include "codec/bytes.hpp"

namespace qcow {

Status Status::error(ErrorCode code, std::string message, int saved_errno) {
  Status s;
  s.rep_ = std::make_shared<const Rep>(Rep{code, std::move(message), saved_errno});
  return s;
}

Status& Status::prepend(std::string_view context) {
  if (rep_) {
    std::string m(context);
    m += rep_->message;
    rep_ = std::make_shared<const Rep>(Rep{rep_->code, std::move(m), rep_->saved_errno});
  }
  return *this;
}

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
