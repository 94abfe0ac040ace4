// Mapping lookup, reads and per-layer block status.
#include <fmt/format.h>

#include <cstring>

#include "codec/bytes.hpp"
#include "compress/codec.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Result<uint64_t> Qcow2Driver::l2_slice_position(uint64_t l2_offset, uint64_t guest_offset, uint64_t* in_slice) {
  uint64_t pos = geo_.l2_index(guest_offset) * geo_.l2_entry_size;
  uint64_t slice = l2_cache_->slice_size();
  *in_slice = pos & (slice - 1);
  return l2_offset + (pos & ~(slice - 1));
}

Result<L2Entry> Qcow2Driver::get_l2_entry(uint64_t guest_offset) {
  uint64_t l1i = geo_.l1_index(guest_offset);
  if (l1i >= l1_.size()) return L2Entry{};
  uint64_t l2_offset = l1_[l1i] & kL1eOffsetMask;
  if (!l2_offset) return L2Entry{};
  uint64_t in_slice;
  QCOW_ASSIGN_OR_RETURN(uint64_t slice_off, l2_slice_position(l2_offset, guest_offset, &in_slice));
  auto p = l2_cache_->get(slice_off);
  if (!p) {
    Status s = p.status();
    return s.prepend(fmt::format("{}: L1 index {:#x}: ", file_->path(), l1i));
  }
  const L2Entry e = load_l2_entry(*p + in_slice, geo_, 0);
  // Entries no operation may act on (QEMU's messages): reads would return garbage and
  // writes would spread the damage (e.g. keep an invalid bitmap's allocation bits).
  if (geo_.extended_l2 && subcluster_type(geo_, e, 0) == SubclusterType::kInvalid)
    return Status::corrupt(fmt::format("{}: Invalid cluster entry found (L2 offset: {:#x}, L2 index: {:#x})",
                                       file_->path(), l2_offset, geo_.l2_index(guest_offset)));
  if (e.host_offset() & (geo_.cluster_size - 1))
    return Status::corrupt(fmt::format("{}: Data cluster offset {:#x} unaligned (guest offset: {:#x})", file_->path(),
                                       e.host_offset(), align_down(guest_offset, geo_.cluster_size)));
  if (header_->incompatible_features & kIncompatDataFile) QCOW_TRY(check_external_entry(e, guest_offset, l2_offset));
  return e;
}

// With an external data file a data cluster's host offset is its guest offset, and
// nothing is compressed (spec; QEMU's messages).
Status Qcow2Driver::check_external_entry(L2Entry e, uint64_t guest_offset, uint64_t l2_offset) const {
  const uint64_t cluster = align_down(guest_offset, geo_.cluster_size);
  if (e.compressed())
    return Status::corrupt(fmt::format("{}: Compressed cluster in an image with an external data file (L2 offset: {:#x}, "
                                       "L2 index: {:#x})", file_->path(), l2_offset, geo_.l2_index(guest_offset)));
  if (has_host(geo_, e) && e.host_offset() != cluster)
    return Status::corrupt(fmt::format("{}: External data file host cluster offset {:#x} does not match guest cluster offset: "
                                       "{:#x}, L2 index: {:#x})", file_->path(), e.host_offset(), cluster,
                                       geo_.l2_index(guest_offset)));
  return Status::ok();
}

Status Qcow2Driver::set_l2_entry(uint64_t guest_offset, L2Entry e) {
  uint64_t l1i = geo_.l1_index(guest_offset);
  uint64_t l2_offset = l1_[l1i] & kL1eOffsetMask;
  uint64_t in_slice;
  QCOW_ASSIGN_OR_RETURN(uint64_t slice_off, l2_slice_position(l2_offset, guest_offset, &in_slice));
  QCOW_ASSIGN_OR_RETURN(uint8_t * p, l2_cache_->get(slice_off));
  store_l2_entry(p + in_slice, geo_, 0, e);
  l2_cache_->mark_dirty(slice_off);
  return Status::ok();
}

Status Qcow2Driver::check_range(uint64_t offset, uint64_t length) const {
  if (offset > header_->size || length > header_->size - offset)
    return Status::invalid(fmt::format("{}: request [{:#x}, +{:#x}) is beyond the end of the image ({} bytes)", file_->path(),
                                       offset, length, header_->size));
  return Status::ok();
}

