// Compressed writes: whole clusters compressed (zlib or zstd) and packed back to back
// into host clusters, several to a cluster, as QEMU packs them.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow/compress.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

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
  if (external_data())
    return Status::unsupported(fmt::format("{}: compressed writes are not supported with an external data file", file_->path()));
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
  if (external_data())
    return Status::unsupported(fmt::format("{}: compressed writes are not supported with an external data file", file_->path()));
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
  decompressed_valid_ = false;
  return Status::ok();
}

}  // namespace qcow
