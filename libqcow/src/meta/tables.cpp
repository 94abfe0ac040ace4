#include "meta/tables.hpp"

#include <fmt/format.h>

#include "codec/bytes.hpp"

namespace qcow {

std::vector<uint64_t> decode_table(std::span<const uint8_t> bytes) {
  std::vector<uint64_t> out(bytes.size() / 8);
  for (size_t i = 0; i < out.size(); ++i) out[i] = load_be64(bytes.data() + 8 * i);
  return out;
}

std::vector<uint8_t> encode_table(std::span<const uint64_t> entries, uint64_t bytes) {
  std::vector<uint8_t> out(std::max<uint64_t>(bytes, entries.size() * 8), 0);
  for (size_t i = 0; i < entries.size(); ++i) store_be64(out.data() + 8 * i, entries[i]);
  return out;
}

// Read straight into the entries' memory and converted in place: an L1 table can be
// tens of MiB (4 TiB with 4 KiB clusters: 16 MiB), and a second buffer for the raw bytes
// doubled the peak memory of info, map and check on such images.
Result<std::vector<uint64_t>> load_table(const ImageFile& file, uint64_t offset, uint64_t entries, std::string_view what) {
  std::vector<uint64_t> table(entries);
  std::span<uint8_t> raw(reinterpret_cast<uint8_t*>(table.data()), table.size() * 8);
  QCOW_ASSIGN_OR_RETURN(size_t got, file.read_at(offset, raw));
  if (got < raw.size())
    return Status::corrupt(fmt::format("{}: {} at {:#x} ({} entries) extends beyond the end of the file", file.path(), what,
                                       offset, entries));
  for (uint64_t& e : table) e = load_be64(reinterpret_cast<const uint8_t*>(&e));
  return table;
}

Status store_table(ImageFile& file, Structure what, uint64_t offset, std::span<const uint64_t> entries, uint64_t bytes) {
  std::vector<uint8_t> raw = encode_table(entries, bytes);
  return file.write_metadata(what, offset, raw);
}

Status store_table_entry(ImageFile& file, Structure what, uint64_t table_offset, uint64_t index, uint64_t value) {
  uint8_t b[8];
  store_be64(b, value);
  return file.write_metadata(what, table_offset + 8 * index, b);
}

Status repair_l1_entry(ImageFile& file, uint64_t table_offset, uint64_t index, uint64_t value) {
  uint8_t b[8];
  store_be64(b, value);
  return file.write_metadata(structure_bit(Structure::kActiveL1) | structure_bit(Structure::kInactiveL1), "L1 table",
                             table_offset + 8 * index, b);
}

Status repair_l2_entry(ImageFile& file, const Geometry& g, uint64_t table_offset, uint64_t index, L2Entry e) {
  uint8_t b[16];
  store_l2_entry(b, g, 0, e);
  return file.write_metadata(structure_bit(Structure::kActiveL2) | structure_bit(Structure::kInactiveL2), "L2 table",
                             table_offset + index * g.l2_entry_size, std::span<const uint8_t>(b, g.l2_entry_size));
}

}  // namespace qcow
