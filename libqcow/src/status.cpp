#include "qcow/status.hpp"

#include <cstring>


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

}  // namespace qcow
