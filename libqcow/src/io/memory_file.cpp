// MemoryFile: a File kept in a std::string, for tests and fuzzing.
//
// Punched holes really read as zeros here, and there are no holes to report:
// probe_data calls everything up to EOF data, and allocated_bytes is the size.

#include <algorithm>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#include <fmt/format.h>

#include "qcow/file.hpp"

namespace qcow {
namespace {

// Keeps a corrupt offset from asking std::string for exabytes.
constexpr uint64_t kMaxMemoryFileSize = uint64_t{1} << 40;

class MemoryFile final : public File {
 public:
  MemoryFile(std::string name, std::string initial) : name_(std::move(name)), data_(std::move(initial)) {}

  Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
    if (offset >= data_.size() || buf.empty()) return size_t{0};
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), data_.size() - offset));
    std::memcpy(buf.data(), data_.data() + offset, n);
    return n;
  }

  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
    if (buf.empty()) return Status::ok();
    QCOW_TRY(grow_to(offset, buf.size(), "write"));
    std::memcpy(data_.data() + offset, buf.data(), buf.size());
    return Status::ok();
  }

  Status flush() override { return Status::ok(); }
  Result<uint64_t> size() override { return static_cast<uint64_t>(data_.size()); }

  Status truncate(uint64_t size) override {
    if (size <= data_.size()) {
      data_.resize(static_cast<size_t>(size));
      return Status::ok();
    }
    return grow_to(size, 0, "truncate");
  }

  Status allocate(uint64_t offset, uint64_t len) override {
    if (len == 0) return Status::ok();
    return grow_to(offset, len, "allocate");
  }

  Status punch_hole(uint64_t offset, uint64_t len) override {
    if (offset >= data_.size()) return Status::ok();
    size_t n = static_cast<size_t>(std::min<uint64_t>(len, data_.size() - offset));
    std::memset(data_.data() + offset, 0, n);
    return Status::ok();
  }

  Result<uint64_t> allocated_bytes() override { return static_cast<uint64_t>(data_.size()); }

  Result<bool> probe_data(uint64_t offset, uint64_t* run_end) override {
    if (offset >= data_.size()) {
      *run_end = std::numeric_limits<uint64_t>::max();  // past EOF: zeros forever
      return false;
    }
    *run_end = data_.size();
    return true;
  }

  const std::string& path() const override { return name_; }

 private:
  // Extends the data (zero-filled) so [offset, offset+len) exists.
  Status grow_to(uint64_t offset, uint64_t len, std::string_view what) {
    if (offset > kMaxMemoryFileSize || len > kMaxMemoryFileSize - offset)
      return Status::error(ErrorCode::kNoSpace,
                           fmt::format("{}: {} at offset {:#x} length {:#x}: beyond the memory file limit", name_,
                                       what, offset, len),
                           ENOSPC);
    uint64_t end = offset + len;
    if (end <= data_.size()) return Status::ok();
    try {
      data_.resize(static_cast<size_t>(end), '\0');
    } catch (const std::bad_alloc&) {
      return Status::error(ErrorCode::kNoSpace,
                           fmt::format("{}: {} at offset {:#x}: out of memory", name_, what, offset), ENOMEM);
    } catch (const std::length_error&) {
      return Status::error(ErrorCode::kNoSpace,
                           fmt::format("{}: {} at offset {:#x}: too large", name_, what, offset), ENOMEM);
    }
    return Status::ok();
  }

  std::string name_;
  std::string data_;
};

}  // namespace

std::unique_ptr<File> make_memory_file(std::string name, std::string initial) {
  return std::make_unique<MemoryFile>(std::move(name), std::move(initial));
}

}  // namespace qcow
