// The qcow2 header and its extensions: bytes <-> struct, no I/O.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qcow/status.hpp"

namespace qcow {

struct FeatureName {
  uint8_t type = 0;  // 0 incompatible, 1 compatible, 2 autoclear
  uint8_t bit = 0;
  std::string name;
};

struct UnknownExtension {
  uint32_t type = 0;
  std::vector<uint8_t> data;
};

struct BitmapsExtension {
  uint32_t nb_bitmaps = 0;
  uint64_t bitmap_directory_size = 0;
  uint64_t bitmap_directory_offset = 0;
};

struct CryptoExtension {
  uint64_t offset = 0;
  uint64_t length = 0;
};

struct Header {
  uint32_t version = 3;
  uint64_t backing_file_offset = 0;
  uint32_t backing_file_size = 0;
  uint32_t cluster_bits = 16;
  uint64_t size = 0;
  uint32_t crypt_method = 0;
  uint32_t l1_size = 0;
  uint64_t l1_table_offset = 0;
  uint64_t refcount_table_offset = 0;
  uint32_t refcount_table_clusters = 0;
  uint32_t nb_snapshots = 0;
  uint64_t snapshots_offset = 0;
  uint64_t incompatible_features = 0;
  uint64_t compatible_features = 0;
  uint64_t autoclear_features = 0;
  uint32_t refcount_order = 4;
  uint32_t header_length = 0;
  uint8_t compression_type = 0;
  // Header bytes past the fields we know (kept and written back).
  std::vector<uint8_t> unknown_header_fields;

  std::string backing_file;
  std::optional<std::string> backing_format;
  std::vector<FeatureName> feature_names;
  std::optional<BitmapsExtension> bitmaps;
  std::optional<CryptoExtension> crypto;
  std::optional<std::string> data_file;
  std::vector<UnknownExtension> unknown_extensions;

  uint64_t cluster_size() const { return uint64_t(1) << cluster_bits; }
  bool extended_l2() const { return incompatible_features & (1u << 4); }
  uint32_t refcount_bits() const { return 1u << refcount_order; }
};

// Parses the first cluster of an image (buf may be shorter when the file is).
// Validates every field that does not need the file size; names the field and value on error.
Result<Header> parse_header(std::span<const uint8_t> buf);

// The header fields that change after creation. Each names the bytes it occupies
// (spec: "Header"), so nothing outside format/ and meta/ knows header offsets.
enum class HeaderField {
  kSize,
  kL1Table,               // l1_size and l1_table_offset (one write: they change together)
  kRefcountTable,         // refcount_table_offset and refcount_table_clusters
  kSnapshotTable,         // nb_snapshots and snapshots_offset
  kIncompatibleFeatures,  // version 3 only, like the rest
  kCompatibleFeatures,
  kAutoclearFeatures,
  kRefcountOrder,
};
struct HeaderBytes {
  uint32_t offset;
  uint32_t length;
};
HeaderBytes header_field_bytes(HeaderField f);

// The fixed fields (72 bytes for version 2, 104 for version 3) as the struct
// holds them, backing_file_offset/size and header_length included. out.size()
// must be at least that long.
void encode_fixed_header(const Header& h, std::span<uint8_t> out);

// Encodes header, extensions and backing file name into one cluster.
// Fails with kInvalidArgument when they do not fit.
Result<std::vector<uint8_t>> encode_header(const Header& h);

// Where encode_header_layout() puts things: the optional feature name table
// (QEMU writes it with clusters above 4 KiB) can be left out, and the backing
// file name placed at a chosen offset after the extensions (0: right after them).
struct HeaderLayout {
  bool feature_table = true;
  uint64_t backing_file_offset = 0;
};
// encode_header() with that layout; *extensions_end (when given) receives the end
// of the extensions, their end marker included.
Result<std::vector<uint8_t>> encode_header_layout(const Header& h, const HeaderLayout& layout, uint64_t* extensions_end);

// Names of incompatible feature bits we do not support, from the feature table when present.
std::string describe_unknown_incompatible(const Header& h, uint64_t bits);

}  // namespace qcow
