// Guest writes: in place where the host cluster is ours alone, otherwise
// allocation with copy-on-write. Each allocating request becomes one host
// write: head and tail are read first (from this image's own view, so backing
// files, zero clusters and compressed clusters are all handled by the read
// path), then head + payload + tail are written at once.
#include <fmt/format.h>

#include <bit>
#include <cstring>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {
namespace {
constexpr uint64_t kMaxBatchBytes = 32ull << 20;  // bounds the copy-on-write buffer
}

Status Qcow2Driver::check_writable() const {
  if (!writable_) return Status::error(ErrorCode::kReadOnly, fmt::format("{}: image is opened read-only", file_->path()));
  if (header_->incompatible_features & kIncompatCorrupt)
    return Status::error(ErrorCode::kReadOnly, fmt::format("{}: image is marked corrupt; writes are refused", file_->path()));
  return Status::ok();
}

bool Qcow2Driver::can_write_in_place(L2Entry e) const {
  if (e.compressed() || !e.copied() || !has_host(geo_, e)) return false;
  if (geo_.extended_l2) return subcluster_type(geo_, e, 0) != SubclusterType::kInvalid;
  return true;  // normal or preallocated zero cluster with refcount 1
}

Result<uint64_t> Qcow2Driver::ensure_l2_writable(uint64_t guest_offset) {
  uint64_t l1i = geo_.l1_index(guest_offset);
  if (l1i >= l1_.size()) return Status::internal("guest offset beyond the L1 table");
  uint64_t old = l1_[l1i] & kL1eOffsetMask;
  if (old && (l1_[l1i] & kOflagCopied)) return old;
  QCOW_ASSIGN_OR_RETURN(uint64_t fresh, refcounts_->alloc(1));
  std::vector<uint8_t> table(geo_.cluster_size, 0);
  if (old) {  // shared with a snapshot: copy, then drop our reference to the old table
    QCOW_TRY(l2_cache_->flush());
    QCOW_ASSIGN_OR_RETURN(size_t got, file_->read_at(old, table));
    if (got < table.size()) return Status::corrupt(fmt::format("{}: L2 table at {:#x} beyond the end of the file", file_->path(), old));
    refcounts_->free_later(old, 1);
  }
  QCOW_TRY(io_.write_metadata(Structure::kActiveL2, fresh, table));
  file_size_ = std::max(file_size_, fresh + geo_.cluster_size);
  alloc_end_ = std::max(alloc_end_, fresh + geo_.cluster_size);
  set_l1_entry(l1i, fresh | kOflagCopied);
  return fresh;
}

Result<uint64_t> Qcow2Driver::alloc_data_clusters(uint64_t guest, uint64_t n) {
  if (external_data()) return guest;
  return refcounts_->alloc(n);
}

void Qcow2Driver::note_data_end(uint64_t end) {
  if (external_data()) return;
  file_size_ = std::max(file_size_, end);
}

Status Qcow2Driver::release_host(L2Entry old) {
  if (external_data()) return Status::ok();  // data clusters there have no refcounts
  if (old.compressed()) {
    CompressedExtent ce = compressed_extent(geo_, old);
    uint64_t first = ce.offset >> geo_.cluster_bits, last = (ce.offset + ce.length - 1) >> geo_.cluster_bits;
    for (uint64_t c = first; c <= last; ++c) refcounts_->free_later(c << geo_.cluster_bits, 1);
    decompressed_valid_ = false;
    // The cluster we pack compressed data into may now drop to refcount 0 and be
    // reallocated for other data: never pack into it again.
    compressed_next_ = 0;
  } else if (old.host_offset()) {
    refcounts_->free_later(old.host_offset(), 1);
  }
  return Status::ok();
}

Status Qcow2Driver::write(uint64_t offset, std::span<const uint8_t> buf, Compress compress) {
  return guard(write_guest(offset, buf, compress));
}