// The run of one kind that starts at offset, within this layer. Runs of data
// continue across clusters while the host offsets stay contiguous, so reads of
// sequentially allocated data become one host read.
Result<LayerRun> Qcow2Driver::layer_status(uint64_t offset, uint64_t max_length) {
  LayerRun run;
  uint64_t pos = offset;
  const uint64_t end = offset + max_length;
  bool first = true;
  uint64_t next_host = 0;
  while (pos < end) {
    // No L2 table: the whole L1 entry's range is unallocated (one step, not one per cluster,
    // so huge sparse images map in time proportional to their L1 table).
    uint64_t l1i = geo_.l1_index(pos);
    if (l1i >= l1_.size() || !(l1_[l1i] & kL1eOffsetMask)) {
      // Past the L1 table (a snapshot's disk_size may exceed what its table covers)
      // everything is unallocated: one step to the end, not one per missing entry.
      uint64_t piece_end = l1i >= l1_.size() ? end : std::min(end, (l1i + 1) * geo_.l2_coverage());
      if (first) {
        run.kind = LayerRun::kUnallocated;
        first = false;
      } else if (run.kind != LayerRun::kUnallocated || run.has_host) {
        break;
      }
      run.length += piece_end - pos;
      pos = piece_end;
      continue;
    }
    QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(pos));
    uint64_t cluster_start = align_down(pos, geo_.cluster_size);
    uint32_t sc = geo_.sc_index(pos);
    SubclusterType t = subcluster_type(geo_, e, sc);
    if (t == SubclusterType::kInvalid)
      return Status::corrupt(fmt::format("{}: invalid L2 entry {:#018x} bitmap {:#018x} for guest offset {:#x}", file_->path(),
                                         e.word, e.bitmap, pos));
    uint64_t host = e.host_offset();
    if (host && (host & (geo_.cluster_size - 1)))
      return Status::corrupt(fmt::format("{}: cluster allocation offset {:#x} unaligned (guest offset {:#x})", file_->path(),
                                         host, cluster_start));
    // Extent of the same type within this cluster.
    uint32_t last_sc = sc + 1;
    if (t != SubclusterType::kCompressed)
      while (last_sc < geo_.subclusters && subcluster_type(geo_, e, last_sc) == t) ++last_sc;
    uint64_t piece_end = t == SubclusterType::kCompressed ? cluster_start + geo_.cluster_size
                                                          : cluster_start + (uint64_t(last_sc) << geo_.subcluster_bits);
    piece_end = std::min(piece_end, end);
    LayerRun::Kind kind;
    bool has_host = false;
    uint64_t piece_host = 0;
    switch (t) {
      case SubclusterType::kNormal: kind = LayerRun::kData; has_host = true; break;
      case SubclusterType::kCompressed: kind = LayerRun::kCompressed; break;
      case SubclusterType::kZeroAlloc: kind = LayerRun::kZero; has_host = true; break;
      case SubclusterType::kZeroPlain: kind = LayerRun::kZero; break;
      case SubclusterType::kUnallocatedAlloc: kind = LayerRun::kUnallocated; has_host = true; break;
      default: kind = LayerRun::kUnallocated; break;
    }
    if (has_host) piece_host = host + (pos - cluster_start);
    if (first) {
      run.kind = kind;
      run.has_host = has_host;
      run.host_offset = piece_host;
      first = false;
    } else if (kind != run.kind || has_host != run.has_host || (has_host && piece_host != next_host)) {
      break;
    }
    next_host = piece_host + (piece_end - pos);
    run.length += piece_end - pos;
    pos = piece_end;
  }
  return run;
}

Status Qcow2Driver::read_compressed(L2Entry e, uint64_t guest_cluster, std::span<uint8_t> out, uint64_t in_cluster) {
  if (!decompressed_valid_ || decompressed_word_ != e.word) {
    CompressedExtent ce = compressed_extent(geo_, e);
    if (ce.offset >= kMaxHostOffset || ce.offset + ce.length > file_size_ + 512 || ce.length > 2 * geo_.cluster_size + 512)
      return Status::corrupt(fmt::format("{}: compressed cluster at host offset {:#x} ({} bytes) lies beyond the end of the file "
                                         "(guest offset {:#x})", file_->path(), ce.offset, ce.length, guest_cluster));
    std::vector<uint8_t> in(ce.length, 0);
    QCOW_ASSIGN_OR_RETURN(size_t got, file_->read_at(ce.offset, in));
    (void)got;  // a final partial sector past EOF reads as zeros
    decompressed_.resize(geo_.cluster_size);
    Status s = compress::decompress(CompressionType(header_->compression_type), in, decompressed_);
    if (!s.is_ok()) {
      decompressed_valid_ = false;
      return s.prepend(fmt::format("{}: guest offset {:#x}: ", file_->path(), guest_cluster));
    }
    decompressed_word_ = e.word;
    decompressed_valid_ = true;
  }
  std::memcpy(out.data(), decompressed_.data() + in_cluster, out.size());
  return Status::ok();
}

