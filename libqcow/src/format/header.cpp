#include "format/header.hpp"

#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"

namespace qcow {
namespace {

// Feature names QEMU writes into the feature name table, so tools without a
// given feature can still say which one they lack.
const FeatureName kKnownFeatures[] = {
    {0, 0, "dirty bit"},          {0, 1, "corrupt bit"},      {0, 2, "external data file"},
    {0, 3, "compression type"},   {0, 4, "extended L2 entries"}, {1, 0, "lazy refcounts"},
    {2, 0, "bitmaps"},            {2, 1, "raw external data"},
};

Status bad(const char* field, uint64_t value, const std::string& why) {
  return Status::corrupt(fmt::format("invalid header: {} {:#x}: {}", field, value, why));
}

}  // namespace

namespace {

// The fixed fields (version 2: 72 bytes; version 3: header_length bytes).
Result<Header> parse_fixed_fields(std::span<const uint8_t> buf) {
  if (buf.size() < kHeaderV2Length) return Status::corrupt(fmt::format("file too short for a qcow2 header ({} bytes)", buf.size()));
  const uint8_t* p = buf.data();
  if (load_be32(p) != kQcowMagic) return Status::corrupt("not a qcow2 image (bad magic)");
  Header h;
  h.version = load_be32(p + 4);
  if (h.version != 2 && h.version != 3)
    return Status::unsupported(fmt::format("unsupported qcow2 version {}", h.version));
  h.backing_file_offset = load_be64(p + 8);
  h.backing_file_size = load_be32(p + 16);
  h.cluster_bits = load_be32(p + 20);
  h.size = load_be64(p + 24);
  h.crypt_method = load_be32(p + 32);
  h.l1_size = load_be32(p + 36);
  h.l1_table_offset = load_be64(p + 40);
  h.refcount_table_offset = load_be64(p + 48);
  h.refcount_table_clusters = load_be32(p + 56);
  h.nb_snapshots = load_be32(p + 60);
  h.snapshots_offset = load_be64(p + 64);

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
    return bad("cluster_bits", h.cluster_bits, "must be between 9 and 21 (512 B to 2 MiB clusters)");
  const uint64_t cs = h.cluster_size();

  if (h.version == 2) {
    h.header_length = kHeaderV2Length;
    h.refcount_order = 4;
  } else {
    if (buf.size() < kHeaderV3MinLength) return Status::corrupt("file too short for a version 3 qcow2 header");
    h.incompatible_features = load_be64(p + 72);
    h.compatible_features = load_be64(p + 80);
    h.autoclear_features = load_be64(p + 88);
    h.refcount_order = load_be32(p + 96);
    h.header_length = load_be32(p + 100);
    if (h.header_length < kHeaderV3MinLength || h.header_length % 8 != 0 || h.header_length > cs)
      return bad("header_length", h.header_length, "must be a multiple of 8 from 104 to the cluster size");
    if (buf.size() < h.header_length) return Status::corrupt("file too short for the header length it declares");
    if (h.header_length > 104) h.compression_type = p[104];
    if (h.header_length > kHeaderV3Length)
      h.unknown_header_fields.assign(p + kHeaderV3Length, p + h.header_length);
  }
  return h;
}

// Values that are valid alone but not together, or that we do not support.
Status check_fields(const Header& h) {
  if (h.refcount_order > 6) return bad("refcount_order", h.refcount_order, "must be at most 6 (64-bit refcounts)");
  if (h.crypt_method > kCryptLuks) return bad("crypt_method", h.crypt_method, "unknown encryption method");

  if (h.incompatible_features & kIncompatCompression) {
    if (h.header_length <= 104) return Status::corrupt("invalid header: compression type bit set but the compression_type field is missing");
    if (h.compression_type == 0) return Status::corrupt("invalid header: compression type bit set but compression_type is zlib (0)");
  } else if (h.compression_type != 0) {
    return bad("compression_type", h.compression_type, "non-zlib compression type without the compression type feature bit");
  }
  if (h.compression_type > 1) return Status::unsupported(fmt::format("unknown compression type {}", h.compression_type));
  if (h.extended_l2() && h.cluster_bits < kMinExtendedL2ClusterBits)
    return bad("cluster_bits", h.cluster_bits, "extended L2 entries need clusters of at least 16 KiB");
  return Status::ok();
}

// Header extensions: from the end of the header to the end of the first cluster
// (or to the backing file name, which must come after them).
Status parse_extensions(std::span<const uint8_t> buf, Header& h) {
  const uint8_t* p = buf.data();
  const uint64_t cs = h.cluster_size();
  // QEMU reads up to the first cluster's end (bytes past a short file read as zeros:
  // an end marker); an extension header that does not fit there is "too large".
  uint64_t ext_end = cs;
  if (h.backing_file_offset) {
    if (h.backing_file_size > kMaxBackingFileNameLength)
      return bad("backing_file_size", h.backing_file_size, "backing file name longer than 1023 bytes");
    if (h.backing_file_offset > cs || h.backing_file_size > cs - h.backing_file_offset)
      return bad("backing_file_offset", h.backing_file_offset, "backing file name outside the first cluster");
    if (h.backing_file_offset + h.backing_file_size > buf.size())
      return Status::corrupt("file too short for the backing file name");
    h.backing_file.assign(reinterpret_cast<const char*>(p + h.backing_file_offset), h.backing_file_size);
    ext_end = std::min(ext_end, h.backing_file_offset);
  }
  uint64_t off = h.header_length;
  bool seen[6] = {};
  while (off < ext_end) {
    if (ext_end - off < 8) return Status::corrupt(fmt::format("Header extension too large (at offset {:#x})", off));
    if (off + 8 > buf.size()) break;  // zeros past the end of the file: the end marker
    uint32_t type = load_be32(p + off);
    uint32_t len = load_be32(p + off + 4);
    off += 8;
    // QEMU checks the length first, even the end marker's.
    if (len > ext_end - off) return Status::corrupt(fmt::format("Header extension too large (at offset {:#x})", off - 8));
    if (type == kExtEnd) break;
    if (len > buf.size() - off)
      return Status::corrupt(fmt::format("invalid header extension {:#x} at offset {:#x}: length {} exceeds the file", type, off - 8, len));
    const uint8_t* d = p + off;
    auto once = [&](int idx, const char* name) -> Status {
      if (seen[idx]) return Status::corrupt(fmt::format("duplicate {} header extension", name));
      seen[idx] = true;
      return Status::ok();
    };
    switch (type) {
      case kExtBackingFormat:
        QCOW_TRY(once(0, "backing format"));
        if (len > kMaxBackingFormatLength) return bad("backing format extension length", len, "too long");
        h.backing_format.emplace(reinterpret_cast<const char*>(d), len);
        break;
      case kExtFeatureTable:
        QCOW_TRY(once(1, "feature name table"));
        for (uint32_t i = 0; i + 48 <= len; i += 48) {
          FeatureName f{d[i], d[i + 1], {}};
          const char* n = reinterpret_cast<const char*>(d + i + 2);
          f.name.assign(n, strnlen(n, 46));
          h.feature_names.push_back(std::move(f));
        }
        break;
      case kExtBitmaps: {
        QCOW_TRY(once(2, "bitmaps"));
        if (len != 24) return Status::corrupt("bitmaps_ext: Invalid extension length");
        if ((h.autoclear_features & kAutoclearBitmaps) && load_be32(d + 4) != 0)
          return Status::corrupt("bitmaps_ext: Reserved field is not zero");
        BitmapsExtension b{load_be32(d), load_be64(d + 8), load_be64(d + 16)};
        h.bitmaps = b;
        break;
      }
      case kExtCrypto:
        QCOW_TRY(once(3, "encryption header pointer"));
        if (len < 16) return bad("encryption header extension length", len, "shorter than 16 bytes");
        h.crypto = CryptoExtension{load_be64(d), load_be64(d + 8)};
        break;
      case kExtDataFile:
        QCOW_TRY(once(4, "external data file"));
        if (len > 4096) return bad("data file extension length", len, "too long");
        h.data_file.emplace(reinterpret_cast<const char*>(d), len);
        break;
      default:
        h.unknown_extensions.push_back({type, std::vector<uint8_t>(d, d + len)});
        break;
    }
    off += align_up(len, 8);
  }
  return Status::ok();
}

}  // namespace

Result<Header> parse_header(std::span<const uint8_t> buf) {
  QCOW_ASSIGN_OR_RETURN(Header h, parse_fixed_fields(buf));
  QCOW_TRY(check_fields(h));
  QCOW_TRY(parse_extensions(buf, h));
  return h;
}

HeaderBytes header_field_bytes(HeaderField f) {
  switch (f) {
    case HeaderField::kSize: return {24, 8};
    case HeaderField::kL1Table: return {36, 12};         // l1_size, l1_table_offset
    case HeaderField::kRefcountTable: return {48, 12};   // refcount_table_offset, refcount_table_clusters
    case HeaderField::kSnapshotTable: return {60, 12};   // nb_snapshots, snapshots_offset
    case HeaderField::kIncompatibleFeatures: return {72, 8};
    case HeaderField::kCompatibleFeatures: return {80, 8};
    case HeaderField::kAutoclearFeatures: return {88, 8};
    case HeaderField::kRefcountOrder: return {96, 4};
  }
  return {0, 0};
}

void encode_fixed_header(const Header& h, std::span<uint8_t> out) {
  uint8_t* p = out.data();
  store_be32(p, kQcowMagic);
  store_be32(p + 4, h.version);
  store_be64(p + 8, h.backing_file_offset);
  store_be32(p + 16, h.backing_file_size);
  store_be32(p + 20, h.cluster_bits);
  store_be64(p + 24, h.size);
  store_be32(p + 32, h.crypt_method);
  store_be32(p + 36, h.l1_size);
  store_be64(p + 40, h.l1_table_offset);
  store_be64(p + 48, h.refcount_table_offset);
  store_be32(p + 56, h.refcount_table_clusters);
  store_be32(p + 60, h.nb_snapshots);
  store_be64(p + 64, h.snapshots_offset);
  if (h.version < 3 || out.size() < kHeaderV3MinLength) return;
  store_be64(p + 72, h.incompatible_features);
  store_be64(p + 80, h.compatible_features);
  store_be64(p + 88, h.autoclear_features);
  store_be32(p + 96, h.refcount_order);
  store_be32(p + 100, h.header_length);
}

Result<std::vector<uint8_t>> encode_header(const Header& h) { return encode_header_layout(h, {}, nullptr); }

Result<std::vector<uint8_t>> encode_header_layout(const Header& h, const HeaderLayout& layout, uint64_t* extensions_end) {
  const uint64_t cs = h.cluster_size();
  std::vector<uint8_t> out(cs, 0);
  uint8_t* p = out.data();
  Header fixed = h;
  fixed.backing_file_offset = 0;  // set below, once the extensions are laid out
  fixed.backing_file_size = 0;
  fixed.header_length = kHeaderV3Length + uint32_t(h.unknown_header_fields.size());
  encode_fixed_header(fixed, out);
  uint64_t off = kHeaderV2Length;
  if (h.version >= 3) {
    const uint32_t len = fixed.header_length;
    p[104] = h.compression_type;
    std::copy(h.unknown_header_fields.begin(), h.unknown_header_fields.end(), p + kHeaderV3Length);
    off = len;
  }
  auto put_ext = [&](uint32_t type, const uint8_t* data, size_t len) -> bool {
    if (off + 8 + align_up(len, 8) > cs) return false;
    store_be32(p + off, type);
    store_be32(p + off + 4, uint32_t(len));
    std::copy(data, data + len, p + off + 8);
    off += 8 + align_up(len, 8);
    return true;
  };
  bool ok = true;
  if (h.crypto) {
    uint8_t d[16];
    store_be64(d, h.crypto->offset);
    store_be64(d + 8, h.crypto->length);
    ok &= put_ext(kExtCrypto, d, 16);
  }
  if (h.backing_format)
    ok &= put_ext(kExtBackingFormat, reinterpret_cast<const uint8_t*>(h.backing_format->data()), h.backing_format->size());
  if (h.data_file)
    ok &= put_ext(kExtDataFile, reinterpret_cast<const uint8_t*>(h.data_file->data()), h.data_file->size());
  // Like QEMU, only with clusters above 4 KiB: the 392-byte table would leave no room for
  // a backing file name in a 512-byte cluster.
  if (h.version >= 3 && cs > 4096 && layout.feature_table) {
    std::vector<uint8_t> table(std::size(kKnownFeatures) * 48, 0);
    for (size_t i = 0; i < std::size(kKnownFeatures); ++i) {
      table[i * 48] = kKnownFeatures[i].type;
      table[i * 48 + 1] = kKnownFeatures[i].bit;
      std::copy(kKnownFeatures[i].name.begin(), kKnownFeatures[i].name.end(), table.begin() + i * 48 + 2);
    }
    ok &= put_ext(kExtFeatureTable, table.data(), table.size());
  }
  if (h.bitmaps) {
    uint8_t d[24] = {};
    store_be32(d, h.bitmaps->nb_bitmaps);
    store_be64(d + 8, h.bitmaps->bitmap_directory_size);
    store_be64(d + 16, h.bitmaps->bitmap_directory_offset);
    ok &= put_ext(kExtBitmaps, d, 24);
  }
  for (const auto& e : h.unknown_extensions) ok &= put_ext(e.type, e.data.data(), e.data.size());
  if (!ok || off + 8 > cs) return Status::invalid("header extensions do not fit in the first cluster");
  off += 8;  // end-of-extensions marker (zeros)
  if (extensions_end) *extensions_end = off;
  if (!h.backing_file.empty()) {
    if (h.backing_file.size() > kMaxBackingFileNameLength) return Status::invalid("backing file name longer than 1023 bytes");
    if (layout.backing_file_offset) {
      if (layout.backing_file_offset < off) return Status::invalid("backing file name offset inside the header extensions");
      off = layout.backing_file_offset;
    }
    if (off + h.backing_file.size() > cs) return Status::invalid("backing file name does not fit in the first cluster");
    store_be64(p + 8, off);
    store_be32(p + 16, uint32_t(h.backing_file.size()));
    std::copy(h.backing_file.begin(), h.backing_file.end(), p + off);
  }
  return out;
}

std::string describe_unknown_incompatible(const Header& h, uint64_t bits) {
  std::string out;
  for (int b = 0; b < 64; ++b) {
    if (!(bits & (1ull << b))) continue;
    std::string name = fmt::format("Unknown incompatible feature: {:x}", 1ull << b);
    for (const auto& f : h.feature_names)
      if (f.type == 0 && f.bit == b) name = f.name;
    if (!out.empty()) out += ", ";
    out += name;
  }
  return out;
}

}  // namespace qcow