Status Qcow2Driver::write_guest(uint64_t offset, std::span<const uint8_t> buf, Compress compress) {
  QCOW_TRY(check_writable());
  QCOW_TRY(check_range(offset, buf.size()));
  if (compress == Compress::kYes) {
    if (offset & (geo_.cluster_size - 1))
      return Status::invalid(fmt::format("{}: compressed writes must start on a cluster boundary", file_->path()));
    for (uint64_t done = 0; done < buf.size(); done += geo_.cluster_size) {
      uint64_t n = std::min<uint64_t>(geo_.cluster_size, buf.size() - done);
      if (n < geo_.cluster_size && offset + done + n != header_->size)
        return Status::invalid(fmt::format("{}: compressed writes must cover whole clusters", file_->path()));
      QCOW_TRY(write_compressed_cluster(offset + done, buf.subspan(done, n)));
    }
    return Status::ok();
  }
  if (encrypted_io() && ((offset | buf.size()) & (crypto::kSectorSize - 1))) {
    // Encrypted data is stored in whole 512-byte units: read-modify-write the edges.
    const uint64_t a = align_down(offset, crypto::kSectorSize), b = align_up(offset + buf.size(), crypto::kSectorSize);
    std::vector<uint8_t> unit(b - a);
    QCOW_TRY(read_view(a, unit));
    std::memcpy(unit.data() + (offset - a), buf.data(), buf.size());
    return write_guest(a, unit, compress);
  }
  uint64_t done = 0;
  while (done < buf.size()) {
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(offset + done));
    uint64_t n = 0;
    if (can_write_in_place(e)) QCOW_TRY(write_in_place(offset + done, buf.subspan(done), &n));
    else QCOW_TRY(write_allocating(offset + done, buf.subspan(done), &n));
    done += n;
  }
  if (options_.cache == CacheMode::kWritethrough) QCOW_TRY(flush_metadata());
  return Status::ok();
}

