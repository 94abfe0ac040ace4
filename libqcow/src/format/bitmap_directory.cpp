#include "format/bitmap_directory.hpp"

#include <fmt/format.h>

#include "codec/bytes.hpp"

namespace qcow {

Result<std::vector<BitmapDirEntry>> parse_bitmap_directory(std::span<const uint8_t> dir, uint32_t count, const Header& h) {
  const uint64_t cs = h.cluster_size();
  std::vector<BitmapDirEntry> out;
  uint64_t p = 0;
  for (uint32_t i = 0; i < count; ++i) {
    if (p + 24 > dir.size()) return Status::corrupt(fmt::format("bitmap directory entry {} is truncated", i));
    const uint8_t* e = dir.data() + p;
    BitmapDirEntry d;
    d.table_offset = load_be64(e);
    d.table_size = load_be32(e + 8);
    d.flags = load_be32(e + 12);
    const uint8_t type = e[16];
    d.granularity_bits = e[17];
    const uint16_t name_size = load_be16(e + 18);
    const uint32_t extra = load_be32(e + 20);
    const uint64_t entry_bytes = align_up(24 + uint64_t(extra) + name_size, 8);
    if (entry_bytes > dir.size() - p) return Status::corrupt("Broken bitmap directory");
    if (extra != 0) return Status::unsupported("Bitmap extra data is not supported");
    d.name.assign(reinterpret_cast<const char*>(e + 24), name_size);
    // QEMU's check_dir_entry (block/qcow2-bitmap.c): an image breaking these does not open there.
    const uint64_t phys_bytes = uint64_t(d.table_size) * cs;
    // (phys_bytes <= 512 MiB and granularity_bits <= 31 keep the shift below 2^63.)
    const bool broken = d.table_size == 0 || d.table_offset == 0 || (d.table_offset & (cs - 1)) ||
                        (d.flags & ~uint32_t(3)) || phys_bytes > (512ull << 20) ||
                        (d.granularity_bits <= 31 && !(d.flags & kBitmapInUse) &&
                         h.size > ((phys_bytes * 8) << d.granularity_bits));
    if (broken && type == 1 && d.granularity_bits >= 9 && d.granularity_bits <= 31 && name_size && name_size <= 1023)
      return Status::corrupt(fmt::format("Bitmap '{}' doesn't satisfy the constraints", d.name));
    if (type != 1) return Status::corrupt(fmt::format("bitmap {} has type {} (1: dirty tracking)", i, type));
    if (d.granularity_bits < 9 || d.granularity_bits > 31)
      return Status::corrupt(fmt::format("bitmap {} granularity 2^{} is not between 512 B and 2 GiB", i, d.granularity_bits));
    if (name_size == 0 || name_size > 1023)
      return Status::corrupt(fmt::format("bitmap {} name length {} is not between 1 and 1023", i, name_size));
    out.push_back(std::move(d));
    p += entry_bytes;
  }
  if (p != dir.size()) return Status::corrupt("Broken bitmap directory");
  return out;
}

std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapDirEntry>& entries) {
  std::vector<uint8_t> out;
  for (const BitmapDirEntry& d : entries) {
    const size_t at = out.size();
    out.resize(at + align_up(24 + uint64_t(d.name.size()), 8), 0);
    uint8_t* e = out.data() + at;
    store_be64(e, d.table_offset);
    store_be32(e + 8, d.table_size);
    store_be32(e + 12, d.flags);
    e[16] = 1;  // dirty tracking
    e[17] = d.granularity_bits;
    store_be16(e + 18, uint16_t(d.name.size()));
    std::copy(d.name.begin(), d.name.end(), e + 24);
  }
  return out;
}

}  // namespace qcow
