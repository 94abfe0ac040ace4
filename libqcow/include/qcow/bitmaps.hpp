// Persistent dirty bitmaps (qcow2 bitmaps extension): read them out of one image and
// store them into another (qemu-img convert --bitmaps).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

struct DirtyBitmap {
  std::string name;
  uint32_t granularity_bits = 16;  // one bit per 2^granularity_bits bytes of the disk
  bool auto_ = false;              // enabled: tracks every write
  bool in_use = false;             // not saved cleanly: its bits cannot be trusted (and are not read)
  std::vector<uint8_t> bits;       // bit i: bytes [i << granularity_bits, ...); whole bytes, tail bits zero
};

// The consistent bitmaps of a qcow2 image (none for raw, or when the extension is stale),
// in directory order, with their bits.
Result<std::vector<DirtyBitmap>> read_bitmaps(Image& image);

// Adds `bitmaps` to a qcow2 image opened writable, then closes it: the bitmaps describe
// its content as it is, so nothing may be written after them. Bitmap data, tables and
// directory go into fresh clusters and are made durable before one header write adds the
// extension (a crash leaves the image without them, plus leaked clusters). Refused when
// the image already has bitmaps ("Bitmap already exists: NAME" for a name in both).
Status store_bitmaps(Image& image, const std::vector<DirtyBitmap>& bitmaps);

}  // namespace qcow
