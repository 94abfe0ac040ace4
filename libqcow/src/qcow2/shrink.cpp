// Shrinking (QEMU's qcow2_co_truncate with a smaller size): the new size is
// committed first, with one header write, so the guest sees the old disk or the
// shrunk one, never a half-discarded tail. Then every cluster mapped past the new
// end is dropped (snapshots keep their references), the L2 tables wholly past it
// leave the L1 table (whose size stays, as in QEMU), and the file is cut after its
// last used cluster. A crash during the clean-up leaves clusters mapped past the
// end (leaks at worst); growing clears them before it exposes anything (resize.cpp).
// Like QEMU, the last cluster keeps the bytes past a new end inside it.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Status Qcow2Driver::shrink_to(uint64_t new_size) {
  QCOW_TRY(flush_metadata());
  QCOW_TRY(header_.update({HeaderField::kSize}, [&](Header& h) { h.size = new_size; }));
  QCOW_TRY(io_.flush());
  QCOW_TRY(clear_beyond(align_up(new_size, geo_.cluster_size)));
  QCOW_TRY(flush_metadata());
  if (external_data()) QCOW_TRY(io_.resize_data(new_size));  // as QEMU
  return truncate_unused_tail();
}

Status Qcow2Driver::clear_beyond(uint64_t from) {
  const uint64_t cs = geo_.cluster_size, coverage = geo_.l2_coverage();
  for (uint64_t i = geo_.l1_index(from); i < l1_.size(); ++i) {
    const uint64_t l2 = l1_[i] & kL1eOffsetMask;
    if (!l2) continue;
    const uint64_t first = std::max(from, i * coverage), table_end = (i + 1) * coverage;
    if (first == i * coverage) {
      // The whole table: drop our reference to it. A table only we use takes the
      // references of its entries with it; a shared one keeps them for the snapshot.
      QCOW_ASSIGN_OR_RETURN(uint64_t table_refs, refcounts_->get(l2 >> geo_.cluster_bits));
      if (table_refs == 1) {
        for (uint64_t g = first; g < table_end; g += cs) {
          QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(g));
          QCOW_TRY(release_host(e));
        }
      }
      l2_cache_->forget(l2, cs);
      set_l1_entry(i, 0);
      refcounts_->free_later(l2, 1);
      continue;
    }
    for (uint64_t g = first; g < table_end; g += cs) {
      QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(g));
      if (e == L2Entry{}) continue;
      QCOW_TRY(ensure_l2_writable(g).status());
      QCOW_TRY(set_l2_entry(g, L2Entry{}));
      QCOW_TRY(release_host(e));
    }
  }
  return Status::ok();
}

// QEMU cuts the file after the last cluster with a refcount (qcow2_get_last_cluster).
Status Qcow2Driver::truncate_unused_tail() {
  const uint64_t cs = geo_.cluster_size;
  QCOW_ASSIGN_OR_RETURN(uint64_t size, file_->size());
  uint64_t clusters = div_round_up(size, cs);
  while (clusters > 0) {
    QCOW_ASSIGN_OR_RETURN(uint64_t rc, refcounts_->get(clusters - 1));
    if (rc) break;
    --clusters;
  }
  const uint64_t end = clusters * cs;
  if (end >= size) return Status::ok();
  QCOW_TRY(io_.shrink(end));
  file_size_ = end;
  alloc_end_ = end;
  compressed_next_ = 0;
  return io_.flush();
}

}  // namespace qcow
