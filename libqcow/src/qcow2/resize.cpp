// Resizing a qcow2 layer: the virtual size grows in one header field update, after
// the L1 table grew (moved to a new, larger table) when the new size needs it.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

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

Status Qcow2Driver::resize(uint64_t new_size) {
  QCOW_TRY(check_writable());
  if (new_size < header_->size)
    return Status::unsupported(fmt::format("{}: shrinking qcow2 images is not supported", file_->path()));
  if (new_size == header_->size) return Status::ok();
  if (new_size > (uint64_t(1) << 62)) return Status::limit("virtual size too large");
  uint64_t need = geo_.l1_entries_for(new_size);
  if (need > l1_.size()) QCOW_TRY(guard(grow_l1(need)));
  QCOW_TRY(header_.update({HeaderField::kSize}, [&](Header& h) { h.size = new_size; }));
  return io_.flush();
}

}  // namespace qcow
