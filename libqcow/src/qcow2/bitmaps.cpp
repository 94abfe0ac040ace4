// The persistent dirty bitmaps' directory, listed for info.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

// The bitmap directory (spec: "Bitmaps"), for info. Only consistent bitmaps count:
// without autoclear bit 0 the extension is stale (a program unaware of bitmaps
// wrote the image) and QEMU ignores it too. A directory that breaks the spec
// is an error, with QEMU's message where QEMU has one: QEMU refuses to open such an
// image, and so does Qcow2Driver::open.
Result<std::vector<BitmapInfo>> load_bitmap_list(File& file, const Header& h, uint64_t file_size) {
  std::vector<BitmapInfo> out;
  if (!h.bitmaps || !(h.autoclear_features & kAutoclearBitmaps)) return out;
  if (h.bitmaps->nb_bitmaps == 0) return Status::corrupt("found bitmaps extension with zero bitmaps");
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
    const uint64_t table_offset = load_be64(e);
    const uint32_t table_size = load_be32(e + 8);
    const uint64_t entry_bytes = align_up(24 + uint64_t(extra) + name_size, 8);
    if (entry_bytes > dir.size() - p) return Status::corrupt("Broken bitmap directory");
    if (extra != 0) return Status::unsupported("Bitmap extra data is not supported");
    // QEMU's check_dir_entry (block/qcow2-bitmap.c): an image breaking these does not open there.
    const uint64_t phys_bytes = uint64_t(table_size) * cs;
    // (phys_bytes <= 512 MiB and granularity_bits <= 31 keep the shift below 2^63.)
    const bool broken = table_size == 0 || table_offset == 0 || (table_offset & (cs - 1)) || (flags & ~uint32_t(3)) ||
                        phys_bytes > (512ull << 20) ||
                        (granularity_bits <= 31 && !(flags & 1) && h.size > ((phys_bytes * 8) << granularity_bits));
    if (broken && type == 1 && granularity_bits >= 9 && granularity_bits <= 31 && name_size && name_size <= 1023)
      return Status::corrupt(fmt::format("Bitmap '{}' doesn't satisfy the constraints",
                                         std::string(reinterpret_cast<const char*>(e + 24 + extra), name_size)));
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
  if (p != dir.size()) return Status::corrupt("Broken bitmap directory");
  return out;
}

}  // namespace qcow
