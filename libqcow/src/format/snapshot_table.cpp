#include "format/snapshot_table.hpp"

#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"

namespace qcow {

SnapshotInfo SnapshotEntry::info() const {
  SnapshotInfo s;
  s.id = id;
  s.name = name;
  s.l1_table_offset = l1_table_offset;
  s.l1_size = l1_size;
  s.date_sec = date_sec;
  s.date_nsec = date_nsec;
  s.vm_clock_nsec = vm_clock_nsec;
  s.vm_state_size = extra.size() >= 8 ? load_be64(extra.data()) : vm_state_size32;
  if (extra.size() >= 16) s.disk_size = load_be64(extra.data() + 8);
  if (extra.size() >= 24) s.icount = load_be64(extra.data() + 16);
  return s;
}

Result<uint64_t> snapshot_entry_length(std::span<const uint8_t> fixed) {
  const uint32_t extra = load_be32(fixed.data() + 36);
  if (extra > kMaxSnapshotExtraData)
    return Status::limit(fmt::format("snapshot extra data too large ({} bytes, at most {})", extra, kMaxSnapshotExtraData));
  const uint64_t id_len = load_be16(fixed.data() + 12), name_len = load_be16(fixed.data() + 14);
  return align_up(kSnapshotFixedBytes + extra + id_len + name_len, 8);
}

SnapshotEntry parse_snapshot_entry(std::span<const uint8_t> b) {
  const uint8_t* p = b.data();
  SnapshotEntry e;
  e.l1_table_offset = load_be64(p);
  e.l1_size = load_be32(p + 8);
  const uint16_t id_len = load_be16(p + 12), name_len = load_be16(p + 14);
  e.date_sec = load_be32(p + 16);
  e.date_nsec = load_be32(p + 20);
  e.vm_clock_nsec = load_be64(p + 24);
  e.vm_state_size32 = load_be32(p + 32);
  const uint32_t extra = load_be32(p + 36);
  const uint8_t* var = p + kSnapshotFixedBytes;
  e.extra.assign(var, var + extra);
  e.id.assign(reinterpret_cast<const char*>(var + extra), id_len);
  e.name.assign(reinterpret_cast<const char*>(var + extra + id_len), name_len);
  return e;
}

std::vector<uint8_t> encode_snapshot_table(const std::vector<SnapshotEntry>& entries) {
  std::vector<uint8_t> out;
  for (const SnapshotEntry& e : entries) {
    const size_t at = out.size();
    out.resize(at + align_up(kSnapshotFixedBytes + e.extra.size() + e.id.size() + e.name.size(), 8), 0);
    uint8_t* p = out.data() + at;
    store_be64(p, e.l1_table_offset);
    store_be32(p + 8, e.l1_size);
    store_be16(p + 12, uint16_t(e.id.size()));
    store_be16(p + 14, uint16_t(e.name.size()));
    store_be32(p + 16, e.date_sec);
    store_be32(p + 20, e.date_nsec);
    store_be64(p + 24, e.vm_clock_nsec);
    store_be32(p + 32, e.vm_state_size32);
    store_be32(p + 36, uint32_t(e.extra.size()));
    uint8_t* var = p + kSnapshotFixedBytes;
    std::copy(e.extra.begin(), e.extra.end(), var);
    std::copy(e.id.begin(), e.id.end(), var + e.extra.size());
    std::copy(e.name.begin(), e.name.end(), var + e.extra.size() + e.id.size());
  }
  return out;
}

}  // namespace qcow
