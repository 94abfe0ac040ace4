// write_zeroes, discard and compressed writes: operations that change L2 entries
// without (or with packed) guest data.
#include <fmt/format.h>

#include <cstring>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow/compress.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

// Zeroes whole units (subclusters with extended L2, clusters otherwise) by metadata.
Status Qcow2Driver::zero_units(uint64_t offset, uint64_t length, Unmap unmap) {
  const uint64_t cs = geo_.cluster_size;
  uint64_t pos = offset;
  const uint64_t end = offset + length;
  while (pos < end) {
    uint64_t cg = align_down(pos, cs);
    uint64_t piece_end = std::min(end, cg + cs);
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(pos));
    L2Entry ne = e;
    bool whole = pos == cg && (piece_end == cg + cs || piece_end == header_->size);
    if (!geo_.extended_l2) {
      // Keep a preallocated host cluster unless asked to unmap (QEMU does the same).
      if (unmap == Unmap::kYes || e.compressed() || !e.copied() || !e.host_offset()) {
        ne.word = kOflagZero;
        if (!(e == ne)) QCOW_TRY(release_host(e));
      } else {
        ne.word = e.host_offset() | kOflagCopied | kOflagZero;
      }
    } else if (whole) {
      ne.bitmap = kL2BitmapAllZero;
      if (unmap == Unmap::kYes || e.compressed() || !e.copied()) {
        ne.word = 0;
        QCOW_TRY(release_host(e));
      }
    } else {
      if (e.compressed()) {
        // Compressed clusters have no subclusters: write real zeros (copy-on-write to a normal cluster).
        std::vector<uint8_t> z(piece_end - pos, 0);
        QCOW_TRY(write_guest(pos, z, Compress::kNo));
        pos = piece_end;
        continue;
      }
      uint64_t m = sc_range_mask(geo_.sc_index(pos), uint32_t(div_round_up(piece_end - cg, geo_.subcluster_size)));
      ne.bitmap = (e.bitmap & ~m) | (m << 32);
    }
    if (!(ne == e)) {
      QCOW_TRY(ensure_l2_writable(cg).status());
      QCOW_TRY(set_l2_entry(cg, ne));
    }
    pos = piece_end;
  }
  return Status::ok();
}

Status Qcow2Driver::write_zeroes(uint64_t offset, uint64_t length, Unmap unmap) {
  return guard(zero_guest(offset, length, unmap));
}

Status Qcow2Driver::zero_guest(uint64_t offset, uint64_t length, Unmap unmap) {
  QCOW_TRY(check_writable());
  QCOW_TRY(check_range(offset, length));
  if (!length) return Status::ok();
  const uint64_t unit = geo_.subcluster_size;
  auto explicit_zeros = [&](uint64_t off, uint64_t len) -> Status {
    std::vector<uint8_t> z(std::min<uint64_t>(len, 4ull << 20), 0);
    for (uint64_t d = 0; d < len; d += z.size()) {
      uint64_t n = std::min<uint64_t>(z.size(), len - d);
      QCOW_TRY(write_guest(off + d, std::span<const uint8_t>(z.data(), n), Compress::kNo));
    }
    return Status::ok();
  };
  if (header_->version < 3) return explicit_zeros(offset, length);  // v2 has no zero flag
  uint64_t a = align_up(offset, unit), b = std::max(a, align_down(offset + length, unit));
  if (offset + length == header_->size) b = std::max(a, offset + length);  // the final partial unit
  if (a >= offset + length) {  // within one unit
    return explicit_zeros(offset, length);
  }
  if (offset < a) QCOW_TRY(explicit_zeros(offset, a - offset));
  if (a < b) QCOW_TRY(zero_units(a, b - a, unmap));
  if (b < offset + length) QCOW_TRY(explicit_zeros(b, offset + length - b));
  if (options_.cache == CacheMode::kWritethrough) QCOW_TRY(flush_metadata());
  return Status::ok();
}

Status Qcow2Driver::discard(uint64_t offset, uint64_t length) {
  return guard(discard_guest(offset, length));
}

