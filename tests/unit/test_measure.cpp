// qcow::measure and its pure parts. Expected figures marked "qemu-img 7.2" were
// printed by `qemu-img measure --output=json` with the same arguments; the rest
// are worked out in the comments. tests/e2e/test_measure*.py compares whole
// option products against qemu-img itself.

#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/measure.hpp"
#include "support/test_util.hpp"

namespace {

using namespace qcow;

Measurement must_measure(const MeasureOptions& o, Image* source = nullptr) {
  auto m = measure(o, source);
  INFO(m.status().message());
  REQUIRE(m.is_ok());
  return *m;
}

MeasureOptions qcow2(uint64_t size, uint32_t cluster_size = 65536, int refcount_bits = 16, bool extended_l2 = false) {
  MeasureOptions o;
  o.format = Format::kQcow2;
  o.size = size;
  o.cluster_size = cluster_size;
  o.refcount_bits = refcount_bits;
  o.extended_l2 = extended_l2;
  return o;
}

Image open_image(const std::string& path) {
  auto r = Image::open(path);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

}  // namespace

TEST_SUITE_BEGIN("qcow::measure");

TEST_CASE("refcount metadata is the fixed point that also counts itself") {
  // 64k clusters, 16-bit refcounts: one block counts 32768 clusters, one table cluster
  // points to 8192 blocks. 10 clusters need 1 block and 1 table cluster.
  CHECK(qcow2_refcount_metadata_size(10, 65536, 4) == 2 * 65536);
  // 32766 clusters + 1 block + 1 table = 32768: still one block.
  CHECK(qcow2_refcount_metadata_size(32766, 65536, 4) == 2 * 65536);
  // One more and the block itself no longer fits: two blocks.
  CHECK(qcow2_refcount_metadata_size(32767, 65536, 4) == 3 * 65536);
  // 512-byte clusters with 64-bit refcounts: 64 refcounts per block, 64 blocks per table cluster.
  CHECK(qcow2_refcount_metadata_size(62, 512, 6) == 2 * 512);
  CHECK(qcow2_refcount_metadata_size(63, 512, 6) == 3 * 512);
}

TEST_CASE("fully allocated qcow2 sizes match qemu-img 7.2") {
  CHECK(qcow2_fully_allocated_size(0, 65536, 4, L2Entries::kStandard) == 196608);
  CHECK(qcow2_fully_allocated_size(1ull << 30, 65536, 4, L2Entries::kStandard) == 1074135040);
  CHECK(qcow2_fully_allocated_size(1ull << 30, 65536, 4, L2Entries::kExtended) == 1074266112);
  CHECK(qcow2_fully_allocated_size(10ull << 20, 512, 0, L2Entries::kStandard) == 10656256);
  CHECK(qcow2_fully_allocated_size(1ull << 40, 2 << 20, 6, L2Entries::kStandard) == 1099528404992);
  CHECK(qcow2_fully_allocated_size(100ull << 30, 4096, 3, L2Entries::kStandard) == 107610640384);
}

TEST_CASE("measure with --size") {
  SUBCASE("qcow2: required is the metadata of the fully allocated image") {
    Measurement m = must_measure(qcow2(1ull << 30));
    CHECK(m.required == 393216);  // qemu-img 7.2
    CHECK(m.fully_allocated == 1074135040);
    CHECK_FALSE(m.bitmaps.has_value());
    m = must_measure(qcow2(10ull << 20, 512, 1));
    CHECK(m.required == 170496);  // qemu-img 7.2
    m = must_measure(qcow2(100ull << 30, 4096, 8));
    CHECK(m.required == 236457984);  // qemu-img 7.2
  }
  SUBCASE("qcow2 sizes are rounded up to a cluster") {
    CHECK(must_measure(qcow2(1)).fully_allocated == must_measure(qcow2(65536)).fully_allocated);
    CHECK(must_measure(qcow2(65537)).fully_allocated == must_measure(qcow2(131072)).fully_allocated);
  }
  SUBCASE("preallocation full and falloc count every cluster, metadata does not") {
    MeasureOptions o = qcow2(1ull << 30);
    o.preallocation = Preallocation::kFull;
    Measurement full = must_measure(o);
    CHECK(full.required == full.fully_allocated);
    o.preallocation = Preallocation::kFalloc;
    CHECK(must_measure(o).required == full.fully_allocated);
    o.preallocation = Preallocation::kMetadata;
    CHECK(must_measure(o).required == 393216);
  }
  SUBCASE("raw: the size rounded up to a sector") {
    MeasureOptions o;
    o.size = 1000;
    Measurement m = must_measure(o);
    CHECK(m.required == 1024);  // qemu-img 7.2
    CHECK(m.fully_allocated == 1024);
    o.size = (1ull << 63) - 1;
    CHECK(must_measure(o).required == 1ull << 63);
  }
  SUBCASE("LUKS adds its header, rounded up to a cluster") {
    MeasureOptions o = qcow2(1ull << 30);
    o.encrypt.format = "luks";
    Measurement m = must_measure(o);
    CHECK(m.required == 2490368);  // qemu-img 7.2 (aes-256-xts: 2068480 bytes of header)
    CHECK(m.fully_allocated == 1076232192);
    o.encrypt.format = "aes";  // legacy AES has no header area
    CHECK(must_measure(o).required == 393216);
  }
}

TEST_CASE("measure refuses what qemu-img refuses, with its messages") {
  auto error = [](const MeasureOptions& o) {
    auto m = measure(o, nullptr);
    REQUIRE_FALSE(m.is_ok());
    CHECK(m.status().code() == ErrorCode::kInvalidArgument);
    return m.status().message();
  };
  CHECK(error(qcow2(1 << 20, 1000)) == "Cluster size must be a power of two between 512 and 2048k");
  CHECK(error(qcow2(1 << 20, 4 << 20)) == "Cluster size must be a power of two between 512 and 2048k");
  CHECK(error(qcow2(1 << 20, 8192, 16, true)) ==
        "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  CHECK(error(qcow2(1 << 20, 65536, 3)) == "Refcount width must be a power of two and may not exceed 64 bits");
  CHECK(error(qcow2(1 << 20, 65536, 128)) == "Refcount width must be a power of two and may not exceed 64 bits");
  MeasureOptions v2 = qcow2(1 << 20, 65536, 8);
  v2.version = 2;
  CHECK(error(v2).find("compatibility level 1.1") != std::string::npos);
  // 64k clusters: 2^51 bytes need exactly 32 MiB of L1 table; one cluster more is too much.
  CHECK(measure(qcow2(1ull << 51), nullptr).is_ok());
  CHECK(error(qcow2((1ull << 51) + 1)) == "The image size is too large (try using a larger cluster size)");
  CHECK(error(qcow2(1ull << 63)) == "Image size must be less than 8 EiB!");
}

TEST_CASE("check_* accept the valid range") {
  for (uint64_t cs = 512; cs <= (2u << 20); cs *= 2) {
    CAPTURE(cs);
    CHECK(check_cluster_size(cs, L2Entries::kStandard).is_ok());
    CHECK(check_cluster_size(cs, L2Entries::kExtended).is_ok() == (cs >= 16384));
  }
  CHECK_FALSE(check_cluster_size(0, L2Entries::kStandard).is_ok());
  CHECK_FALSE(check_cluster_size(256, L2Entries::kStandard).is_ok());
  for (uint64_t bits = 1; bits <= 64; bits *= 2) {
    CAPTURE(bits);
    CHECK(check_refcount_bits(bits, 3).is_ok());
    CHECK(check_refcount_bits(bits, 2).is_ok() == (bits == 16));
  }
  CHECK_FALSE(check_refcount_bits(0, 3).is_ok());
}

TEST_CASE("LUKS header size per cipher") {
  EncryptOptions e;  // aes-256 xts: 64 key bytes x 4000 stripes = 500 sectors, 504 aligned
  auto bytes = [&] {
    auto r = luks_header_bytes(e);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    return *r;
  };
  CHECK(bytes() == (8 + 8 * 504) * 512);
  e.cipher_alg = "aes-128";  // 32 key bytes: 250 sectors, 256 aligned
  CHECK(bytes() == (8 + 8 * 256) * 512);
  e.cipher_mode = "cbc";  // 16 key bytes: 125 sectors, 128 aligned
  CHECK(bytes() == (8 + 8 * 128) * 512);
  e.cipher_alg = "twofish-192";
  e.cipher_mode = "xts";  // 48 key bytes: 375 sectors, 376 aligned
  CHECK(bytes() == (8 + 8 * 376) * 512);
  e.cipher_alg = "aes-512";
  auto bad = luks_header_bytes(e);
  REQUIRE_FALSE(bad.is_ok());
  CHECK(bad.status().message() == "Parameter 'cipher-alg' does not accept value 'aes-512'");
  e.cipher_alg = "aes-256";
  e.hash_alg = "sha3";
  CHECK(luks_header_bytes(e).status().message() == "Parameter 'hash-alg' does not accept value 'sha3'");
}

TEST_CASE("measure with a source image") {
  qtest::TempDir dir;
  const std::string path = dir.file("src.qcow2");
  CreateOptions c;
  c.size = 1 << 20;
  REQUIRE(Image::create(path, c).is_ok());
  {
    OpenOptions rw;
    rw.writable = true;
    auto w = Image::open(path, rw);
    REQUIRE(w.is_ok());
    std::vector<uint8_t> byte(1, 0xab);
    REQUIRE(w->write(0, byte).is_ok());
    REQUIRE(w->write(100 << 10, byte).is_ok());       // cluster 1
    REQUIRE(w->write((100 << 10) + 5, byte).is_ok()); // same cluster again
    REQUIRE(w->write_zeroes(512 << 10, 64 << 10, Unmap::kNo).is_ok());
    REQUIRE(w->close().is_ok());
  }
  Image src = open_image(path);
  const uint64_t empty_metadata = must_measure(qcow2(1 << 20)).required;

  SUBCASE("only clusters holding data count") {
    Measurement m = must_measure(qcow2(0), &src);
    CHECK(m.required == empty_metadata + 2 * 65536);
    REQUIRE(m.bitmaps.has_value());  // a compat=1.1 qcow2 source with no bitmaps
    CHECK(*m.bitmaps == 0);
  }
  SUBCASE("target clusters, not source clusters") {
    // 512-byte target clusters: the source's block status reports its two allocated
    // 64k clusters as data, all 2 x 128 target clusters of them.
    Measurement m = must_measure(qcow2(0, 512), &src);
    CHECK(m.required == must_measure(qcow2(1 << 20, 512)).required + 2 * 65536);
    // 2M target clusters: one cluster, and the disk rounds up to it.
    m = must_measure(qcow2(0, 2 << 20), &src);
    CHECK(m.required == must_measure(qcow2(2 << 20, 2 << 20)).required + (2 << 20));
  }
  SUBCASE("a backing file counts everything") {
    MeasureOptions o = qcow2(0);
    o.has_backing_file = true;
    Measurement m = must_measure(o, &src);
    CHECK(m.required == m.fully_allocated);
  }
  SUBCASE("no bitmaps figure for a compat=0.10 target or a raw source") {
    MeasureOptions o = qcow2(0);
    o.version = 2;
    CHECK_FALSE(must_measure(o, &src).bitmaps.has_value());
    const std::string raw = dir.file("src.raw");
    qtest::write_file(raw, qtest::Bytes(5000, 1));
    Image r = open_image(raw);
    Measurement m = must_measure(qcow2(0), &r);
    CHECK_FALSE(m.bitmaps.has_value());
    CHECK(m.required == must_measure(qcow2(5120)).required + 65536);
    MeasureOptions raw_target;
    CHECK(must_measure(raw_target, &r).required == 5120);  // a raw disk is whole sectors
  }
  SUBCASE("the source's size, not options.size, is the virtual size; options.size is still checked") {
    CHECK(must_measure(qcow2(1ull << 40), &src).fully_allocated == must_measure(qcow2(0), &src).fully_allocated);
    CHECK_FALSE(measure(qcow2((1ull << 51) + 1), &src).is_ok());
  }
}

TEST_SUITE_END();
