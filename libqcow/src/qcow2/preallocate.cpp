// Preallocation at creation (metadata, falloc, full): L2 tables and data clusters for
// the whole disk, then the data range reserved or zero-filled on the host.
#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "io/zeros.hpp"
#include "qcow2/qcow2_driver.hpp"

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
    QCOW_ASSIGN_OR_RETURN(uint64_t host, alloc_data_clusters(guest, in_table));
    for (uint64_t i = 0; i < in_table; ++i) {
      L2Entry e;
      e.word = (host + i * cs) | kOflagCopied;  // extended L2: bitmap 0, space reserved, reads from backing/zeros
      QCOW_TRY(set_l2_entry(guest + i * cs, e));
    }
    data_start = std::min(data_start, host);
    data_end = std::max(data_end, host + in_table * cs);
    if (!external_data()) alloc_end_ = std::max(alloc_end_, host + in_table * cs);
    c += in_table;
  }
  QCOW_TRY(flush_metadata());
  if (mode == Preallocation::kFalloc && data_end > data_start) {
    QCOW_TRY(io_.allocate_data(data_start, data_end - data_start));
  } else if (mode == Preallocation::kFull && data_end > data_start) {
    QCOW_TRY(write_zeros(data_start, data_end - data_start,
                         [this](uint64_t o, std::span<const uint8_t> z) { return io_.write_data(o, z); }));
  }
  return io_.flush();
}

}  // namespace qcow
