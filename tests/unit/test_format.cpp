// Tests for the qcow2 header codec (format/header.*): encode -> parse round trips over
// a grid of layouts, a hand-written header parsed field by field, and every validation
// error of parse_header.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "format/bitmap_directory.hpp"
#include "format/header.hpp"

namespace {

using namespace qcow;
using Bytes = std::vector<uint8_t>;

uint64_t align8(uint64_t v) { return (v + 7) & ~uint64_t(7); }

// What encode_header needs in bytes for h (header, extensions, end marker, backing name),
// computed independently of the encoder.
uint64_t encoded_bytes_needed(const Header& h) {
  uint64_t n = h.version >= 3 ? kHeaderV3Length + h.unknown_header_fields.size() : kHeaderV2Length;
  if (h.crypto) n += 8 + 16;
  if (h.backing_format) n += 8 + align8(h.backing_format->size());
  if (h.data_file) n += 8 + align8(h.data_file->size());
  if (h.version >= 3 && h.cluster_size() > 4096) n += 8 + 8 * 48;  // feature name table (QEMU: clusters > 4 KiB)
  if (h.bitmaps) n += 8 + 24;
  for (const auto& e : h.unknown_extensions) n += 8 + align8(e.data.size());
  n += 8;  // end of extensions
  n += h.backing_file.size();
  return n;
}

Header base_header(uint32_t version, uint32_t cluster_bits) {
  Header h;
  h.version = version;
  h.cluster_bits = cluster_bits;
  h.size = (uint64_t(5) << 30) + 512 * 3;
  h.l1_size = 11;
  h.l1_table_offset = uint64_t(3) << cluster_bits;
  h.refcount_table_offset = uint64_t(1) << cluster_bits;
  h.refcount_table_clusters = 2;
  h.nb_snapshots = 0;
  h.snapshots_offset = 0;
  h.crypt_method = 0;
  return h;
}

Result<Header> parse(const Bytes& b) { return parse_header(std::span<const uint8_t>(b.data(), b.size())); }

Bytes encode_ok(const Header& h) {
  auto r = encode_header(h);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

// Parses bytes that must fail, and checks that the message names the field.
void expect_invalid(const Bytes& b, std::initializer_list<const char*> words, ErrorCode code = ErrorCode::kCorrupt) {
  auto r = parse(b);
  REQUIRE_FALSE(r.is_ok());
  const std::string msg = r.status().message();
  CAPTURE(msg);
  CHECK(r.status().code() == code);
  for (const char* w : words) {
    CAPTURE(w);
    CHECK(msg.find(w) != std::string::npos);
  }
}

}  // namespace

TEST_SUITE("qcow::format") {

TEST_CASE("header: encode/parse round trips, hand-written bytes, validation errors") {
  SUBCASE("round trip over versions, cluster sizes, refcount orders and extensions") {
    int encoded = 0, rejected = 0;
    for (uint32_t version : {2u, 3u}) {
      for (uint32_t cb = kMinClusterBits; cb <= kMaxClusterBits; ++cb) {
        for (uint32_t order = 0; order <= 6; ++order) {
          for (int ext_l2 = 0; ext_l2 <= 1; ++ext_l2) {
            for (int zstd = 0; zstd <= 1; ++zstd) {
              for (int backing = 0; backing <= 1; ++backing) {
                for (int unknown_ext = 0; unknown_ext <= 1; ++unknown_ext) {
                  for (int unknown_fields = 0; unknown_fields <= 1; ++unknown_fields) {
                    if (version == 2 && (ext_l2 || zstd || unknown_fields)) continue;  // v3-only features
                    if (ext_l2 && cb < kMinExtendedL2ClusterBits) continue;
                    CAPTURE(version);
                    CAPTURE(cb);
                    CAPTURE(order);
                    CAPTURE(ext_l2);
                    CAPTURE(zstd);
                    CAPTURE(backing);
                    CAPTURE(unknown_ext);
                    CAPTURE(unknown_fields);
                    Header h = base_header(version, cb);
                    h.refcount_order = order;
                    if (version == 3) {
                      h.compatible_features = kCompatLazyRefcounts;
                      h.autoclear_features = 0;
                      if (ext_l2) h.incompatible_features |= kIncompatExtendedL2;
                      if (zstd) {
                        h.incompatible_features |= kIncompatCompression;
                        h.compression_type = 1;
                      }
                      if (unknown_fields)
                        h.unknown_header_fields = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
                    }
                    if (backing) {
                      h.backing_file = "../images/backing-file-" + std::to_string(cb) + ".qcow2";
                      h.backing_format = "qcow2";
                    }
                    if (unknown_ext) h.unknown_extensions.push_back({0x12345678, {0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09}});

                    auto enc = encode_header(h);
                    const bool fits = encoded_bytes_needed(h) <= h.cluster_size();
                    CHECK(enc.is_ok() == fits);
                    if (!enc.is_ok()) {
                      CHECK(enc.status().code() == ErrorCode::kInvalidArgument);
                      ++rejected;
                      continue;
                    }
                    ++encoded;
                    const Bytes& bytes = enc.value();
                    REQUIRE(bytes.size() == h.cluster_size());
                    CHECK(load_be32(bytes.data()) == kQcowMagic);
                    auto parsed = parse(bytes);
                    INFO(parsed.status().message());
                    REQUIRE(parsed.is_ok());
                    const Header& p = parsed.value();
                    CHECK(p.version == h.version);
                    CHECK(p.cluster_bits == h.cluster_bits);
                    CHECK(p.cluster_size() == (uint64_t(1) << cb));
                    CHECK(p.size == h.size);
                    CHECK(p.crypt_method == h.crypt_method);
                    CHECK(p.l1_size == h.l1_size);
                    CHECK(p.l1_table_offset == h.l1_table_offset);
                    CHECK(p.refcount_table_offset == h.refcount_table_offset);
                    CHECK(p.refcount_table_clusters == h.refcount_table_clusters);
                    CHECK(p.nb_snapshots == h.nb_snapshots);
                    CHECK(p.snapshots_offset == h.snapshots_offset);
                    if (version == 3) {
                      CHECK(p.incompatible_features == h.incompatible_features);
                      CHECK(p.compatible_features == h.compatible_features);
                      CHECK(p.autoclear_features == h.autoclear_features);
                      CHECK(p.refcount_order == order);
                      CHECK(p.refcount_bits() == (1u << order));
                      CHECK(p.header_length == kHeaderV3Length + h.unknown_header_fields.size());
                      CHECK(p.compression_type == h.compression_type);
                      CHECK(p.unknown_header_fields == h.unknown_header_fields);
                      CHECK(p.extended_l2() == bool(ext_l2));
                      // The feature name table, written (as QEMU does) only with clusters above 4 KiB.
                      CHECK(p.feature_names.size() == (cb > 12 ? 8u : 0u));
                    } else {
                      CHECK(p.incompatible_features == 0);
                      CHECK(p.refcount_order == 4);  // v2 has 16-bit refcounts only
                      CHECK(p.header_length == kHeaderV2Length);
                      CHECK(p.feature_names.empty());
                    }
                    CHECK(p.backing_file == h.backing_file);
                    CHECK(p.backing_format == h.backing_format);
                    if (backing) {
                      CHECK(load_be32(bytes.data() + 16) == h.backing_file.size());
                      uint64_t bfo = load_be64(bytes.data() + 8);
                      CHECK(bfo >= p.header_length);
                      CHECK(bfo + h.backing_file.size() <= h.cluster_size());
                    } else {
                      CHECK(load_be64(bytes.data() + 8) == 0);
                      CHECK(load_be32(bytes.data() + 16) == 0);
                    }
                    REQUIRE(p.unknown_extensions.size() == h.unknown_extensions.size());
                    for (size_t i = 0; i < p.unknown_extensions.size(); ++i) {
                      CHECK(p.unknown_extensions[i].type == h.unknown_extensions[i].type);
                      CHECK(p.unknown_extensions[i].data == h.unknown_extensions[i].data);
                    }
                    CHECK_FALSE(p.bitmaps.has_value());
                    CHECK_FALSE(p.crypto.has_value());
                    CHECK_FALSE(p.data_file.has_value());
                    // Encoding what we parsed reproduces the same bytes.
                    auto again = encode_header(p);
                    REQUIRE(again.is_ok());
                    CHECK(again.value() == bytes);
                  }
                }
              }
            }
          }
        }
      }
    }
    CHECK(encoded > 1000);
    CHECK(rejected == 0);  // even 512-byte v3 clusters hold all of the above (no feature table there)
  }

  SUBCASE("bitmaps, encryption and data-file extensions round trip") {
    Header h = base_header(3, 16);
    h.bitmaps = BitmapsExtension{3, 0x1234, 0x50000};
    h.crypto = CryptoExtension{0x60000, 0x2000};
    h.crypt_method = kCryptLuks;
    h.data_file = std::string("data.raw");
    h.autoclear_features = kAutoclearBitmaps;
    Bytes b = encode_ok(h);
    auto p = parse(b);
    INFO(p.status().message());
    REQUIRE(p.is_ok());
    REQUIRE(p->bitmaps.has_value());
    CHECK(p->bitmaps->nb_bitmaps == 3);
    CHECK(p->bitmaps->bitmap_directory_size == 0x1234);
    CHECK(p->bitmaps->bitmap_directory_offset == 0x50000);
    REQUIRE(p->crypto.has_value());
    CHECK(p->crypto->offset == 0x60000);
    CHECK(p->crypto->length == 0x2000);
    CHECK(p->crypt_method == kCryptLuks);
    CHECK(p->data_file == std::optional<std::string>("data.raw"));
    CHECK(p->autoclear_features == kAutoclearBitmaps);
  }

  SUBCASE("512-byte version 3 clusters hold a backing file name (no feature table), as with QEMU") {
    Header h = base_header(3, 9);
    h.backing_file = std::string(300, 'b');
    h.backing_format = "qcow2";
    Bytes b = encode_ok(h);
    CHECK(load_be32(b.data() + kHeaderV3Length) == kExtBackingFormat);
    auto p = parse(b);
    REQUIRE(p.is_ok());
    CHECK(p->backing_file == h.backing_file);
    CHECK(p->feature_names.empty());
    Header big = base_header(3, 13);  // 8 KiB: the table is there
    auto q = parse(encode_ok(big));
    REQUIRE(q.is_ok());
    CHECK(q->feature_names.size() == 8);
  }

  SUBCASE("extensions that do not fit are rejected by the encoder") {
    Header h = base_header(3, 12);
    h.unknown_extensions.push_back({0x11, Bytes(4096, 7)});
    auto r = encode_header(h);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == ErrorCode::kInvalidArgument);
    Header g = base_header(3, 16);
    g.backing_file = std::string(1024, 'x');
    r = encode_header(g);
    REQUIRE_FALSE(r.is_ok());
    CHECK(r.status().code() == ErrorCode::kInvalidArgument);
  }

  SUBCASE("hand-written version 3 header") {
    // clang-format off
    const Bytes kHeader = {
        0x51, 0x46, 0x49, 0xfb,                          // magic "QFI\xfb"
        0x00, 0x00, 0x00, 0x03,                          // version 3
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa0,  // backing_file_offset 0xa0
        0x00, 0x00, 0x00, 0x08,                          // backing_file_size 8
        0x00, 0x00, 0x00, 0x10,                          // cluster_bits 16 (64 KiB)
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x02, 0x00,  // size 4 GiB + 512
        0x00, 0x00, 0x00, 0x00,                          // crypt_method none
        0x00, 0x00, 0x00, 0x09,                          // l1_size 9
        0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,  // l1_table_offset 0x30000
        0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00,  // refcount_table_offset 0x10000
        0x00, 0x00, 0x00, 0x01,                          // refcount_table_clusters 1
        0x00, 0x00, 0x00, 0x00,                          // nb_snapshots 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // snapshots_offset 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18,  // incompatible_features: compression type | extended L2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,  // compatible_features: lazy refcounts
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // autoclear_features none
        0x00, 0x00, 0x00, 0x05,                          // refcount_order 5 (32-bit refcounts)
        0x00, 0x00, 0x00, 0x70,                          // header_length 112
        0x01,                                            // compression_type 1 (zstd)
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,        // padding up to header_length
        0xe2, 0x79, 0x2a, 0xca,                          // 0x70: extension type: backing file format name
        0x00, 0x00, 0x00, 0x05,                          //       extension length 5
        'q', 'c', 'o', 'w', '2', 0x00, 0x00, 0x00,       //       "qcow2", padded to 8
        0x12, 0x34, 0x56, 0x78,                          // 0x80: extension type: unknown to us
        0x00, 0x00, 0x00, 0x04,                          //       extension length 4
        0xde, 0xad, 0xbe, 0xef, 0x00, 0x00, 0x00, 0x00,  //       data, padded to 8
        0x00, 0x00, 0x00, 0x00,                          // 0x90: end of extensions: type 0
        0x00, 0x00, 0x00, 0x00,                          //       length 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // 0x98: unused
        'b', 'a', 's', 'e', '.', 'i', 'm', 'g',          // 0xa0: backing file name
    };
    // clang-format on
    for (bool padded : {false, true}) {
      CAPTURE(padded);
      Bytes b = kHeader;
      if (padded) b.resize(65536, 0);  // a whole first cluster, as read from a file
      auto r = parse(b);
      INFO(r.status().message());
      REQUIRE(r.is_ok());
      const Header& h = r.value();
      CHECK(h.version == 3);
      CHECK(h.backing_file_offset == 0xa0);
      CHECK(h.backing_file_size == 8);
      CHECK(h.cluster_bits == 16);
      CHECK(h.size == (uint64_t(4) << 30) + 512);
      CHECK(h.crypt_method == 0);
      CHECK(h.l1_size == 9);
      CHECK(h.l1_table_offset == 0x30000);
      CHECK(h.refcount_table_offset == 0x10000);
      CHECK(h.refcount_table_clusters == 1);
      CHECK(h.nb_snapshots == 0);
      CHECK(h.snapshots_offset == 0);
      CHECK(h.incompatible_features == (kIncompatCompression | kIncompatExtendedL2));
      CHECK(h.extended_l2());
      CHECK(h.compatible_features == kCompatLazyRefcounts);
      CHECK(h.autoclear_features == 0);
      CHECK(h.refcount_order == 5);
      CHECK(h.refcount_bits() == 32);
      CHECK(h.header_length == 112);
      CHECK(h.compression_type == 1);
      CHECK(h.unknown_header_fields.empty());
      CHECK(h.backing_file == "base.img");
      CHECK(h.backing_format == std::optional<std::string>("qcow2"));
      REQUIRE(h.unknown_extensions.size() == 1);
      CHECK(h.unknown_extensions[0].type == 0x12345678);
      CHECK(h.unknown_extensions[0].data == Bytes{0xde, 0xad, 0xbe, 0xef});
      CHECK(h.feature_names.empty());
    }
  }

  SUBCASE("hand-written version 2 header") {
    // clang-format off
    const Bytes kHeader = {
        0x51, 0x46, 0x49, 0xfb,                          // magic
        0x00, 0x00, 0x00, 0x02,                          // version 2
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // backing_file_offset: none
        0x00, 0x00, 0x00, 0x00,                          // backing_file_size 0
        0x00, 0x00, 0x00, 0x0c,                          // cluster_bits 12 (4 KiB)
        0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00,  // size 1 MiB
        0x00, 0x00, 0x00, 0x00,                          // crypt_method none
        0x00, 0x00, 0x00, 0x01,                          // l1_size 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x00,  // l1_table_offset 0x3000
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,  // refcount_table_offset 0x1000
        0x00, 0x00, 0x00, 0x01,                          // refcount_table_clusters 1
        0x00, 0x00, 0x00, 0x00,                          // nb_snapshots 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // snapshots_offset 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // 0x48: end of extensions
    };
    // clang-format on
    auto r = parse(kHeader);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    CHECK(r->version == 2);
    CHECK(r->cluster_bits == 12);
    CHECK(r->size == (1u << 20));
    CHECK(r->l1_size == 1);
    CHECK(r->l1_table_offset == 0x3000);
    CHECK(r->refcount_table_offset == 0x1000);
    CHECK(r->refcount_table_clusters == 1);
    CHECK(r->refcount_order == 4);
    CHECK(r->header_length == 72);
    CHECK(r->incompatible_features == 0);
    CHECK(r->compression_type == 0);
    CHECK(r->backing_file.empty());
    CHECK_FALSE(r->backing_format.has_value());
  }

  SUBCASE("every validation error names its field") {
    const Header good = base_header(3, 16);
    const Bytes valid = encode_ok(good);
    REQUIRE(parse(valid).is_ok());
    auto with = [&](const std::function<void(uint8_t*)>& edit) {
      Bytes b = valid;
      edit(b.data());
      return b;
    };

    // Magic and version.
    expect_invalid(with([](uint8_t* p) { store_be32(p, 0x514649fa); }), {"magic"});
    expect_invalid(with([](uint8_t* p) { store_be32(p + 4, 1); }), {"version", "1"}, ErrorCode::kUnsupported);
    expect_invalid(with([](uint8_t* p) { store_be32(p + 4, 4); }), {"version", "4"}, ErrorCode::kUnsupported);
    // cluster_bits out of range.
    expect_invalid(with([](uint8_t* p) { store_be32(p + 20, 8); }), {"cluster_bits", "0x8"});
    expect_invalid(with([](uint8_t* p) { store_be32(p + 20, 22); }), {"cluster_bits", "0x16"});
    // header_length: too small, not a multiple of 8, larger than a cluster.
    expect_invalid(with([](uint8_t* p) { store_be32(p + 100, 96); }), {"header_length"});
    expect_invalid(with([](uint8_t* p) { store_be32(p + 100, 72); }), {"header_length"});
    expect_invalid(with([](uint8_t* p) { store_be32(p + 100, 113); }), {"header_length"});
    expect_invalid(with([](uint8_t* p) { store_be32(p + 100, 108); }), {"header_length"});
    expect_invalid(with([](uint8_t* p) { store_be32(p + 100, 65536 + 8); }), {"header_length"});
    {
      // header_length equal to the cluster size is the largest allowed.
      Bytes b = with([](uint8_t* p) { store_be32(p + 100, 65536); });
      std::fill(b.begin() + kHeaderV3Length, b.end(), 0);
      CHECK(parse(b).is_ok());
    }
    // refcount_order and crypt_method.
    expect_invalid(with([](uint8_t* p) { store_be32(p + 96, 7); }), {"refcount_order", "0x7"});
    expect_invalid(with([](uint8_t* p) { store_be32(p + 32, 3); }), {"crypt_method", "0x3"});
    // Compression type: the bit without the field, the bit with zlib, zstd without the bit, unknown type.
    expect_invalid(with([](uint8_t* p) {
                     store_be64(p + 72, kIncompatCompression);
                     store_be32(p + 100, 104);
                   }),
                   {"compression_type"});
    expect_invalid(with([](uint8_t* p) { store_be64(p + 72, kIncompatCompression); }), {"compression_type"});
    expect_invalid(with([](uint8_t* p) { p[104] = 1; }), {"compression_type", "0x1"});
    expect_invalid(with([](uint8_t* p) {
                     store_be64(p + 72, kIncompatCompression);
                     p[104] = 2;
                   }),
                   {"compression type", "2"}, ErrorCode::kUnsupported);
    // Extended L2 with clusters below 16 KiB.
    {
      Header h = base_header(3, 12);
      Bytes b = encode_ok(h);
      store_be64(b.data() + 72, kIncompatExtendedL2);
      expect_invalid(b, {"cluster_bits", "extended L2"});
      Header h14 = base_header(3, 14);
      h14.incompatible_features = kIncompatExtendedL2;
      CHECK(parse(encode_ok(h14)).is_ok());
    }
    // Backing file name: outside the first cluster, longer than 1023 bytes.
    {
      Header h = good;
      h.backing_file = "base.qcow2";
      Bytes b = encode_ok(h);
      REQUIRE(parse(b).is_ok());
      Bytes outside = b;
      store_be64(outside.data() + 8, 65536 - 4);
      expect_invalid(outside, {"backing_file_offset"});
      outside = b;
      store_be64(outside.data() + 8, 65536 + 8);
      expect_invalid(outside, {"backing_file_offset"});
      outside = b;
      store_be64(outside.data() + 8, ~uint64_t(0) - 4);  // offset + size overflows 64 bits
      expect_invalid(outside, {"backing_file_offset"});
      Bytes toolong = b;
      store_be32(toolong.data() + 16, 1024);
      expect_invalid(toolong, {"backing_file_size", "1023"});
      Bytes maxlen = b;
      store_be32(maxlen.data() + 16, 1023);
      CHECK(parse(maxlen).is_ok());
    }
    // An extension whose length runs past the end of the cluster.
    {
      Bytes b = valid;
      uint8_t* p = b.data() + kHeaderV3Length;
      store_be32(p, 0x12345678);
      store_be32(p + 4, 65536);
      expect_invalid(b, {"Header extension too large"});
      store_be32(p + 4, uint32_t(65536 - kHeaderV3Length - 8 + 1));
      expect_invalid(b, {"Header extension too large"});
      store_be32(p + 4, uint32_t(65536 - kHeaderV3Length - 8));  // exactly to the end: fine
      CHECK(parse(b).is_ok());
      // QEMU checks the end marker's length too.
      store_be32(p, 0);
      store_be32(p + 4, 65536);
      expect_invalid(b, {"Header extension too large"});
    }
    // Duplicate extensions.
    {
      Bytes b(65536, 0);
      Bytes head = valid;
      std::copy(head.begin(), head.begin() + kHeaderV3Length, b.begin());
      uint8_t* p = b.data() + kHeaderV3Length;
      for (int i = 0; i < 2; ++i, p += 16) {
        store_be32(p, kExtBackingFormat);
        store_be32(p + 4, 3);
        std::memcpy(p + 8, "raw", 3);
      }
      expect_invalid(b, {"duplicate", "backing format"});
      // The same with the encryption header pointer and the bitmaps extension.
      std::fill(b.begin() + kHeaderV3Length, b.end(), 0);
      p = b.data() + kHeaderV3Length;
      for (int i = 0; i < 2; ++i, p += 24) {
        store_be32(p, kExtCrypto);
        store_be32(p + 4, 16);
      }
      expect_invalid(b, {"duplicate", "encryption"});
      std::fill(b.begin() + kHeaderV3Length, b.end(), 0);
      p = b.data() + kHeaderV3Length;
      for (int i = 0; i < 2; ++i, p += 32) {
        store_be32(p, kExtBitmaps);
        store_be32(p + 4, 24);
      }
      expect_invalid(b, {"duplicate", "bitmaps"});
    }
    // Short extensions with fixed layouts.
    {
      Bytes b = valid;
      uint8_t* p = b.data() + kHeaderV3Length;
      store_be32(p, kExtBitmaps);
      store_be32(p + 4, 16);
      expect_invalid(b, {"bitmaps_ext", "Invalid extension length"});
      store_be32(p + 4, 32);  // QEMU wants exactly 24 bytes
      expect_invalid(b, {"bitmaps_ext", "Invalid extension length"});
      store_be32(p, kExtCrypto);
      store_be32(p + 4, 8);
      expect_invalid(b, {"encryption header extension length"});
    }
    // Truncated buffers.
    expect_invalid(Bytes(valid.begin(), valid.begin() + 71), {"too short"});
    expect_invalid(Bytes(valid.begin(), valid.begin() + 100), {"too short"});
    {
      Bytes b = with([](uint8_t* p) { store_be32(p + 100, 4096); });
      b.resize(1024);
      expect_invalid(b, {"header length"});
    }
  }
}

}  // TEST_SUITE

