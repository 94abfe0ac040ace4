// Creating a qcow2 image: a three-cluster bootstrap (header, refcount table,
// one refcount block), then the ordinary resize path grows the L1 table, so
// image creation exercises the same allocation code as every later write.
#include <fmt/format.h>

#include <cstring>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"
#include "refcount/refcount.hpp"

namespace qcow {

Status create_qcow2(const std::string& path, const CreateOptions& o) {
  QCOW_TRY(validate_create_options(o));
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
  if (!o.data_file.empty()) {
    h.incompatible_features |= kIncompatDataFile;
    h.data_file = o.data_file;
    if (o.data_file_raw) h.autoclear_features |= kAutoclearDataFileRaw;
  }
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
  if (!o.data_file.empty()) {  // as QEMU: a raw file of the virtual size, old contents dropped
    auto opened = open_posix_file(o.data_file, FileMode::kCreate, LockMode::kExclusive);
    if (!opened) {
      const Status& s = opened.status();
      if (!s.saved_errno()) return s;
      return Status::error(s.code(), fmt::format("Could not create '{}': {}", o.data_file, std::strerror(s.saved_errno())),
                           s.saved_errno());
    }
    auto f = std::move(opened).value();
    QCOW_TRY(f->truncate(o.size));
    QCOW_TRY(f->flush());
    QCOW_TRY(f->close());
  }
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
  // A raw data file maps every cluster from the start (QEMU preallocates metadata for it).
  const bool raw_off = o.data_file_raw && o.preallocation == Preallocation::kOff;
  QCOW_TRY(q->preallocate(raw_off ? Preallocation::kMetadata : o.preallocation));
  return q->close();
}

}  // namespace qcow
