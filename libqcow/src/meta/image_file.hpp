// ImageFile: the only way a qcow2 layer changes its host file.
//
// Three guarantees live here, so no caller can forget them:
// - Overlap checks. A metadata write names the structure it writes and is
//   checked against every other registered structure; a guest-data write (and
//   a zeroed or reserved data range) is checked against all of them, at the
//   image's overlap-check level. A hit is refused, and the corruption handler
//   (the driver marks the image corrupt) decides the error returned.
// - Write ordering. barrier() makes every write so far durable, flushing only
//   when something was written since the last flush (QEMU's cache dependency
//   flushes, without redundant fdatasyncs).
// - Sticky errors. The first failed write, zero/allocate, truncate or flush is
//   latched: every later write, barrier and flush fails with it, so nothing
//   can report success, or write metadata that points at data whose write-back
//   failed. QEMU latches failed flushes the same way (file-posix's
//   page_cache_inconsistent). Reads keep working.
//
// Reads and the size come straight from the File (they change nothing).
//
// An image with an external data file (incompatible feature bit 2) keeps guest data in
// a second file: the data writes below go there, unchecked (it holds no metadata) but
// latched like every other write, and barrier()/flush() make the data file durable
// before the image file, so an L2 entry is never durable before the data it maps.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "meta/overlap.hpp"
#include "qcow/file.hpp"
#include "qcow/status.hpp"

namespace qcow {

class ImageFile {
 public:
  // Builds the Status a refused write returns; `what` describes the overlap.
  using CorruptionFn = std::function<Status(const std::string& what)>;

  // The cluster size is known once the header is parsed (set_cluster_size).
  ImageFile(File* file, OverlapCheck level);
  void set_cluster_size(uint64_t cluster_size) { map_.set_cluster_size(cluster_size); }
  // A read-only image checks nothing (and its structures need no registration).
  void disable_checks() { mask_ = 0; }

  File& file() const { return *file_; }  // for reads; writes must use the methods below
  // Guest data goes to `data` from now on (nullptr: back to the image file).
  void set_data_file(File* data) { data_ = data; }
  bool external_data() const { return data_ != nullptr; }
  File& data_file() const { return data_ ? *data_ : *file_; }  // for reads of guest data
  const std::string& path() const { return file_->path(); }
  Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) const { return file_->read_at(offset, buf); }
  Result<uint64_t> size() const { return file_->size(); }

  OverlapMap& overlaps() { return map_; }
  const OverlapMap& overlaps() const { return map_; }
  // Whether the level keeps track of a structure (registering the others is wasted work).
  bool tracks(Structure s) const { return mask_ & structure_bit(s); }
  OverlapCheck level() const { return level_; }
  void set_corruption_handler(CorruptionFn fn) { on_corruption_ = std::move(fn); }

  // A write of metadata structure `what` (checked against every other structure).
  Status write_metadata(Structure what, uint64_t offset, std::span<const uint8_t> bytes);
  // The same, ignoring all of `ignored` (repairs patch tables that may be active or a
  // snapshot's, as QEMU's check does).
  Status write_metadata(StructureMask ignored, const char* what, uint64_t offset, std::span<const uint8_t> bytes);
  // Guest data, and ranges of data clusters zeroed or reserved on the host (in the
  // external data file when there is one).
  Status write_data(uint64_t offset, std::span<const uint8_t> bytes);
  Status zero_data(uint64_t offset, uint64_t length);
  Status allocate_data(uint64_t offset, uint64_t length);
  // Sets the external data file's length (resize); an error without one.
  Status resize_data(uint64_t size);
  // Refuses [offset, offset+length) if it overlaps metadata (the allocator checks
  // the clusters it hands out; `purpose` names the new use in the message).
  Status check_free(uint64_t offset, uint64_t length, const char* purpose);
  // Grows the file to `size` (never shrinks it).
  Status grow(uint64_t size);
  // Cuts the file back to `size` (never grows it): the tail a shrink or a failed
  // change left unused. Refused when a registered structure lies past `size`.
  Status shrink(uint64_t size);

  // Makes every earlier write durable; flushes only if anything was written since.
  Status barrier();
  // Flushes unconditionally.
  Status flush();
  // The latched failure, if any.
  bool failed() const { return !sticky_.is_ok(); }
  const Status& sticky_error() const { return sticky_; }

 private:
  Status refuse_overlap(uint64_t offset, uint64_t length, StructureMask mask, const char* purpose);
  // Every change to the file: refused after a failure or on metadata, latched when it fails.
  template <class Op>
  Status guarded(StructureMask mask, const char* what, uint64_t offset, uint64_t length, Op&& op) {
    QCOW_TRY(before_write());
    QCOW_TRY(refuse_overlap(offset, length, mask, what));
    QCOW_TRY(after(op()));
    pending_ = true;
    return Status::ok();
  }
  // A change of guest data: in the data file (no metadata to protect there) or as above.
  template <class Op>
  Status guarded_data(const char* what, uint64_t offset, uint64_t length, Op&& op) {
    if (!data_) return guarded(mask_, what, offset, length, [&] { return op(*file_); });
    QCOW_TRY(before_write());
    QCOW_TRY(after(op(*data_)));
    data_pending_ = true;
    return Status::ok();
  }
  Status flush_data();
  Status before_write() const;
  Status after(Status s);

  File* file_;
  File* data_ = nullptr;  // the external data file, if any
  bool data_pending_ = false;
  OverlapCheck level_;
  StructureMask mask_;
  OverlapMap map_;
  CorruptionFn on_corruption_;
  bool pending_ = false;
  Status sticky_;
};

}  // namespace qcow