Status Qcow2Driver::discard_guest(uint64_t offset, uint64_t length) {
  QCOW_TRY(check_writable());
  QCOW_TRY(check_range(offset, length));
  // Version 2 cannot mark a cluster as reading zeros, so dropping it would expose the
  // backing file's stale data: QEMU refuses such discards (ENOTSUP, which its callers
  // take as success) and the data stays. So do we.
  if (header_->version < 3 && !header_->backing_file.empty()) return Status::ok();
  const uint64_t cs = geo_.cluster_size;
  // Only whole clusters are discarded (the image end counts as a boundary), like QEMU.
  uint64_t a = align_up(offset, cs);
  uint64_t b = offset + length == header_->size ? offset + length : align_down(offset + length, cs);
  for (uint64_t pos = a; pos < b; pos += cs) {
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(pos));
    bool allocated = e.compressed() || (e.host_offset() && (geo_.extended_l2 || !(e.word & kOflagZero)));
    L2Entry ne;
    if (backing_ || allocated) {
      if (geo_.extended_l2) ne.bitmap = kL2BitmapAllZero;
      else if (header_->version >= 3) ne.word = kOflagZero;
    }
    if (ne == e) continue;
    QCOW_TRY(ensure_l2_writable(pos).status());
    QCOW_TRY(set_l2_entry(pos, ne));
    QCOW_TRY(release_host(e));
  }
  return Status::ok();
}

Result<uint64_t> Qcow2Driver::alloc_compressed_bytes(uint64_t size) {
  const uint64_t cs = geo_.cluster_size;
  uint64_t off = compressed_next_;
  if (off && (off & (cs - 1))) {
    // Continue packing into the current cluster; spill into the next one only if it is free.
    uint64_t c0 = off >> geo_.cluster_bits, c1 = (off + size - 1) >> geo_.cluster_bits;
    bool ok = true;
    if (c1 > c0) {
      QCOW_ASSIGN_OR_RETURN(bool got, refcounts_->try_alloc_at((c0 + 1) << geo_.cluster_bits, c1 - c0));
      ok = got;
    }
    if (ok) {
      Status s = refcounts_->update(c0, 1);
      if (s.is_ok()) {
        compressed_next_ = off + size;
        alloc_end_ = std::max(alloc_end_, (c1 + 1) << geo_.cluster_bits);
        return off;
      }
      if (s.code() != ErrorCode::kLimit) return s;
      for (uint64_t c = c0 + 1; c <= c1; ++c) QCOW_TRY(refcounts_->update(c, -1));
    }
  }
  uint64_t n = div_round_up(size, cs);
  QCOW_ASSIGN_OR_RETURN(off, refcounts_->alloc(n));
  compressed_next_ = off + size;
  alloc_end_ = std::max(alloc_end_, off + n * cs);
  return off;
}

Status Qcow2Driver::write_compressed_cluster(uint64_t guest, std::span<const uint8_t> data) {
  if (encrypted_io()) return Status::unsupported(fmt::format("{}: compressed writes are not supported on encrypted images", file_->path()));
  std::vector<uint8_t> out(geo_.cluster_size - 1);  // must come out smaller than a cluster, as QEMU requires
  QCOW_ASSIGN_OR_RETURN(size_t csize, compress_cluster(CompressionType(header_->compression_type),
                                                       uint32_t(geo_.cluster_size), data, out));
  if (csize == 0) return write_guest(guest, data, Compress::kNo);  // incompressible: store normally
  return store_compressed_cluster(guest, std::span<const uint8_t>(out.data(), csize));
}

Status Qcow2Driver::store_compressed(uint64_t guest, std::span<const uint8_t> compressed) {
  return guard(store_compressed_cluster(guest, compressed));
}

Status Qcow2Driver::store_compressed_cluster(uint64_t guest, std::span<const uint8_t> compressed) {
  QCOW_TRY(check_writable());
  if (encrypted_io()) return Status::unsupported(fmt::format("{}: compressed writes are not supported on encrypted images", file_->path()));
  QCOW_TRY(check_range(guest, 1));
  const uint64_t cs = geo_.cluster_size;
  if ((guest & (cs - 1)) || compressed.empty() || compressed.size() >= cs)
    return Status::invalid(fmt::format("{}: compressed cluster of {} bytes at guest offset {:#x}: needs a cluster-aligned "
                                       "offset and fewer than {} bytes", file_->path(), compressed.size(), guest, cs));
  const uint64_t csize = compressed.size();
  QCOW_ASSIGN_OR_RETURN(L2Entry old, get_l2_entry(guest));
  QCOW_ASSIGN_OR_RETURN(uint64_t host, alloc_compressed_bytes(csize));
  if (host + csize > (uint64_t(1) << geo_.csize_shift()))
    return Status::error(ErrorCode::kNoSpace, "compressed cluster offset beyond the descriptor's range");
  QCOW_TRY(io_.write_data(host, compressed));
  file_size_ = std::max(file_size_, host + csize);
  L2Entry ne;
  ne.word = encode_compressed(geo_, host, csize);
  QCOW_TRY(ensure_l2_writable(guest).status());
  QCOW_TRY(set_l2_entry(guest, ne));
  QCOW_TRY(release_host(old));
  ccache_valid_ = false;
  return Status::ok();
}

}  // namespace qcow
