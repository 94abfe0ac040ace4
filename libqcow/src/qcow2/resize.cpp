// resize: QEMU's qcow2_co_truncate as qemu-img resize uses it (growing here,
// shrinking in shrink.cpp).
//
// Growing prepares everything the new size exposes past the old end first (a
// larger L1 table, preallocated clusters, zero flags over a longer backing file),
// where the guest cannot see it, makes it durable, and then commits the new size
// with one header write: a crash leaves the old size and contents or the new ones.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Status Qcow2Driver::resize(uint64_t new_size, const ResizeOptions& o) {
  QCOW_TRY(check_writable());
  const uint64_t old = header_->size;
  // QEMU's checks and messages (qcow2_co_truncate).
  if (header_->version < 3 && !snapshots_.empty()) return Status::unsupported("Can't resize a v2 image which has snapshots");
  if (new_size & 511) return Status::invalid("The new size must be a multiple of 512");
  if (new_size == old) return Status::ok();
  if (new_size < old) {
    if (o.shrink != Shrink::kYes)
      return Status::invalid(fmt::format("{}: shrinking needs Shrink::kYes", file_->path()));
    if (o.preallocation != Preallocation::kOff)
      return Status::unsupported("Preallocation can't be used for shrinking an image");
    return guard(shrink_to(new_size));
  }
  if (geo_.l1_entries_for(new_size) > kMaxL1Bytes / 8) return Status::limit("Failed to grow the L1 table: File too large");
  if (new_size > (uint64_t(1) << 62)) return Status::limit("virtual size too large");
  return guard(grow_to(new_size, o.preallocation));
}

Status Qcow2Driver::grow_to(uint64_t new_size, Preallocation mode) {
  const uint64_t old = header_->size, cs = geo_.cluster_size;
  // QEMU's block layer zeroes the new part when a longer backing file lies under it
  // (BDRV_REQ_ZERO_WRITE), which version 2 has no zero flag for.
  const bool over_backing = backing_ && backing_->size() > old;
  if (over_backing && header_->version < 3)
    return Status::unsupported("Failed to zero out new clusters: Operation not supported");
  QCOW_TRY(flush_metadata());
  // Clusters still mapped past the old end (a shrink cut short by a crash before its
  // clean-up) must not reappear.
  QCOW_TRY(clear_beyond(align_up(old, cs)));
  const uint64_t need = geo_.l1_entries_for(new_size);
  if (need > l1_.size()) QCOW_TRY(grow_l1(need));
  if (mode != Preallocation::kOff) QCOW_TRY(preallocate_range(old, new_size, mode));
  if (over_backing) {
    QCOW_TRY(zero_grown(old, new_size, geo_.subcluster_size));
  } else if ((mode == Preallocation::kFalloc || mode == Preallocation::kFull) && (old & (cs - 1))) {
    // QEMU gives the new part fresh (zeroed) clusters, the old last cluster's tail included.
    QCOW_TRY(zero_grown(old, std::min(new_size, align_up(old, cs)), cs));
  }
  QCOW_TRY(flush_metadata());
  QCOW_TRY(header_.update({HeaderField::kSize}, [&](Header& h) { h.size = new_size; }));
  return io_.flush();
}

// Makes [old, end) read as zeros before the size exposes it: explicit zeros up to the
// next `unit` boundary (the old last unit is shared with guest data), zero flags from
// there (QEMU's qcow2_subcluster_zeroize, without unmapping). The writes lie past the
// size on disk; only the in-memory copy covers them while they run.
Status Qcow2Driver::zero_grown(uint64_t old, uint64_t end, uint64_t unit) {
  const uint64_t head_end = std::min(align_up(old, unit), end);
  header_.set_in_memory([&](Header& h) { h.size = end; });
  Status s = Status::ok();
  if (head_end > old) {
    std::vector<uint8_t> zeros(head_end - old, 0);
    s = write_guest(old, zeros, Compress::kNo);
  }
  if (s.is_ok() && end > head_end) s = zero_units(head_end, end - head_end, Unmap::kNo);
  header_.set_in_memory([&](Header& h) { h.size = old; });
  return s;
}

// Host clusters for the unallocated clusters of [from, to) (QEMU's preallocate_co and
// its falloc/full data area): normal entries reading the zeroed host cluster (extended
// L2 keeps the bitmap, so nothing reads differently); falloc reserves the host ranges,
// full writes zeros there. A partial first cluster over a backing file is left alone:
// it would stop reading the backing file's data.
Status Qcow2Driver::preallocate_range(uint64_t from, uint64_t to, Preallocation mode) {
  const uint64_t cs = geo_.cluster_size;
  auto wants_host = [&](uint64_t guest, const L2Entry& e) {
    if (e.host_offset() || e.compressed()) return false;
    return guest >= from || geo_.extended_l2 || !backing_;
  };
  for (uint64_t c = align_down(from, cs); c < to;) {
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(c));
    if (!wants_host(c, e)) {
      c += cs;
      continue;
    }
    // A run of such clusters within one L2 table gets one contiguous host range.
    std::vector<L2Entry> run{e};
    const uint64_t table_end = std::min(to, align_down(c, geo_.l2_coverage()) + geo_.l2_coverage());
    while (c + run.size() * cs < table_end) {
      QCOW_ASSIGN_OR_RETURN(L2Entry next, get_l2_entry(c + run.size() * cs));
      if (!wants_host(c + run.size() * cs, next)) break;
      run.push_back(next);
    }
    QCOW_TRY(ensure_l2_writable(c).status());
    QCOW_ASSIGN_OR_RETURN(uint64_t host, refcounts_->alloc(run.size()));
    const uint64_t bytes = run.size() * cs;
    for (size_t i = 0; i < run.size(); ++i)
      QCOW_TRY(set_l2_entry(c + i * cs, L2Entry{(host + i * cs) | kOflagCopied, run[i].bitmap}));
    if (mode == Preallocation::kFalloc) QCOW_TRY(io_.allocate_data(host, bytes));
    if (mode == Preallocation::kFull) QCOW_TRY(io_.zero_data(host, bytes));
    alloc_end_ = std::max(alloc_end_, host + bytes);
    if (mode != Preallocation::kMetadata) file_size_ = std::max(file_size_, host + bytes);
    c += bytes;
  }
  return Status::ok();
}

}  // namespace qcow
