// Creating a qcow2 image: a three-cluster bootstrap (header, refcount table,
// one refcount block), then the ordinary resize path grows the L1 table, so
// image creation exercises the same allocation code as every later write.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"
#include "refcount/refcount.hpp"

namespace qcow {

Status Qcow2Driver::preallocate(Preallocation mode) {
  if (mode == Preallocation::kOff) return Status::ok();
  const uint64_t cs = geo_.cluster_size;
  const uint64_t clusters = div_round_up(header_->size, cs);
  uint64_t data_start = UINT64_MAX, data_end = 0;
  for (uint64_t c = 0; c < clusters;) {
    uint64_t guest = c * cs;
    QCOW_TRY(ensure_l2_writable(guest).status());
    uint64_t in_table = std::min<uint64_t>(geo_.l2_entries - geo_.l2_index(guest), clusters - c);
    QCOW_ASSIGN_OR_RETURN(uint64_t host, refcounts_->alloc(in_table));
    for (uint64_t i = 0; i < in_table; ++i) {
      L2Entry e;
      e.word = (host + i * cs) | kOflagCopied;  // extended L2: bitmap 0, space reserved, reads from backing/zeros
      QCOW_TRY(set_l2_entry(guest + i * cs, e));
    }
    data_start = std::min(data_start, host);
    data_end = std::max(data_end, host + in_table * cs);
    alloc_end_ = std::max(alloc_end_, host + in_table * cs);
    c += in_table;
  }
  QCOW_TRY(flush_metadata());
  if (mode == Preallocation::kFalloc && data_end > data_start) {
    QCOW_TRY(io_.allocate_data(data_start, data_end - data_start));
  } else if (mode == Preallocation::kFull && data_end > data_start) {
    std::vector<uint8_t> zeros(std::min<uint64_t>(4ull << 20, data_end - data_start), 0);
    for (uint64_t o = data_start; o < data_end; o += zeros.size())
      QCOW_TRY(io_.write_data(o, std::span<const uint8_t>(zeros.data(), std::min<uint64_t>(zeros.size(), data_end - o))));
  }
  return io_.flush();
}

Status create_qcow2(const std::string& path, const CreateOptions& o) {
  if (o.version != 2 && o.version != 3) return Status::invalid("compat must be 0.10 or 1.1");
  if (!is_power_of_two(o.cluster_size) || o.cluster_size < 512 || o.cluster_size > (2u << 20))
    return Status::invalid("Cluster size must be a power of two between 512 and 2048k");
  if (o.extended_l2 && o.cluster_size < (16u << 10))
    return Status::invalid("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  if (!is_power_of_two(uint64_t(o.refcount_bits)) || o.refcount_bits > 64)
    return Status::invalid("Refcount width must be a power of two and may not exceed 64 bits");
  if (o.version == 2) {
    if (o.refcount_bits != 16) return Status::invalid("Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)");
    if (o.lazy_refcounts) return Status::invalid("Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    if (o.extended_l2) return Status::invalid("Extended L2 entries are only supported with compatibility level 1.1 and above (use compat=1.1 or greater)");
    if (o.compression_type != CompressionType::kZlib)
      return Status::invalid("Compression type 'zstd' requires compatibility level 1.1 and above (use compat=1.1 or greater)");
  }
  if (o.preallocation != Preallocation::kOff && !o.backing_file.empty() && !o.extended_l2)
    return Status::invalid("Backing file and preallocation can only be used at the same time if extended_l2 is on");

  if (o.encrypt.format == "aes")
    return Status::invalid("Use of AES-CBC encrypted qcow2 images is no longer supported: use encrypt.format=luks");
  if (!o.encrypt.format.empty() && o.encrypt.format != "luks")
    return Status::invalid(fmt::format("Parameter 'encrypt.format' does not accept value '{}'", o.encrypt.format));
  if (!o.encrypt.format.empty() && !o.key_secret) return Status::invalid("Parameter 'encrypt.key-secret' is required for cipher");
  Header h;
  h.version = uint32_t(o.version);
  h.cluster_bits = uint32_t(std::countr_zero(o.cluster_size));
  h.refcount_order = uint32_t(std::countr_zero(uint32_t(o.refcount_bits)));
  if (o.extended_l2) h.incompatible_features |= kIncompatExtendedL2;
  if (o.compression_type == CompressionType::kZstd) {
    h.incompatible_features |= kIncompatCompression;
    h.compression_type = 1;
  }
  if (o.lazy_refcounts) h.compatible_features |= kCompatLazyRefcounts;
  h.backing_file = o.backing_file;
  if (!o.backing_format.empty()) h.backing_format = o.backing_format;
  const uint64_t cs = o.cluster_size;
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = 1;
  QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t> head, encode_header(h));

  std::vector<uint8_t> boot(3 * cs, 0);
  std::copy(head.begin(), head.end(), boot.begin());
  store_be64(boot.data() + cs, 2 * cs);  // refcount table entry 0 -> block at cluster 2
  for (uint64_t c = 0; c < 3; ++c) set_refcount_entry(boot.data() + 2 * cs, h.refcount_order, c, 1);
  {
    QCOW_ASSIGN_OR_RETURN(auto f, open_posix_file(path, FileMode::kCreate, LockMode::kExclusive));
    std::unique_ptr<File> file = std::move(f);
    if (o.wrap_file) file = o.wrap_file(std::move(file));
    QCOW_TRY(file->write_at(0, boot));
    QCOW_TRY(file->flush());
  }
  OpenOptions oo;
  oo.format = Format::kQcow2;
  oo.writable = true;
  oo.open_backing = false;
  oo.wrap_file = o.wrap_file;
  QCOW_ASSIGN_OR_RETURN(auto d, open_driver(path, oo, 0));
  auto* q = static_cast<Qcow2Driver*>(d.get());
  if (!o.encrypt.format.empty()) QCOW_TRY(q->init_luks(o.encrypt, *o.key_secret));
  QCOW_TRY(q->resize(o.size));
  QCOW_TRY(q->preallocate(o.preallocation));
  return q->close();
}

}  // namespace qcow
