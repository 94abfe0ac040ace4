// Status and Result<T>: how every libqcow call reports failure.
//
// libqcow never throws across its API. A Status is an error code, a one-line
// message that names the file, structure and offset involved, and the saved
// errno for I/O failures. The OK state holds no allocation, so success costs
// nothing (the leveldb Status idea). Result<T> carries a value or a Status;
// C++20 has no std::expected, so this is the small one we need.
//
// Thread-safety: value types; no shared state.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace qcow {

enum class ErrorCode {
  kOk = 0,
  kIo,               // the host file failed (errno saved)
  kCorrupt,          // on-disk data violates the format
  kUnsupported,      // valid but not implemented / unknown incompatible feature
  kInvalidArgument,  // caller's mistake
  kNotFound,         // file or snapshot missing
  kNoSpace,          // ENOSPC, or an offset limit of the format reached
  kLimit,            // a size read from disk exceeds a fixed bound
  kReadOnly,         // write attempted on a read-only or corrupt image
  kLocked,           // another process holds a conflicting lock
  kInternal,         // a bug: an invariant broke
};

class [[nodiscard]] Status {
 public:
  Status() = default;
  static Status ok() { return {}; }
  static Status error(ErrorCode code, std::string message, int saved_errno = 0);
  static Status io(std::string message, int saved_errno) { return error(ErrorCode::kIo, std::move(message), saved_errno); }
  static Status corrupt(std::string message) { return error(ErrorCode::kCorrupt, std::move(message)); }
  static Status unsupported(std::string message) { return error(ErrorCode::kUnsupported, std::move(message)); }
  static Status invalid(std::string message) { return error(ErrorCode::kInvalidArgument, std::move(message)); }
  static Status limit(std::string message) { return error(ErrorCode::kLimit, std::move(message)); }
  static Status internal(std::string message) { return error(ErrorCode::kInternal, std::move(message)); }

  bool is_ok() const { return rep_ == nullptr; }
  explicit operator bool() const { return is_ok(); }
  ErrorCode code() const { return rep_ ? rep_->code : ErrorCode::kOk; }
  int saved_errno() const { return rep_ ? rep_->saved_errno : 0; }
  // The message without a prefix; "ok" for success.
  std::string message() const { return rep_ ? rep_->message : std::string("ok"); }
  // Adds context in front ("file.qcow2: " + message) while the error propagates.
  Status& prepend(std::string_view context);
  // Returns *this (for chaining), ignoring the result deliberately.
  void ignore() const {}

 private:
  struct Rep {
    ErrorCode code;
    std::string message;
    int saved_errno;
  };
  std::shared_ptr<const Rep> rep_;
};

// A value or the Status that explains why there is none. value(), operator*
// and operator-> require is_ok() (otherwise std::bad_variant_access is
// thrown: a caller bug); status() is OK exactly when a value is held.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}            // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {}     // NOLINT: implicit by design
  bool is_ok() const { return v_.index() == 0; }
  explicit operator bool() const { return is_ok(); }
  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  Status status() const { return is_ok() ? Status::ok() : std::get<1>(v_); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace qcow

#define QCOW_CONCAT_INNER(a, b) a##b
#define QCOW_CONCAT(a, b) QCOW_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when expr fails.
#define QCOW_TRY(expr)                              \
  do {                                              \
    ::qcow::Status qcow_try_status_ = (expr);       \
    if (!qcow_try_status_.is_ok()) return qcow_try_status_; \
  } while (0)

// `QCOW_ASSIGN_OR_RETURN(auto x, f());` declares x from a Result or returns its Status.
#define QCOW_ASSIGN_OR_RETURN(lhs, expr) QCOW_ASSIGN_OR_RETURN_IMPL(QCOW_CONCAT(qcow_res_, __LINE__), lhs, expr)
#define QCOW_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.is_ok()) return tmp.status();           \
  lhs = std::move(tmp).value()
