// The bitmap directory (spec: "Bitmap directory"): entries <-> bytes, no I/O.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "format/header.hpp"
#include "qcow/status.hpp"

namespace qcow {

struct BitmapDirEntry {
  uint64_t table_offset = 0;  // the bitmap table (contiguous, cluster aligned)
  uint32_t table_size = 0;    // its entries
  uint32_t flags = 0;         // bit 0 in_use, bit 1 auto
  uint8_t granularity_bits = 16;
  std::string name;
};

constexpr uint32_t kBitmapInUse = 1u << 0;
constexpr uint32_t kBitmapAuto = 1u << 1;

// Bytes of a bitmap's data for a disk of `disk_size` bytes (one bit per granule).
inline uint64_t bitmap_data_bytes(uint64_t disk_size, uint8_t granularity_bits) {
  const uint64_t bits = (disk_size >> granularity_bits) + ((disk_size & ((uint64_t(1) << granularity_bits) - 1)) != 0);
  return bits / 8 + (bits % 8 != 0);
}

// Parses `count` entries with QEMU's checks (check_dir_entry) and messages; `h` gives the
// cluster size and the virtual size the tables must cover.
Result<std::vector<BitmapDirEntry>> parse_bitmap_directory(std::span<const uint8_t> dir, uint32_t count, const Header& h);
// The directory bytes of `entries` (each padded to 8 bytes, no extra data).
std::vector<uint8_t> encode_bitmap_directory(const std::vector<BitmapDirEntry>& entries);

}  // namespace qcow
