// Metadata tables of 64-bit big-endian entries (L1 tables, the refcount table)
// and single-entry updates (L1, L2 and refcount table entries written in place
// by repairs): the one place that turns tables into bytes for the file and back.
// L2 tables are cached as bytes; their entries are read and written with
// load_l2_entry()/store_l2_entry() (map/l2_entry.hpp).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "map/geometry.hpp"
#include "map/l2_entry.hpp"
#include "meta/image_file.hpp"

namespace qcow {

// Decodes `bytes` (a multiple of 8 long) into entries.
std::vector<uint64_t> decode_table(std::span<const uint8_t> bytes);
// Encodes entries into `bytes` bytes (>= 8 per entry), zero-padded.
std::vector<uint8_t> encode_table(std::span<const uint64_t> entries, uint64_t bytes);

// Reads `entries` entries at `offset`; kCorrupt naming `what` when the file ends first.
Result<std::vector<uint64_t>> load_table(const ImageFile& file, uint64_t offset, uint64_t entries, std::string_view what);
// Writes a whole table, zero-padded to `bytes`, in one write.
Status store_table(ImageFile& file, Structure what, uint64_t offset, std::span<const uint64_t> entries, uint64_t bytes);
// Writes entry `index` of the table at `table_offset` (8 bytes, one sector).
Status store_table_entry(ImageFile& file, Structure what, uint64_t table_offset, uint64_t index, uint64_t value);
// Repairs: one L1 entry of an active or snapshot L1 table, one L2 entry (8 or 16
// bytes) of an active or snapshot L2 table.
Status repair_l1_entry(ImageFile& file, uint64_t table_offset, uint64_t index, uint64_t value);
Status repair_l2_entry(ImageFile& file, const Geometry& g, uint64_t table_offset, uint64_t index, L2Entry e);

}  // namespace qcow
