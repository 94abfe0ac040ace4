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
  // QEMU's block layer asks for zeros in the new part when a longer backing file lies
  // under it (BDRV_REQ_ZERO_WRITE). falloc and full give that part fresh clusters that
  // read zeros anyway (allocated subclusters, over a backing file); off and metadata
  // use zero flags, which version 2 does not have.
  const bool over_backing = backing_ && backing_->size() > old;
  const bool fresh = mode == Preallocation::kFalloc || mode == Preallocation::kFull;
  const bool zero_flags = over_backing && !fresh;
  if (zero_flags && header_->version < 3)
    return Status::unsupported("Failed to zero out new clusters: Operation not supported");
  const uint64_t zero_start = align_up(old, geo_.subcluster_size);
  if (zero_flags && (zero_start & (cs - 1)) && zero_start < new_size) {
    // Nor can QEMU zero part of a compressed cluster (zero_l2_subclusters).
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(zero_start));
    if (e.compressed()) return Status::unsupported("Failed to zero out new clusters: Operation not supported");
  }
  QCOW_TRY(flush_metadata());
  // Clusters still mapped past the old end (a shrink cut short by a crash before its
  // clean-up) must not reappear.
  QCOW_TRY(clear_beyond(align_up(old, cs)));
  // The data file grows with the disk (QEMU truncates it to the new size), and a raw one
  // keeps mapping every cluster (QEMU preallocates metadata for it).
  if (external_data()) QCOW_TRY(io_.resize_data(new_size));
  if (raw_data() && mode == Preallocation::kOff) mode = Preallocation::kMetadata;
  const uint64_t need = geo_.l1_entries_for(new_size);
  if (need > l1_.size()) QCOW_TRY(grow_l1(need));
  if (mode != Preallocation::kOff)
    QCOW_TRY(preallocate_range(old, new_size, mode, fresh && over_backing ? kL2BitmapAllAlloc : 0));
  if (zero_flags) {
    QCOW_TRY(zero_grown(old, new_size));
  } else if (fresh && (old & (cs - 1))) {
    QCOW_TRY(zero_tail(old, std::min(new_size, align_up(old, cs))));
  }
  QCOW_TRY(flush_metadata());
  QCOW_TRY(header_.update({HeaderField::kSize}, [&](Header& h) { h.size = new_size; }));
  return io_.flush();
}

// Runs `op` with the size the header has in memory raised to `size`: the writes that
// prepare a growth lie past the size on disk, which changes after them.
Status Qcow2Driver::past_the_end(uint64_t size, const std::function<Status()>& op) {
  const uint64_t old = header_->size;
  header_.set_in_memory([&](Header& h) { h.size = size; });
  Status s = op();
  header_.set_in_memory([&](Header& h) { h.size = old; });
  return s;
}

// Makes [old, end) read as zeros before the size exposes it (QEMU's zeroing over a
// longer backing file): explicit zeros up to the next subcluster boundary (that unit
// also holds guest data), zero flags from there (qcow2_subcluster_zeroize, without
// unmapping).
Status Qcow2Driver::zero_grown(uint64_t old, uint64_t end) {
  const uint64_t head_end = std::min(align_up(old, geo_.subcluster_size), end);
  return past_the_end(end, [&]() -> Status {
    if (head_end > old) {
      std::vector<uint8_t> zeros(head_end - old, 0);
      QCOW_TRY(write_guest(old, zeros, Compress::kNo));
    }
    if (end > head_end) QCOW_TRY(zero_units(head_end, end - head_end, Unmap::kNo));
    return Status::ok();
  });
}

// falloc/full: QEMU gives the old last cluster a fresh one for its part past the old
// end, so whatever that part held (or a backing file shows there) reads zeros. The
// units of [from, to) that would read something else get explicit zeros.
Status Qcow2Driver::zero_tail(uint64_t from, uint64_t to) {
  return past_the_end(to, [&]() -> Status {
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(from));
    for (uint64_t u = align_down(from, geo_.subcluster_size); u < to; u += geo_.subcluster_size) {
      const SubclusterType t = subcluster_type(geo_, e, geo_.sc_index(u));
      const bool reads_zeros = is_zero_type(t) || (is_unallocated_type(t) && !backing_);
      if (reads_zeros) continue;
      const uint64_t a = std::max(from, u), b = std::min(to, u + geo_.subcluster_size);
      std::vector<uint8_t> zeros(b - a, 0);
      QCOW_TRY(write_guest(a, zeros, Compress::kNo));
      QCOW_ASSIGN_OR_RETURN(e, get_l2_entry(from));  // the write may have moved the cluster
    }
    return Status::ok();
  });
}

// Host clusters for the unallocated clusters of [from, to) (QEMU's preallocate_co and
// its falloc/full data area): normal entries reading the zeroed host cluster; extended
// L2 entries get `bitmap` (0: the subclusters stay unallocated, reading as before;
// all allocated: they read the host's zeros, over a backing file). falloc reserves the
// host ranges, full zeroes them, metadata only allocates them. A partial first cluster
// whose head would read differently is left to zero_tail().
Status Qcow2Driver::preallocate_range(uint64_t from, uint64_t to, Preallocation mode, uint64_t bitmap) {
  const uint64_t cs = geo_.cluster_size;
  auto wants_host = [&](uint64_t guest, const L2Entry& e) {
    if (has_host(geo_, e) || e.compressed()) return false;
    if (guest >= from) return true;
    return geo_.extended_l2 ? bitmap == 0 : !backing_;
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
    QCOW_ASSIGN_OR_RETURN(uint64_t host, alloc_data_clusters(c, run.size()));
    const uint64_t bytes = run.size() * cs;
    for (size_t i = 0; i < run.size(); ++i)
      QCOW_TRY(set_l2_entry(c + i * cs, L2Entry{(host + i * cs) | kOflagCopied, bitmap ? bitmap : run[i].bitmap}));
    if (external_data()) {  // grow_to() sized the data file: its new part reads zeros
      if (mode == Preallocation::kFalloc) QCOW_TRY(io_.allocate_data(host, bytes));
      if (mode == Preallocation::kFull) QCOW_TRY(io_.zero_data(host, bytes));
      c += bytes;
      continue;
    }
    // Clusters inside the file may have been freed with data still in them (QEMU discards
    // freed clusters; we do not): zero what of the range the file holds. Past its end,
    // falloc reserves, full zeroes, metadata leaves a hole.
    const uint64_t inside = host < file_size_ ? std::min(bytes, file_size_ - host) : 0;
    if (inside) QCOW_TRY(io_.zero_data(host, inside));
    if (mode == Preallocation::kFalloc && bytes > inside) QCOW_TRY(io_.allocate_data(host + inside, bytes - inside));
    if (mode == Preallocation::kFull && bytes > inside) QCOW_TRY(io_.zero_data(host + inside, bytes - inside));
    // metadata: the file still covers the range (as QEMU's preallocate_co truncates it
    // up), so no L2 entry ever points past its end; the barrier before the L2 tables
    // are written orders the growth first.
    if (mode == Preallocation::kMetadata && bytes > inside) QCOW_TRY(io_.grow(host + bytes));
    alloc_end_ = std::max(alloc_end_, host + bytes);
    file_size_ = std::max(file_size_, host + bytes);
    c += bytes;
  }
  return Status::ok();
}

}  // namespace qcow
