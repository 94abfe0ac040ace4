// Rebase and commit: the pure unit arithmetic (chain/unit_ranges), QEMU's
// backing name lookup (qcow/chain.hpp), and both operations through the public
// API on small images: content kept, and only whole allocation units written
// where something differs. tests/e2e/test_rebase.py and test_commit.py compare
// whole runs with qemu-img rebase and commit.

#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "chain/unit_ranges.hpp"
#include "qcow/chain.hpp"
#include "qcow/commit.hpp"
#include "qcow/image.hpp"
#include "qcow/rebase.hpp"
#include "support/test_util.hpp"

namespace {

using namespace qcow;
using qtest::Bytes;

constexpr uint64_t kKiB = 1024, kMiB = 1 << 20;

TEST_SUITE_BEGIN("qcow::chain");

TEST_CASE("align_to_units rounds out, clamps to the disk end and merges") {
  const uint64_t u = 4 * kKiB;
  SUBCASE("inside one unit") {
    CHECK(align_to_units({{5000, 10}}, u, kMiB) == std::vector<ByteRange>{{4096, 4096}});
  }
  SUBCASE("already aligned ranges stay") {
    CHECK(align_to_units({{8192, 8192}}, u, kMiB) == std::vector<ByteRange>{{8192, 8192}});
  }
  SUBCASE("crossing a boundary takes both units") {
    CHECK(align_to_units({{4095, 2}}, u, kMiB) == std::vector<ByteRange>{{0, 8192}});
  }
  SUBCASE("ranges that meet after rounding merge; others stay apart, sorted") {
    auto r = align_to_units({{20000, 1}, {100, 1}, {5000, 100}, {50000, 0}}, u, kMiB);
    CHECK(r == std::vector<ByteRange>{{0, 8192}, {16384, 4096}});
  }
  SUBCASE("an unaligned disk end ends the last unit") {
    CHECK(align_to_units({{kMiB - 10, 5}}, u, kMiB + 512) == std::vector<ByteRange>{{kMiB - u, u}});
    CHECK(align_to_units({{kMiB + 10, 5}}, u, kMiB + 512) == std::vector<ByteRange>{{kMiB, 512}});
    CHECK(align_to_units({{kMiB + 10, 5000}}, u, kMiB + 512) == std::vector<ByteRange>{{kMiB, 512}});
    CHECK(align_to_units({{100, 1}}, u, 1000) == std::vector<ByteRange>{{0, 1000}});
  }
  SUBCASE("ranges past the end vanish") {
    CHECK(align_to_units({{kMiB, 5}}, u, kMiB).empty());
  }
  SUBCASE("overlapping ranges") {
    CHECK(align_to_units({{0, 9000}, {4096, 100}, {8000, 9000}}, u, kMiB) == std::vector<ByteRange>{{0, 20480}});
  }
  SUBCASE("2 MiB units") {
    CHECK(align_to_units({{3 * kMiB, 1}}, 2 * kMiB, 5 * kMiB) == std::vector<ByteRange>{{2 * kMiB, 2 * kMiB}});
    CHECK(align_to_units({{4 * kMiB + 1, 1}}, 2 * kMiB, 5 * kMiB) == std::vector<ByteRange>{{4 * kMiB, kMiB}});
  }
}

TEST_CASE("differing_units marks whole units, merged into runs") {
  const uint64_t u = 512;
  Bytes a(4096, 7), b(4096, 7);
  CHECK(differing_units(a, b, u).empty());
  b[0] = 1;
  CHECK(differing_units(a, b, u) == std::vector<ByteRange>{{0, 512}});
  b[1023] = 1;  // second unit: runs merge
  CHECK(differing_units(a, b, u) == std::vector<ByteRange>{{0, 1024}});
  b[4095] = 1;  // last unit, apart
  CHECK(differing_units(a, b, u) == std::vector<ByteRange>{{0, 1024}, {3584, 512}});
  SUBCASE("a short last unit") {
    Bytes c(1000, 0), d(1000, 0);
    d[999] = 5;
    CHECK(differing_units(c, d, u) == std::vector<ByteRange>{{512, 488}});
  }
}

TEST_CASE("zero_unit_runs splits a buffer at unit granularity") {
  Bytes buf(5 * 1024, 0);
  buf[1024] = 1;  // unit 1 of 1 KiB units
  buf[4100] = 1;  // unit 4
  auto runs = zero_unit_runs(buf, 1024);
  REQUIRE(runs.size() == 4);
  CHECK((runs[0].range == ByteRange{0, 1024} && runs[0].zero));
  CHECK((runs[1].range == ByteRange{1024, 1024} && !runs[1].zero));
  CHECK((runs[2].range == ByteRange{2048, 2048} && runs[2].zero));
  CHECK((runs[3].range == ByteRange{4096, 1024} && !runs[3].zero));
  CHECK(zero_unit_runs(Bytes(100, 0), 64).size() == 1);
}

TEST_CASE("clip_ranges keeps the parts inside a window") {
  std::vector<ByteRange> r = {{0, 100}, {200, 100}, {1000, 50}};
  CHECK(clip_ranges(r, 50, 200) == std::vector<ByteRange>{{50, 50}, {200, 50}});
  CHECK(clip_ranges(r, 300, 700).empty());
  CHECK(clip_ranges(r, 0, 2000) == r);
}

TEST_CASE("backing_file_path joins relative names to the image's directory") {
  CHECK(backing_file_path("top.qcow2", "b.qcow2") == "b.qcow2");
  CHECK(backing_file_path("dir/top.qcow2", "b.qcow2") == "dir/b.qcow2");
  CHECK(backing_file_path("/x/y/top.qcow2", "../b.qcow2") == "/x/y/../b.qcow2");
  CHECK(backing_file_path("dir/top.qcow2", "/abs/b.qcow2") == "/abs/b.qcow2");
  CHECK(backing_file_path("dir/top.qcow2", "nbd:host:1") == "nbd:host:1");
}

TEST_CASE("find_backing_image resolves names as QEMU does") {
  qtest::TempDir dir;
  std::filesystem::create_directories(dir.file("sub"));
  for (const char* f : {"base.qcow2", "sub/mid.qcow2", "sub/top.qcow2"}) std::ofstream(dir.file(f)) << "x";
  // top (in sub/) -> mid.qcow2 (sub/) -> ../base.qcow2
  std::vector<ImageInfo> chain(3);
  chain[0].filename = dir.file("sub/top.qcow2");
  chain[0].backing_filename = "mid.qcow2";
  chain[1].filename = dir.file("sub/mid.qcow2");
  chain[1].backing_filename = "../base.qcow2";
  chain[2].filename = dir.file("sub/../base.qcow2");
  CHECK(find_backing_image(chain, "mid.qcow2") == 1);          // relative to top's directory
  CHECK(find_backing_image(chain, "../base.qcow2") == 2);      // relative to mid's directory
  CHECK(find_backing_image(chain, dir.file("base.qcow2")) == 2);
  CHECK(find_backing_image(chain, dir.file("sub/mid.qcow2")) == 1);
  CHECK(!find_backing_image(chain, "base.qcow2").has_value());  // not next to any image that names it
  CHECK(!find_backing_image(chain, "top.qcow2").has_value());   // the image itself is no backing file
  CHECK(!find_backing_image(chain, "").has_value());
  CHECK(!find_backing_image({chain[0]}, "mid.qcow2").has_value());
}

TEST_SUITE_END();

// ---- rebase and commit on real images ----

void create(const std::string& path, uint64_t size, uint32_t cluster_size, bool extended_l2,
            const std::string& backing = "", const std::string& backing_format = "qcow2") {
  CreateOptions c;
  c.size = size;
  c.cluster_size = cluster_size;
  c.extended_l2 = extended_l2;
  c.backing_file = backing;
  if (!backing.empty()) c.backing_format = backing_format;
  Status s = Image::create(path, c);
  INFO(s.message());
  REQUIRE(s.is_ok());
}

Image open_image(const std::string& path, bool writable, bool backing = true) {
  OpenOptions o;
  o.writable = writable;
  o.open_backing = backing;
  auto r = Image::open(path, o);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

void put(const std::string& path, uint64_t offset, const Bytes& data) {
  Image img = open_image(path, true);
  REQUIRE(img.write(offset, data).is_ok());
  REQUIRE(img.close().is_ok());
}

Bytes view(const std::string& path) {
  Image img = open_image(path, false);
  Bytes b(img.size());
  REQUIRE(img.read(0, b).is_ok());
  return b;
}

// Guest bytes the image itself allocates (data or zero flags), per block status.
uint64_t own_bytes(const std::string& path, bool data_only) {
  Image img = open_image(path, false, false);
  uint64_t n = 0;
  REQUIRE(img.block_status(0, img.size(), [&](const Extent& e) {
    if (e.depth == 0 && e.present && (!data_only || e.data)) n += e.length;
    return true;
  }).is_ok());
  return n;
}

TEST_SUITE_BEGIN("qcow::rebase");

Bytes pattern(size_t n, uint8_t seed) { return qtest::random_bytes(n, seed); }

TEST_CASE("rebase writes whole allocation units where the chains differ, and keeps the content") {
  qtest::TempDir dir;
  const std::string oldb = dir.file("old.qcow2"), newb = dir.file("new.qcow2"), top = dir.file("top.qcow2");
  const uint64_t size = kMiB;
  bool ext = false;
  SUBCASE("standard L2 entries") { ext = false; }
  SUBCASE("extended L2 entries") { ext = true; }
  CAPTURE(ext);
  const uint64_t cs = 64 * kKiB, unit = ext ? cs / 32 : cs;
  create(oldb, size, 4096, false);
  create(newb, size, 512, false);
  create(top, size, uint32_t(cs), ext, "old.qcow2");
  const Bytes data = pattern(256 * kKiB, 1);
  put(oldb, 0, data);
  Bytes changed = data;
  changed[100000] ^= 1;
  changed[200000] ^= 1;
  put(newb, 0, changed);
  put(newb, 512 * kKiB, Bytes(1000, 9));  // the old chain reads zeros there
  put(top, 0, Bytes(4096, 3));
  const Bytes before = view(top);

  {
    Image img = open_image(top, true);
    Image nb = open_image(newb, false);
    auto stats = rebase_copy_differences(img, &nb);
    INFO(stats.status().message());
    REQUIRE(stats.is_ok());
    CHECK(stats->bytes_written == 2 * unit);  // the two units holding a changed byte, whole
    CHECK(stats->bytes_zeroed == unit);       // the unit where only the new chain has data
    REQUIRE(set_backing_file(img, "new.qcow2", std::string("qcow2")).is_ok());
    REQUIRE(img.close().is_ok());
  }
  CHECK(view(top) == before);
  CHECK(own_bytes(top, true) == (ext ? 4096 : cs) + 2 * unit);
  Image reopened = open_image(top, false);
  CHECK(reopened.info().backing_filename == "new.qcow2");
  CHECK(reopened.info().backing_format == "qcow2");
}

TEST_CASE("rebase -c writes whole clusters compressed; -b '' flattens") {
  qtest::TempDir dir;
  const std::string oldb = dir.file("old.qcow2"), top = dir.file("top.qcow2");
  const uint64_t cs = 64 * kKiB, size = 4 * cs + 4096;  // the last cluster is partial
  bool ext = false, compress = false;
  SUBCASE("standard L2") {
    ext = false;
    SUBCASE("plain") { compress = false; }
    SUBCASE("compressed") { compress = true; }
  }
  SUBCASE("extended L2") {
    ext = true;
    SUBCASE("plain") { compress = false; }
    SUBCASE("compressed") { compress = true; }
  }
  CAPTURE(ext);
  CAPTURE(compress);
  create(oldb, size, 4096, false);
  create(top, size, uint32_t(cs), ext, "old.qcow2");
  put(oldb, 0, Bytes(size, 0x5a));
  put(top, cs, Bytes(2048, 1));  // one subcluster (or the whole cluster) 1 allocated in the image
  const uint64_t own = ext ? 2048 : cs;
  const Bytes before = view(top);
  {
    Image img = open_image(top, true);
    RebaseOptions o;
    o.compress = compress ? Compress::kYes : Compress::kNo;
    auto stats = rebase_copy_differences(img, nullptr, o);
    INFO(stats.status().message());
    REQUIRE(stats.is_ok());
    // Every unit but the allocated one; compressed: four whole clusters (the last partial)
    // and, in a partly allocated cluster, the other subclusters uncompressed.
    CHECK(stats->bytes_written == size - own);
    REQUIRE(set_backing_file(img, "", std::nullopt).is_ok());
    REQUIRE(img.close().is_ok());
  }
  CHECK(view(top) == before);
  Image reopened = open_image(top, false);
  CHECK(reopened.info().backing_filename.empty());
  uint64_t compressed = 0;
  REQUIRE(reopened.block_status(0, size, [&](const Extent& e) {
    if (e.compressed) compressed += e.length;
    return true;
  }).is_ok());
  CHECK(compressed == (compress ? size - cs : 0));
}

TEST_CASE("rebase and commit walk ranges longer than their 1 MiB window") {
  qtest::TempDir dir;
  const std::string base = dir.file("base.qcow2"), top = dir.file("top.qcow2");
  const uint64_t size = 3 * kMiB + 4096;
  create(base, size, 65536, false);
  create(top, size, 65536, true, "base.qcow2");
  const Bytes data = pattern(size, 11);
  put(base, 0, data);
  put(top, kMiB + 512, Bytes(10, 1));
  const Bytes before = view(top);
  {
    Image img = open_image(top, true);
    auto stats = rebase_copy_differences(img, nullptr);
    REQUIRE(stats.is_ok());
    CHECK(stats->bytes_written == size - 2048);
    REQUIRE(set_backing_file(img, "", std::nullopt).is_ok());
    REQUIRE(img.close().is_ok());
  }
  CHECK(view(top) == before);
  // And back: commit the flattened image into a fresh empty base under it.
  const std::string empty = dir.file("empty.qcow2");
  create(empty, size, 65536, false);
  {
    Image img = open_image(top, true, false);
    REQUIRE(set_backing_file(img, "empty.qcow2", std::string("qcow2")).is_ok());
    REQUIRE(img.close().is_ok());
  }
  {
    OpenOptions vo;
    vo.force_share = true;
    auto v = Image::open(top, vo);
    REQUIRE(v.is_ok());
    Image b = open_image(empty, true);
    auto stats = commit_into_base(*v, b, 1);
    REQUIRE(stats.is_ok());
    CHECK(stats->bytes_written == size);
    REQUIRE(b.close().is_ok());
  }
  CHECK(view(empty) == before);
}

TEST_CASE("rebase onto a file further down the chain compares only what lies between") {
  qtest::TempDir dir;
  const std::string base = dir.file("base.qcow2"), mid = dir.file("mid.qcow2"), top = dir.file("top.qcow2");
  const uint64_t size = kMiB;
  create(base, size, 65536, false);
  create(mid, size, 65536, false, "base.qcow2");
  create(top, size, 65536, true, "mid.qcow2");
  put(base, 0, pattern(size, 2));
  put(mid, 128 * kKiB, pattern(4096, 3));
  const Bytes before = view(top);
  {
    Image img = open_image(top, true);
    const auto chain = img.chain_info();
    RebaseOptions o;
    o.new_backing_layer = find_backing_image(chain, dir.file("base.qcow2"));
    REQUIRE(o.new_backing_layer == 2);
    Image nb = open_image(base, false);
    auto stats = rebase_copy_differences(img, &nb, o);
    REQUIRE(stats.is_ok());
    CHECK(stats->bytes_compared == 65536);  // the cluster mid allocates, nothing else
    CHECK(stats->bytes_written == 4096);
    REQUIRE(set_backing_file(img, "base.qcow2", std::string("qcow2")).is_ok());
    REQUIRE(img.close().is_ok());
  }
  CHECK(view(top) == before);
}

TEST_CASE("set_backing_file refuses what qemu-img refuses") {
  qtest::TempDir dir;
  const std::string top = dir.file("top.qcow2"), raw = dir.file("r.raw");
  create(top, kMiB, 512, false);
  std::ofstream(raw) << std::string(4096, 'a');
  auto img = std::make_unique<Image>(open_image(top, true));
  Status s = set_backing_file(*img, "x.qcow2", std::nullopt);
  CHECK(s.message() == "backing format must be specified");
  s = set_backing_file(*img, "", std::string("qcow2"));
  CHECK(s.message() == "Invalid argument");
  s = set_backing_file(*img, std::string(1024, 'n'), std::string("raw"));
  CHECK(s.message() == "Invalid argument");
  // 512-byte clusters: header and extensions leave 376 bytes for the name.
  s = set_backing_file(*img, std::string(377, 'n'), std::string("raw"));
  CHECK(s.code() == ErrorCode::kNoSpace);
  CHECK(s.message() == "No space left in the file header");
  REQUIRE(set_backing_file(*img, std::string(376, 'n'), std::string("raw")).is_ok());
  REQUIRE(img->close().is_ok());
  img.reset();
  CHECK(open_image(top, false, false).info().backing_filename == std::string(376, 'n'));
  Image r = open_image(raw, true);
  CHECK(set_backing_file(r, "x", std::string("raw")).message() == "Operation not supported");
}

// The bytes of the header cluster at or after the first sector that changed.
std::vector<uint64_t> changed_past_sector0(const Bytes& a, const Bytes& b, uint64_t cluster) {
  std::vector<uint64_t> out;
  for (uint64_t i = 512; i < cluster; ++i)
    if (a[i] != b[i]) out.push_back(i);
  return out;
}

uint64_t be64_at(const Bytes& b, size_t off) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | b[off + i];
  return v;
}

TEST_CASE("the backing link changes in one sector: a torn write leaves the old or the new header") {
  qtest::require_tool("qemu-img");
  qtest::TempDir dir;
  const std::string top = dir.file("top.qcow2"), q = qtest::shell_quote(top);
  const uint64_t cs = 65536;
  // qemu-img's header: feature name table, then the name, past the first sector.
  create(dir.file("old.qcow2"), kMiB, 65536, false);
  REQUIRE(qtest::run_command("qemu-img create -q -f qcow2 -b old.qcow2 -F qcow2 " + q + " 1M") == 0);
  for (const std::string& name : {std::string(400, 'n') + ".qcow2", std::string("new.qcow2"), std::string(""),
                                 std::string(900, 'm')}) {
    CAPTURE(name.size());
    const Bytes before = qtest::read_file(top);
    {
      Image img = open_image(top, true, false);
      REQUIRE(set_backing_file(img, name, name.empty() ? std::nullopt : std::optional<std::string>("qcow2")).is_ok());
      REQUIRE(img.close().is_ok());
    }
    const Bytes after = qtest::read_file(top);
    const std::vector<uint64_t> changed = changed_past_sector0(before, after, cs);
    const uint64_t at = be64_at(after, 8);
    if (name.size() + 136 <= 512) {
      CHECK(changed.empty());  // the whole header in sector 0
    } else {
      // The name went where the old header had nothing (written, and flushed, before sector 0).
      CHECK(at >= 512);
      for (uint64_t i : changed) CHECK((i >= at && i < at + name.size()));
      for (uint64_t i = at; i < at + name.size(); ++i) CHECK(before[i] == 0);
    }
    std::string out;
    REQUIRE(qtest::run_command("qemu-img info --output=json -U " + q, &out) == 0);
    CHECK((name.empty() ? out.find("backing-filename") == std::string::npos
                        : out.find("\"backing-filename\": \"" + name + "\"") != std::string::npos));
    if (name.empty()) CHECK(qtest::qemu_check(top).rc == 0);  // (check opens the backing file)
  }
}

TEST_SUITE_END();

TEST_SUITE_BEGIN("qcow::commit");

// One commit of top -> mid -> base into layer `layer`, BASE with or without extended L2.
void commit_case(bool base_ext, size_t layer) {
  CAPTURE(base_ext);
  CAPTURE(layer);
  qtest::TempDir dir;
  const std::string base = dir.file("base.qcow2"), mid = dir.file("mid.qcow2"), top = dir.file("top.qcow2");
  const uint64_t cs = 64 * kKiB, base_unit = base_ext ? cs / 32 : cs;
  create(base, kMiB, uint32_t(cs), base_ext);
  create(mid, kMiB, 16384, true, "base.qcow2");
  create(top, 2 * kMiB, 65536, true, "mid.qcow2");  // larger: BASE grows
  put(base, 0, pattern(kMiB, 4));
  put(mid, 300 * kKiB, pattern(512, 5));  // one 512-byte subcluster of mid
  put(top, 0, pattern(2048, 6));           // one subcluster of top
  put(top, 1536 * kKiB, pattern(100, 7));  // beyond BASE's old end
  const Bytes before = view(top);
  const std::string target = layer == 1 ? mid : base;
  {
    Image image = open_image(top, true, false);
    OpenOptions vo;
    vo.force_share = true;
    auto v = Image::open(top, vo);
    REQUIRE(v.is_ok());
    Image b = open_image(target, true);
    auto stats = commit_into_base(*v, b, layer);
    INFO(stats.status().message());
    REQUIRE(stats.is_ok());
    // Whole units of BASE around each range written above it; the rest of BASE's new
    // megabyte reads zeros already and is left alone.
    if (layer == 2) CHECK(stats->bytes_written == 3 * base_unit);
    CHECK(b.size() == 2 * kMiB);
    REQUIRE(b.close().is_ok());
    if (layer == 1) REQUIRE(make_image_empty(image).is_ok());
    REQUIRE(image.close().is_ok());
  }
  CHECK(view(target) == before);
  CHECK(view(top) == before);
  if (layer == 1) CHECK(own_bytes(top, false) == 0);
  CHECK(qtest::qemu_check(target).rc == 0);
  CHECK(qtest::qemu_check(top).rc == 0);
}

TEST_CASE("commit copies what lies above BASE, at BASE's granularity, and the image can be emptied") {
  for (bool base_ext : {false, true})
    for (size_t layer : {1, 2}) commit_case(base_ext, layer);
}

TEST_CASE("make_image_empty keeps what internal snapshots share") {
  qtest::TempDir dir;
  const std::string base = dir.file("base.qcow2"), top = dir.file("top.qcow2");
  create(base, kMiB, 65536, false);
  create(top, kMiB, 65536, false, "base.qcow2");
  put(top, 0, pattern(200 * kKiB, 8));
  qtest::require_tool("qemu-img");
  REQUIRE(qtest::run_command("qemu-img snapshot -c s1 " + qtest::shell_quote(top)) == 0);
  put(top, 64 * kKiB, pattern(4096, 9));
  {
    Image img = open_image(top, true);
    REQUIRE(make_image_empty(img).is_ok());
    REQUIRE(img.close().is_ok());
  }
  CHECK(own_bytes(top, false) == 0);
  CHECK(view(top) == Bytes(kMiB, 0));
  CHECK(qtest::qemu_check(top).rc == 0);
  OpenOptions so;
  so.snapshot = "s1";
  auto snap = Image::open(top, so);
  REQUIRE(snap.is_ok());
  Bytes s(200 * kKiB);
  REQUIRE(snap->read(0, s).is_ok());
  CHECK(s == pattern(200 * kKiB, 8));
}

TEST_SUITE_END();

}  // namespace
