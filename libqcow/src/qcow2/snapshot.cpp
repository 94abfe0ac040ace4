// Snapshot table: parse with bounds on every count and length.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "format/snapshot_table.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Result<std::vector<SnapshotEntry>> load_snapshot_table(File& file, const Header& h, uint64_t file_size,
                                                       uint64_t* table_bytes) {
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
    if (s.l1_size > l1_max_entries) return Status::limit(fmt::format("snapshot '{}' L1 table too large", s.name));
    if (s.l1_size && ((s.l1_table_offset & (cs - 1)) || s.l1_table_offset < cs || s.l1_table_offset > file_size ||
                      uint64_t(s.l1_size) * 8 > file_size - s.l1_table_offset))
      return Status::corrupt(fmt::format("snapshot '{}' L1 table at {:#x} is unaligned or outside the file", s.name,
                                         s.l1_table_offset));
    out.push_back(std::move(s));
    off += *length;
  }
  *table_bytes = off - h.snapshots_offset;
  return out;
}

}  // namespace qcow

namespace qcow {

// The bitmap directory (spec: "Bitmaps"), for info. Only consistent bitmaps count:
// without autoclear bit 0 the extension is stale (a program unaware of bitmaps
// wrote the image) and QEMU ignores it too. A directory that breaks the spec
// is reported as an error; callers treat that as "no bitmaps" (check reports it).
Result<std::vector<BitmapInfo>> load_bitmap_list(File& file, const Header& h, uint64_t file_size) {
  std::vector<BitmapInfo> out;
  if (!h.bitmaps || !(h.autoclear_features & kAutoclearBitmaps) || h.bitmaps->nb_bitmaps == 0) return out;
  const BitmapsExtension& b = *h.bitmaps;
  const uint64_t cs = h.cluster_size();
  if (b.nb_bitmaps > 65535) return Status::limit(fmt::format("{} bitmaps (at most 65535)", b.nb_bitmaps));
  if (b.bitmap_directory_size > (64ull << 20) || b.bitmap_directory_size < 24ull * b.nb_bitmaps)
    return Status::corrupt(fmt::format("bitmap directory size {} does not fit {} bitmaps", b.bitmap_directory_size,
                                       b.nb_bitmaps));
  if ((b.bitmap_directory_offset & (cs - 1)) || b.bitmap_directory_offset < cs ||
      b.bitmap_directory_offset > file_size || b.bitmap_directory_size > file_size - b.bitmap_directory_offset)
    return Status::corrupt(fmt::format("bitmap directory at {:#x} is unaligned or outside the file", b.bitmap_directory_offset));
  std::vector<uint8_t> dir(b.bitmap_directory_size);
  QCOW_ASSIGN_OR_RETURN(size_t got, file.read_at(b.bitmap_directory_offset, dir));
  if (got < dir.size()) return Status::corrupt("bitmap directory is truncated");
  uint64_t p = 0;
  for (uint32_t i = 0; i < b.nb_bitmaps; ++i) {
    if (p + 24 > dir.size()) return Status::corrupt(fmt::format("bitmap directory entry {} is truncated", i));
    const uint8_t* e = dir.data() + p;
    const uint32_t flags = load_be32(e + 12);
    const uint8_t type = e[16], granularity_bits = e[17];
    const uint16_t name_size = load_be16(e + 18);
    const uint32_t extra = load_be32(e + 20);
    if (type != 1) return Status::corrupt(fmt::format("bitmap {} has type {} (1: dirty tracking)", i, type));
    if (granularity_bits < 9 || granularity_bits > 31)
      return Status::corrupt(fmt::format("bitmap {} granularity 2^{} is not between 512 B and 2 GiB", i, granularity_bits));
    if (name_size == 0 || name_size > 1023)
      return Status::corrupt(fmt::format("bitmap {} name length {} is not between 1 and 1023", i, name_size));
    const uint64_t entry = align_up(24 + uint64_t(extra) + name_size, 8);
    if (entry > dir.size() - p) return Status::corrupt(fmt::format("bitmap directory entry {} is truncated", i));
    BitmapInfo bi;
    bi.name.assign(reinterpret_cast<const char*>(e + 24 + extra), name_size);
    bi.granularity = uint32_t(1) << granularity_bits;
    bi.in_use = flags & 1;
    bi.auto_ = flags & 2;
    out.push_back(std::move(bi));
    p += entry;
  }
  return out;
}

}  // namespace qcow
