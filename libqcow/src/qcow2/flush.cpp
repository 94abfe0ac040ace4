// Flush ordering, resize and close.
//
// Order on disk: guest data and new refcounts -> barrier -> L2 slices -> barrier
// -> L1 -> barrier -> deferred frees (refcount decrements) -> barrier. A crash
// between any two writes leaves every reachable cluster with a refcount >= 1
// (leaks at worst), and every L2/L1 entry pointing at written data.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Status Qcow2Driver::flush() {
  if (!writable_ || !opened_) return Status::ok();
  QCOW_TRY(refcounts_->flush());
  QCOW_TRY(barrier_.barrier());
  QCOW_TRY(l2_cache_->flush());
  QCOW_TRY(barrier_.barrier());
  if (l1_dirty_) {
    std::vector<uint8_t> raw(l1_.size() * 8);
    for (size_t i = 0; i < l1_.size(); ++i) store_be64(raw.data() + 8 * i, l1_[i]);
    QCOW_TRY(file_->write_at(header_.l1_table_offset, raw));
    barrier_.note_write();
    l1_dirty_ = false;
    QCOW_TRY(barrier_.barrier());
  }
  if (refcounts_->has_deferred()) {
    QCOW_TRY(refcounts_->apply_deferred());
    QCOW_TRY(refcounts_->flush());
  }
  // Space we allocated but left as a hole at the end must still be inside the file.
  // Only ever grow: refcount blocks and tables are written past file_size_ without
  // updating it, and truncating to alloc_end_ would cut them off.
  if (alloc_end_ > file_size_) {
    QCOW_ASSIGN_OR_RETURN(uint64_t actual, file_->size());
    if (alloc_end_ > actual) {
      QCOW_TRY(file_->truncate(alloc_end_));
      barrier_.note_write();
    }
    file_size_ = std::max(actual, alloc_end_);
  }
  return barrier_.barrier();
}

Status Qcow2Driver::grow_l1(uint64_t entries) {
  const uint64_t cs = geo_.cluster_size;
  if (entries > kMaxL1Bytes / 8) return Status::limit("the L1 table would exceed 32 MiB");
  uint64_t clusters = div_round_up(entries * 8, cs);
  QCOW_TRY(flush());  // the new table copies the current entries
  QCOW_ASSIGN_OR_RETURN(uint64_t off, refcounts_->alloc(clusters));
  std::vector<uint8_t> raw(clusters * cs, 0);
  for (size_t i = 0; i < l1_.size(); ++i) store_be64(raw.data() + 8 * i, l1_[i]);
  QCOW_TRY(file_->write_at(off, raw));
  barrier_.note_write();
  alloc_end_ = std::max(alloc_end_, off + clusters * cs);
  file_size_ = std::max(file_size_, off + clusters * cs);
  QCOW_TRY(refcounts_->flush());
  QCOW_TRY(barrier_.force());
  uint8_t b[12];
  store_be32(b, uint32_t(entries));
  store_be64(b + 4, off);
  QCOW_TRY(write_header_field(36, b));  // l1_size and l1_table_offset in one sector write
  QCOW_TRY(barrier_.force());
  uint64_t old_off = header_.l1_table_offset, old_bytes = uint64_t(header_.l1_size) * 8;
  header_.l1_size = uint32_t(entries);
  header_.l1_table_offset = off;
  l1_.resize(entries, 0);
  if (old_bytes) refcounts_->free_later(old_off, div_round_up(old_bytes, cs));
  return flush();
}

Status Qcow2Driver::resize(uint64_t new_size) {
  QCOW_TRY(check_writable());
  if (new_size < header_.size)
    return Status::unsupported(fmt::format("{}: shrinking qcow2 images is not supported", file_->path()));
  if (new_size == header_.size) return Status::ok();
  if (new_size > (uint64_t(1) << 62)) return Status::limit("virtual size too large");
  uint64_t need = geo_.l1_entries_for(new_size);
  if (need > l1_.size()) QCOW_TRY(grow_l1(need));
  uint8_t b[8];
  store_be64(b, new_size);
  QCOW_TRY(write_header_field(24, b));
  QCOW_TRY(barrier_.force());
  header_.size = new_size;
  return Status::ok();
}

Status Qcow2Driver::close() {
  if (closed_) return Status::ok();
  closed_ = true;
  if (!opened_) return Status::ok();  // a failed open wrote nothing that needs flushing
  Status s = flush();
  if (backing_) {
    Status b = backing_->close();
    if (s.is_ok()) s = b;
  }
  return s;
}

}  // namespace qcow