TEST_CASE("bitmap directory: entries round trip, QEMU's constraints refuse the rest") {
  qcow::Header h;
  h.cluster_bits = 16;
  h.size = 1 << 30;
  std::vector<qcow::BitmapDirEntry> dir(2);
  dir[0] = {0x30000, 1, qcow::kBitmapAuto, 16, "a"};
  dir[1] = {0x50000, 4, 0, 9, std::string(1023, 'n')};  // 1 GiB / 512 B / 8 = 256 KiB of bits: 4 clusters
  const std::vector<uint8_t> bytes = qcow::encode_bitmap_directory(dir);
  CHECK(bytes.size() == 32 + qcow::align_up(24 + 1023, 8));
  auto back = qcow::parse_bitmap_directory(bytes, 2, h);
  REQUIRE(back.is_ok());
  REQUIRE(back->size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    CHECK((*back)[i].table_offset == dir[i].table_offset);
    CHECK((*back)[i].table_size == dir[i].table_size);
    CHECK((*back)[i].flags == dir[i].flags);
    CHECK((*back)[i].granularity_bits == dir[i].granularity_bits);
    CHECK((*back)[i].name == dir[i].name);
  }
  CHECK(qcow::bitmap_data_bytes(h.size, 16) == (1u << 14) / 8);
  CHECK(qcow::bitmap_data_bytes(1000, 9) == 1);  // 2 granules
  SUBCASE("a table too small for the disk") {
    dir[1].table_size = 3;
    auto r = qcow::parse_bitmap_directory(qcow::encode_bitmap_directory(dir), 2, h);
    CHECK(r.status().code() == qcow::ErrorCode::kCorrupt);
  }
  SUBCASE("one entry fewer than the count") {
    CHECK_FALSE(qcow::parse_bitmap_directory(bytes, 3, h).is_ok());
  }
  SUBCASE("reserved flags") {
    dir[0].flags = 8;
    CHECK_FALSE(qcow::parse_bitmap_directory(qcow::encode_bitmap_directory(dir), 2, h).is_ok());
  }
}
