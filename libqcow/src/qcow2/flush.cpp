// Flush ordering and close.
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

Status Qcow2Driver::close() {
  if (closed_) return Status::ok();
  closed_ = true;
  if (!opened_) return Status::ok();  // a failed open wrote nothing that needs flushing
  Status s = flush();
  Status released = file_->close();  // also after a failed flush: the locks must go
  if (s.is_ok()) s = released;
  if (data_file_) {
    Status d = data_file_->close();
    if (s.is_ok()) s = d;
  }
  if (backing_) {
    Status b = backing_->close();
    if (s.is_ok()) s = b;
  }
  return s;
}

}  // namespace qcow