Status Qcow2Driver::write_in_place(uint64_t pos, std::span<const uint8_t> data, uint64_t* done) {
  const uint64_t cs = geo_.cluster_size;
  const uint64_t cstart = align_down(pos, cs);
  const uint64_t end = pos + data.size();
  QCOW_ASSIGN_OR_RETURN(L2Entry first, get_l2_entry(pos));
  const uint64_t host = first.host_offset();
  // Clusters we (or QEMU) allocated always lie inside the file; one past its end comes from a
  // damaged or hostile L2 entry, and writing there could grow the file without bound.
  if (!external_data() && host >= std::max(file_size_, alloc_end_))
    return Status::corrupt(fmt::format("{}: data cluster offset {:#x} (guest offset {:#x}) lies beyond the end of the file",
                                       file_->path(), host, cstart));
  std::vector<L2Entry> entries{first};
  uint64_t run_end = std::min(end, cstart + cs);
  while (run_end < end && entries.size() * cs < kMaxBatchBytes) {
    uint64_t next = cstart + entries.size() * cs;
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(next));
    if (!can_write_in_place(e) || e.host_offset() != host + entries.size() * cs) break;
    entries.push_back(e);
    run_end = std::min(end, next + cs);
  }
  // Edge units (subclusters, or clusters without extended L2) that do not hold data yet
  // must be completed from the current view so the whole unit can be marked allocated.
  const uint64_t unit = geo_.subcluster_size;
  uint64_t ws = pos, we = run_end;
  if (ws & (unit - 1)) {
    if (subcluster_type(geo_, entries.front(), geo_.sc_index(ws)) != SubclusterType::kNormal) ws = align_down(ws, unit);
  }
  if (we & (unit - 1)) {
    if (subcluster_type(geo_, entries.back(), geo_.sc_index(we)) != SubclusterType::kNormal) we = align_up(we, unit);
  }
  std::span<const uint8_t> payload = data.first(run_end - pos);
  std::span<const uint8_t> out = payload;
  if (ws != pos || we != run_end) {
    scratch_.resize(we - ws);
    QCOW_TRY(read_view(ws, std::span(scratch_).first(pos - ws)));
    std::memcpy(scratch_.data() + (pos - ws), payload.data(), payload.size());
    QCOW_TRY(read_view(run_end, std::span(scratch_).subspan(run_end - ws)));
    out = std::span<const uint8_t>(scratch_.data(), we - ws);
  }
  if (encrypted_io()) {  // encrypt a copy, never the caller's buffer
    if (out.data() != scratch_.data()) scratch_.assign(out.begin(), out.end());
    QCOW_TRY(crypt_data(true, ws, host + (ws - cstart), std::span(scratch_).first(out.size())));
    out = std::span<const uint8_t>(scratch_.data(), out.size());
  }
  // Completing a unit that reads as zeros (no backing data there): zero its host bytes
  // with one fallocate(ZERO_RANGE) instead of writing them, as QEMU does with
  // write_zeroes for zero COW regions. A 4 KiB write into an empty 64 KiB subcluster
  // then writes 4 KiB, not 64. Below a filesystem block a syscall gains nothing.
  uint64_t from = 0, to = out.size();  // the part of `out` that is written
  if (!encrypted_io() && out.data() == scratch_.data()) {
    constexpr uint64_t kMinZeroRange = 4096;
    const uint64_t head = pos - ws, tail = we - run_end;
    if (head >= kMinZeroRange && buffer_is_zero(out.data(), head)) {
      QCOW_TRY(io_.zero_data(host + (ws - cstart), head));
      from = head;
    }
    if (tail >= kMinZeroRange && buffer_is_zero(out.data() + (run_end - ws), tail)) {
      QCOW_TRY(io_.zero_data(host + (run_end - cstart), tail));
      to = run_end - ws;
    }
  }
  QCOW_TRY(io_.write_data(host + (ws - cstart) + from, out.subspan(from, to - from)));
  note_data_end(host + (we - cstart));
  // Entries: clear the zero flag / set allocation bits where they changed.
  for (size_t i = 0; i < entries.size(); ++i) {
    uint64_t cg = cstart + i * cs;
    L2Entry e = entries[i];
    L2Entry ne = e;
    if (!geo_.extended_l2) {
      ne.word = e.host_offset() | kOflagCopied;
    } else {
      uint64_t a = std::max(ws, cg) - cg, b = std::min(we, cg + cs) - cg;
      uint64_t m = sc_range_mask(uint32_t(a >> geo_.subcluster_bits), uint32_t(div_round_up(b, unit)));
      ne.bitmap = (e.bitmap | m) & ~(m << 32);
    }
    if (!(ne == e)) {
      QCOW_TRY(ensure_l2_writable(cg).status());
      QCOW_TRY(set_l2_entry(cg, ne));
    }
  }
  *done = run_end - pos;
  return Status::ok();
}

