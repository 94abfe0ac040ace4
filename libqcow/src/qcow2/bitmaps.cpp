// The persistent dirty bitmaps' directory, listed for info.
#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/bitmap_directory.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

// The bitmap directory (spec: "Bitmaps"), for info. Only consistent bitmaps count:
// without autoclear bit 0 the extension is stale (a program unaware of bitmaps
// wrote the image) and QEMU ignores it too. A directory that breaks the spec
// is an error, with QEMU's message where QEMU has one: QEMU refuses to open such an
// image, and so does Qcow2Driver::open.
Result<std::vector<BitmapDirEntry>> load_bitmap_directory(File& file, const Header& h, uint64_t file_size) {
  std::vector<BitmapDirEntry> out;
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
  return parse_bitmap_directory(dir, b.nb_bitmaps, h);
}

Result<std::vector<BitmapInfo>> load_bitmap_list(File& file, const Header& h, uint64_t file_size) {
  QCOW_ASSIGN_OR_RETURN(std::vector<BitmapDirEntry> entries, load_bitmap_directory(file, h, file_size));
  std::vector<BitmapInfo> out;
  for (BitmapDirEntry& d : entries) {
    BitmapInfo bi;
    bi.name = std::move(d.name);
    bi.granularity = uint32_t(1) << d.granularity_bits;
    bi.in_use = d.flags & kBitmapInUse;
    bi.auto_ = d.flags & kBitmapAuto;
    out.push_back(std::move(bi));
  }
  return out;
}

}  // namespace qcow
