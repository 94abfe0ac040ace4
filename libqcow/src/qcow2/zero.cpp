// write_zeroes and discard: operations that change L2 entries without guest data.
#include <fmt/format.h>

#include <cstring>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "io/zeros.hpp"
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
      if (unmap == Unmap::kYes || e.compressed() || !e.copied() || !has_host(geo_, e)) {
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
        QCOW_TRY(write_zeros(pos, piece_end - pos,
                             [this](uint64_t o, std::span<const uint8_t> z) { return write_guest(o, z, Compress::kNo); }));
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
  auto explicit_zeros = [&](uint64_t off, uint64_t len) {
    return write_zeros(off, len, [this](uint64_t o, std::span<const uint8_t> z) { return write_guest(o, z, Compress::kNo); });
  };
  if (header_->version < 3) return explicit_zeros(offset, length);  // v2 has no zero flag
  uint64_t a = align_up(offset, unit), b = std::max(a, align_down(offset + length, unit));
  if (offset + length == header_->size) b = std::max(a, offset + length);  // the final partial unit
  if (a >= offset + length) {  // within one unit
    return explicit_zeros(offset, length);
  }
  if (offset < a) QCOW_TRY(explicit_zeros(offset, a - offset));
  if (a < b) {
    // A raw data file must read as the guest does by itself: zero the data there too
    // (the partial units at the edges get their zeros written through write_guest).
    if (raw_data()) QCOW_TRY(io_.zero_data(a, b - a));
    QCOW_TRY(zero_units(a, b - a, unmap));
  }
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
    // QEMU's qcow2_cluster_is_allocated: a host cluster (data or preallocated zeros) or compressed data.
    bool allocated = e.compressed() || has_host(geo_, e);
    L2Entry ne;
    if (backing_ || allocated) {
      if (geo_.extended_l2) ne.bitmap = kL2BitmapAllZero;
      else if (header_->version >= 3) ne.word = kOflagZero;
    }
    if (ne == e) continue;
    QCOW_TRY(ensure_l2_writable(pos).status());
    QCOW_TRY(set_l2_entry(pos, ne));
    QCOW_TRY(release_host(e));
    // A raw data file reads as the guest now does (zeros) by itself.
    if (raw_data()) QCOW_TRY(io_.zero_data(pos, std::min(cs, header_->size - pos)));
  }
  return Status::ok();
}

}  // namespace qcow