Status Qcow2Driver::write_allocating(uint64_t pos, std::span<const uint8_t> data, uint64_t* done) {
  const uint64_t cs = geo_.cluster_size;
  const uint64_t cstart = align_down(pos, cs);
  const uint64_t end = pos + data.size();
  QCOW_ASSIGN_OR_RETURN(L2Entry first, get_l2_entry(pos));
  std::vector<L2Entry> old{first};
  while (cstart + old.size() * cs < end && (old.size() + 1) * cs <= kMaxBatchBytes) {
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(cstart + old.size() * cs));
    if (can_write_in_place(e)) break;
    old.push_back(e);
  }
  const uint64_t n = old.size();
  const uint64_t run_end = std::min(end, cstart + n * cs);

  // Copy-on-write range of each cluster, relative to the cluster.
  std::vector<std::pair<uint64_t, uint64_t>> range(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint64_t cg = cstart + i * cs;
    uint64_t rs = std::max(pos, cg) - cg, re = std::min(run_end, cg + cs) - cg;
    if (!geo_.extended_l2 || old[i].compressed()) {
      range[i] = {0, cs};
      continue;
    }
    uint64_t a = align_down(rs, geo_.subcluster_size), b = align_up(re, geo_.subcluster_size);
    uint64_t alloc = has_host(geo_, old[i]) ? (old[i].bitmap & kL2BitmapAllAlloc) : 0;
    if (alloc) {  // keep every allocated subcluster of a shared cluster (QEMU does the same)
      a = std::min<uint64_t>(a, uint64_t(std::countr_zero(alloc)) << geo_.subcluster_bits);
      b = std::max<uint64_t>(b, uint64_t(64 - std::countl_zero(alloc)) << geo_.subcluster_bits);
    }
    range[i] = {a, b};
  }
  // L2 tables first, so that a table does not split a run of data clusters on the host.
  for (uint64_t i = 0; i < n; ++i)
    if (i == 0 || geo_.l2_index(cstart + i * cs) == 0) QCOW_TRY(ensure_l2_writable(cstart + i * cs).status());
  QCOW_ASSIGN_OR_RETURN(uint64_t host, alloc_data_clusters(cstart, n));
  // (A data file's clusters may hold old bytes: only the image file's tail is known fresh.)
  const bool fresh = !external_data() && host >= file_size_;
  if (options_.alloc == AllocPolicy::kReserve) {
    QCOW_TRY(io_.allocate_data(host, n * cs));
    note_data_end(host + n * cs);
  }
  const uint64_t buf_guest = cstart + range[0].first;
  const uint64_t buf_len = (n - 1) * cs + range[n - 1].second - range[0].first;
  const uint64_t head = pos - buf_guest, tail_at = run_end - buf_guest;
  // Whole clusters need no copy-on-write: write the caller's buffer as it is.
  const bool direct = head == 0 && tail_at == buf_len;
  if (!direct) {
    scratch_.resize(buf_len);
    QCOW_TRY(read_view(buf_guest, std::span(scratch_).first(head)));
    std::memcpy(scratch_.data() + head, data.data(), run_end - pos);
    QCOW_TRY(read_view(run_end, std::span(scratch_).subspan(tail_at)));
  }
  const uint8_t* out = direct ? data.data() : scratch_.data();
  // Zero head/tail in fresh space past the end of the file: reserve the range with one
  // fallocate (reads as zeros, like QEMU's write_zeroes of zero COW regions) and write only
  // the rest. Leaving holes instead would make QEMU treat the image as metadata-preallocated.
  uint64_t w0 = 0, w1 = buf_len;
  const uint64_t host_buf = host + range[0].first;
  if (fresh && !direct && !encrypted_io()) {
    if (buffer_is_zero(out, head)) w0 = head;
    if (buffer_is_zero(out + tail_at, buf_len - tail_at)) w1 = tail_at;
    if ((w0 || w1 < buf_len) && options_.alloc != AllocPolicy::kReserve) QCOW_TRY(io_.allocate_data(host_buf, buf_len));
  }
  if (encrypted_io()) {  // encrypt a copy, never the caller's buffer
    if (direct) scratch_.assign(data.data(), data.data() + buf_len);
    QCOW_TRY(crypt_data(true, buf_guest, host_buf, std::span(scratch_).first(buf_len)));
    out = scratch_.data();
  }
  QCOW_TRY(io_.write_data(host_buf + w0, std::span<const uint8_t>(out + w0, w1 - w0)));
  note_data_end(host_buf + w1);
  if (!external_data()) alloc_end_ = std::max(alloc_end_, host + n * cs);

  for (uint64_t i = 0; i < n; ++i) {
    uint64_t cg = cstart + i * cs;
    L2Entry ne;
    ne.word = (host + i * cs) | kOflagCopied;
    if (geo_.extended_l2) {
      if (old[i].compressed()) {
        ne.bitmap = kL2BitmapAllAlloc;
      } else {
        uint64_t m = sc_range_mask(uint32_t(range[i].first >> geo_.subcluster_bits),
                                   uint32_t(range[i].second >> geo_.subcluster_bits));
        ne.bitmap = (old[i].bitmap | m) & ~(m << 32);
      }
    }
    QCOW_TRY(ensure_l2_writable(cg).status());
    QCOW_TRY(set_l2_entry(cg, ne));
    QCOW_TRY(release_host(old[i]));
  }
  *done = run_end - pos;
  return Status::ok();
}

}  // namespace qcow
