// Flush ordering and close (resize: resize.cpp, shrink.cpp).
//
// Order on disk: guest data and new refcounts -> barrier -> L2 slices -> barrier
// -> L1 -> barrier -> deferred frees (refcount decrements) -> barrier. A crash
// between any two writes leaves every reachable cluster with a refcount >= 1
// (leaks at worst), and every L2/L1 entry pointing at written data.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Status Qcow2Driver::flush() {
  if (!writable_ || !opened_) return Status::ok();
  return guard(flush_metadata());
}

Status Qcow2Driver::flush_metadata() {
  QCOW_TRY(refcounts_->flush());
  QCOW_TRY(io_.barrier());
  QCOW_TRY(l2_cache_->flush());
  QCOW_TRY(io_.barrier());
  if (l1_dirty_) {
    QCOW_TRY(store_table(io_, Structure::kActiveL1, header_->l1_table_offset, l1_, l1_.size() * 8));
    l1_dirty_ = false;
    QCOW_TRY(io_.barrier());
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
    QCOW_TRY(io_.grow(alloc_end_));
    file_size_ = std::max(actual, alloc_end_);
  }
  return io_.barrier();
}

Status Qcow2Driver::grow_l1(uint64_t entries) {
  const uint64_t cs = geo_.cluster_size;
  if (entries > kMaxL1Bytes / 8) return Status::limit("the L1 table would exceed 32 MiB");
  uint64_t clusters = div_round_up(entries * 8, cs);
  QCOW_TRY(flush_metadata());  // the new table copies the current entries
  QCOW_ASSIGN_OR_RETURN(uint64_t off, refcounts_->alloc(clusters));
  QCOW_TRY(store_table(io_, Structure::kActiveL1, off, l1_, clusters * cs));
  alloc_end_ = std::max(alloc_end_, off + clusters * cs);
  file_size_ = std::max(file_size_, off + clusters * cs);
  QCOW_TRY(refcounts_->flush());
  QCOW_TRY(io_.flush());
  const uint64_t old_off = header_->l1_table_offset, old_bytes = uint64_t(header_->l1_size) * 8;
  QCOW_TRY(header_.update({HeaderField::kL1Table}, [&](Header& h) {
    h.l1_size = uint32_t(entries);
    h.l1_table_offset = off;
  }));
  QCOW_TRY(io_.flush());
  if (io_.tracks(Structure::kActiveL1)) {
    io_.overlaps().remove(Structure::kActiveL1, old_off, old_bytes);
    io_.overlaps().add(Structure::kActiveL1, off, entries * 8);
  }
  l1_.resize(entries, 0);
  if (old_bytes) refcounts_->free_later(old_off, div_round_up(old_bytes, cs));
  return flush_metadata();
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