Status Qcow2Driver::read(uint64_t offset, std::span<uint8_t> buf) { return guard(read_guest(offset, buf)); }

Status Qcow2Driver::read_guest(uint64_t offset, std::span<uint8_t> buf) {
  QCOW_TRY(check_range(offset, buf.size()));
  uint64_t pos = offset;
  const uint64_t end = offset + buf.size();
  while (pos < end) {
    QCOW_ASSIGN_OR_RETURN(LayerRun run, layer_status(pos, end - pos));
    std::span<uint8_t> out = buf.subspan(pos - offset, run.length);
    switch (run.kind) {
      case LayerRun::kData: {
        if (encrypted_io()) {
          QCOW_TRY(read_encrypted(pos, run.host_offset, out));
          break;
        }
        if ((header_->incompatible_features & kIncompatDataFile) && !external_data())
          return Status::unsupported(fmt::format("{}: the external data file is not open", file_->path()));
        QCOW_ASSIGN_OR_RETURN(size_t got, io_.data_file().read_at(run.host_offset, out));
        if (got < out.size()) std::memset(out.data() + got, 0, out.size() - got);
        break;
      }
      case LayerRun::kZero:
        std::memset(out.data(), 0, out.size());
        break;
      case LayerRun::kUnallocated:
        if (backing_) QCOW_TRY(read_clamped(*backing_, pos, out));
        else std::memset(out.data(), 0, out.size());
        break;
      case LayerRun::kCompressed: {
        uint64_t p = pos;
        while (p < pos + run.length) {
          uint64_t cstart = align_down(p, geo_.cluster_size);
          uint64_t n = std::min(cstart + geo_.cluster_size, pos + run.length) - p;
          QCOW_ASSIGN_OR_RETURN(L2Entry e, get_l2_entry(p));
          QCOW_TRY(read_compressed(e, cstart, buf.subspan(p - offset, n), p - cstart));
          p += n;
        }
        break;
      }
    }
    pos += run.length;
  }
  return Status::ok();
}

Status Qcow2Driver::read_view(uint64_t offset, std::span<uint8_t> buf) {
  return read_zero_filled(header_->size, offset, buf,
                          [this](uint64_t o, std::span<uint8_t> b) { return read_guest(o, b); });
}

}  // namespace qcow

namespace qcow {

// QEMU (qcow2_detect_metadata_preallocation) treats an image as metadata-preallocated
// when clearly more clusters are refcounted than the host file has allocated; its block
// status then looks into the host file and reports holes under data clusters as zeros.
// qemu-img map shows that, so map_status mirrors it.
Result<bool> Qcow2Driver::detect_metadata_preallocation() {
  if (metadata_preallocation_ >= 0) return metadata_preallocation_ == 1;
  QCOW_ASSIGN_OR_RETURN(uint64_t file_length, file_->size());
  QCOW_ASSIGN_OR_RETURN(uint64_t allocated, file_->allocated_bytes());
  uint64_t real_clusters = allocated / geo_.cluster_size;
  uint64_t threshold = std::max(real_clusters * 10 / 9, real_clusters + 2);
  if (!writable_ && refcounts_->reftable().empty())
    QCOW_TRY(refcounts_->load(header_->refcount_table_offset, header_->refcount_table_clusters));
  uint64_t end_cluster = div_round_up(file_length, geo_.cluster_size), count = 0;
  for (uint64_t c = 0; c < end_cluster && count < threshold; ++c) {
    QCOW_ASSIGN_OR_RETURN(uint64_t rc, refcounts_->get(c));
    count += rc != 0;
  }
  metadata_preallocation_ = count >= threshold ? 1 : 0;
  return metadata_preallocation_ == 1;
}

Result<LayerRun> Qcow2Driver::map_status(uint64_t offset, uint64_t max_length) {
  QCOW_ASSIGN_OR_RETURN(LayerRun run, layer_status(offset, max_length));
  if (encrypted_io()) {
    run.has_host = false;  // QEMU reports no host offsets for encrypted images
    return run;
  }
  // (QEMU's heuristic counts the image file's refcounts; data clusters in an external
  // data file have none, so it never fires there.)
  if (run.kind != LayerRun::kData || external_data()) return run;
  QCOW_ASSIGN_OR_RETURN(bool prealloc, detect_metadata_preallocation());
  if (!prealloc) return run;
  uint64_t end = 0;
  QCOW_ASSIGN_OR_RETURN(bool data, file_->probe_data_for_report(run.host_offset, &end));
  if (end > run.host_offset) run.length = std::min(run.length, end - run.host_offset);
  run.file_zero = !data;
  return run;
}

}  // namespace qcow
