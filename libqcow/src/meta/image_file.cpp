#include "meta/image_file.hpp"

#include <fmt/format.h>

namespace qcow {

ImageFile::ImageFile(File* file, OverlapCheck level)
    : file_(file), level_(level), mask_(overlap_mask(level)), map_(512) {}

Status ImageFile::before_write() const {
  if (sticky_.is_ok()) return Status::ok();
  Status s = sticky_;
  return s.prepend(fmt::format("{}: an earlier write or flush failed, so nothing more is written: ", path()));
}

// The first failure of the host file stays: see the class comment.
Status ImageFile::after(Status s) {
  if (!s.is_ok() && sticky_.is_ok()) sticky_ = s;
  return s;
}

Status ImageFile::refuse_overlap(uint64_t offset, uint64_t length, StructureMask mask, const char* purpose) {
  if (!mask) return Status::ok();
  auto hit = map_.find(offset, length, mask);
  if (!hit) return Status::ok();
  std::string what = fmt::format("Preventing invalid write on metadata (overlaps with {} at {:#x}; {} at {:#x}, {} bytes)",
                                 structure_name(hit->structure), hit->offset, purpose, offset, length);
  if (on_corruption_) return on_corruption_(what);
  return Status::corrupt(fmt::format("{}: {}", path(), what));
}

Status ImageFile::write_metadata(Structure what, uint64_t offset, std::span<const uint8_t> bytes) {
  return write_metadata(structure_bit(what), structure_name(what), offset, bytes);
}

Status ImageFile::write_metadata(StructureMask ignored, const char* what, uint64_t offset, std::span<const uint8_t> bytes) {
  return guarded(mask_ & ~ignored, what, offset, bytes.size(), [&] { return file_->write_at(offset, bytes); });
}

Status ImageFile::write_data(uint64_t offset, std::span<const uint8_t> bytes) {
  return guarded_data("guest data", offset, bytes.size(), [&](File& f) { return f.write_at(offset, bytes); });
}

Status ImageFile::zero_data(uint64_t offset, uint64_t length) {
  return guarded_data("zeroed guest data", offset, length, [&](File& f) { return f.zero_range(offset, length); });
}

Status ImageFile::allocate_data(uint64_t offset, uint64_t length) {
  return guarded_data("reserved guest data", offset, length, [&](File& f) { return f.allocate(offset, length); });
}

Status ImageFile::resize_data(uint64_t size) {
  if (!data_) return Status::internal("resize_data without an external data file");
  return guarded_data("data file length", size, 0, [&](File& f) { return f.truncate(size); });
}

// The data file first: what the image file's metadata maps must be durable before it.
Status ImageFile::flush_data() {
  if (!data_ || !data_pending_) return Status::ok();
  QCOW_TRY(after(data_->flush()));
  data_pending_ = false;
  return Status::ok();
}

Status ImageFile::check_free(uint64_t offset, uint64_t length, const char* purpose) {
  return refuse_overlap(offset, length, mask_, purpose);
}

Status ImageFile::grow(uint64_t size) {
  QCOW_TRY(before_write());
  QCOW_ASSIGN_OR_RETURN(uint64_t current, file_->size());
  if (size <= current) return Status::ok();
  QCOW_TRY(after(file_->truncate(size)));
  pending_ = true;
  return Status::ok();
}

Status ImageFile::shrink(uint64_t size) {
  QCOW_TRY(before_write());
  QCOW_ASSIGN_OR_RETURN(uint64_t current, file_->size());
  if (size >= current) return Status::ok();
  QCOW_TRY(refuse_overlap(size, current - size, mask_, "file truncation"));
  QCOW_TRY(after(file_->truncate(size)));
  pending_ = true;
  return Status::ok();
}

Status ImageFile::barrier() {
  QCOW_TRY(before_write());
  QCOW_TRY(flush_data());
  if (!pending_) return Status::ok();
  QCOW_TRY(after(file_->flush()));
  pending_ = false;
  return Status::ok();
}

Status ImageFile::flush() {
  QCOW_TRY(before_write());
  QCOW_TRY(flush_data());
  QCOW_TRY(after(file_->flush()));
  pending_ = false;
  return Status::ok();
}

}  // namespace qcow
