// Snapshot table: parse with bounds on every count and length.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "format/snapshot_table.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

bool snapshot_l1_valid(const SnapshotEntry& s, uint64_t cs, uint64_t file_size) {
  if (s.l1_size > kMaxL1Bytes / 8) return false;
  if (!s.l1_size) return (s.l1_table_offset & (cs - 1)) == 0;
  return !(s.l1_table_offset & (cs - 1)) && s.l1_table_offset >= cs && s.l1_table_offset <= file_size &&
         uint64_t(s.l1_size) * 8 <= file_size - s.l1_table_offset;
}

Result<std::vector<SnapshotEntry>> load_snapshot_table(File& file, const Header& h, uint64_t file_size,
                                                       uint64_t* table_bytes, bool keep_unusable_l1) {
  *table_bytes = 0;
  std::vector<SnapshotEntry> out;
  if (h.nb_snapshots == 0) return out;
  const uint64_t cs = h.cluster_size();
  if (h.snapshots_offset & (cs - 1))
    return Status::corrupt(fmt::format("snapshot table offset {:#x} is not cluster aligned", h.snapshots_offset));
  if (h.snapshots_offset < cs || h.snapshots_offset >= file_size)
    return Status::corrupt(fmt::format("snapshot table offset {:#x} is outside the file", h.snapshots_offset));
  uint64_t off = h.snapshots_offset;
  const uint64_t l1_max_entries = kMaxL1Bytes / 8;
  std::vector<uint8_t> entry;
  for (uint32_t i = 0; i < h.nb_snapshots; ++i) {
    if (off - h.snapshots_offset > kMaxSnapshotTableBytes) return Status::limit("snapshot table larger than 64 MiB");
    uint8_t fixed[kSnapshotFixedBytes];
    QCOW_ASSIGN_OR_RETURN(size_t got, file.read_at(off, fixed));
    if (got < sizeof fixed) return Status::corrupt(fmt::format("snapshot table entry {} at {:#x} is truncated", i, off));
    auto length = snapshot_entry_length(fixed);
    if (!length) {
      Status st = length.status();
      return st.prepend(fmt::format("snapshot {}: ", i));
    }
    entry.resize(*length);
    QCOW_ASSIGN_OR_RETURN(got, file.read_at(off, entry));
    // The padding after the last entry may be missing at the end of the file.
    const uint64_t unpadded = kSnapshotFixedBytes + load_be32(fixed + 36) + load_be16(fixed + 12) + load_be16(fixed + 14);
    if (got < unpadded) return Status::corrupt(fmt::format("snapshot table entry {} at {:#x} is truncated", i, off));
    SnapshotEntry s = parse_snapshot_entry(entry);
    if (!keep_unusable_l1 && s.l1_size > l1_max_entries)
      return Status::limit(fmt::format("snapshot '{}' L1 table too large", s.name));
    if (!keep_unusable_l1 && s.l1_size && !snapshot_l1_valid(s, cs, file_size))
      return Status::corrupt(fmt::format("snapshot '{}' L1 table at {:#x} is unaligned or outside the file", s.name,
                                         s.l1_table_offset));
    out.push_back(std::move(s));
    off += *length;
  }
  *table_bytes = off - h.snapshots_offset;
  return out;
}

}  // namespace qcow
