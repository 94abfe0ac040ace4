// Raw images: the file is the disk. Block status comes from SEEK_DATA/SEEK_HOLE.
// As in QEMU, the disk is the file rounded up to whole 512-byte sectors: the
// bytes past the end of a file whose length is not a sector multiple read as
// zeros (and a write there extends the file).
#include <fmt/format.h>

#include <cstring>

#include "driver.hpp"
#include "io/zeros.hpp"

namespace qcow {
namespace {

class RawDriver final : public Driver {
 public:
  RawDriver(std::unique_ptr<File> f, bool writable, uint64_t file_length)
      : file_(std::move(f)), writable_(writable), size_(sector_round_up(file_length)), file_length_(file_length) {}
  Format format() const override { return Format::kRaw; }
  uint64_t size() const override { return size_; }
  const std::string& path() const override { return file_->path(); }
  bool writable() const override { return writable_; }

  Status check(uint64_t off, uint64_t len, bool write) const {
    if (write && !writable_) return Status::error(ErrorCode::kReadOnly, fmt::format("{}: image is opened read-only", path()));
    if (off > size_ || len > size_ - off)
      return Status::invalid(fmt::format("{}: request [{:#x}, +{:#x}) is beyond the end of the image ({} bytes)", path(), off, len, size_));
    return Status::ok();
  }
  Status read(uint64_t off, std::span<uint8_t> buf) override {
    QCOW_TRY(check(off, buf.size(), false));
    QCOW_ASSIGN_OR_RETURN(size_t got, file_->read_at(off, buf));
    if (got < buf.size()) std::memset(buf.data() + got, 0, buf.size() - got);
    return Status::ok();
  }
  Status write(uint64_t off, std::span<const uint8_t> buf, Compress c) override {
    if (c == Compress::kYes) return Status::unsupported("raw images cannot store compressed data");
    QCOW_TRY(check(off, buf.size(), true));
    QCOW_TRY(file_->write_at(off, buf));
    file_length_ = std::max<uint64_t>(file_length_, off + buf.size());
    return Status::ok();
  }
  Status write_zeroes(uint64_t off, uint64_t len, Unmap unmap) override {
    QCOW_TRY(check(off, len, true));
    if (unmap == Unmap::kYes && file_->punch_hole(off, len).is_ok()) {
      uint64_t end = 0;
      auto d = file_->probe_data(off, &end);  // verify the hole really reads as zeros
      if (d && !*d && end >= off + len) return Status::ok();
    }
    return write_zeros(off, len, [this](uint64_t o, std::span<const uint8_t> z) { return file_->write_at(o, z); });
  }
  Status discard(uint64_t off, uint64_t len) override {
    QCOW_TRY(check(off, len, true));
    return file_->punch_hole(off, len);
  }
  Status flush() override { return writable_ ? file_->flush() : Status::ok(); }
  // QEMU's file driver: the file is cut or extended; the grown part is fallocated
  // (falloc) or written with zeros (full).
  Status resize(uint64_t n, const ResizeOptions& o) override {
    if (!writable_) return Status::error(ErrorCode::kReadOnly, fmt::format("{}: image is opened read-only", path()));
    if (n < size_ && o.shrink != Shrink::kYes)
      return Status::invalid(fmt::format("{}: shrinking needs Shrink::kYes", path()));
    if (o.preallocation == Preallocation::kMetadata) return Status::unsupported("Unsupported preallocation mode: metadata");
    const uint64_t old = file_length_;
    if (Status t = file_->truncate(n); !t.is_ok()) {
      if (!t.saved_errno()) return t;
      // qemu-img resize's wording (raw_co_truncate).
      return Status::error(t.code(), fmt::format("Could not resize file: {}", std::strerror(t.saved_errno())),
                           t.saved_errno());
    }
    if (n > old && o.preallocation == Preallocation::kFalloc) QCOW_TRY(file_->allocate(old, n - old));
    if (n > old && o.preallocation == Preallocation::kFull) QCOW_TRY(write_zeros(old, n - old, [this](uint64_t o, std::span<const uint8_t> z) { return file_->write_at(o, z); }));
    size_ = sector_round_up(n);
    file_length_ = n;
    return Status::ok();
  }
  Status close() override {
    if (closed_) return Status::ok();
    closed_ = true;
    Status s = flush();
    Status released = file_->close();
    return s.is_ok() ? released : s;
  }
  Result<LayerRun> layer_status(uint64_t off, uint64_t max_len) override {
    uint64_t end = 0;
    QCOW_ASSIGN_OR_RETURN(bool data, file_->probe_data(off, &end));
    LayerRun r;
    r.kind = data ? LayerRun::kData : LayerRun::kZero;
    r.length = std::min(max_len, std::max(end, off + 1) - off);
    r.host_offset = off;
    r.has_host = true;
    return r;
  }
  ImageInfo info() const override {
    ImageInfo i;
    i.filename = path();
    i.format = Format::kRaw;
    i.virtual_size = size_;
    i.file_length = file_length_;
    auto a = file_->allocated_bytes();
    i.actual_size = a ? *a : 0;
    return i;
  }
  Driver* backing() override { return nullptr; }

 private:
  static uint64_t sector_round_up(uint64_t n) { return n + (kSectorSize - n % kSectorSize) % kSectorSize; }
  static constexpr uint64_t kSectorSize = 512;

  std::unique_ptr<File> file_;
  bool writable_;
  bool closed_ = false;
  uint64_t size_;         // the virtual size: file_length_ rounded up to a sector
  uint64_t file_length_;
};

}  // namespace

Result<std::unique_ptr<Driver>> open_raw(std::unique_ptr<File> file, bool writable) {
  QCOW_ASSIGN_OR_RETURN(uint64_t size, file->size());
  return std::unique_ptr<Driver>(std::make_unique<RawDriver>(std::move(file), writable, size));
}

}  // namespace qcow
