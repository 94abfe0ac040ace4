// Tests of the metadata layer (libqcow/src/meta/): the overlap map, the guarded
// ImageFile (overlap checks, sticky I/O errors), header field updates, and what the
// driver makes of them through the public Image API: a write onto metadata marks the
// image corrupt and leaves the structure intact, a failed flush or write fails every
// later flush and the close, and nothing more reaches the file.

#include <doctest/doctest.h>

#include <cstring>
#include <string>
#include <vector>

#include "codec/bytes.hpp"
#include "format/header.hpp"
#include "io/fault_file.hpp"
#include "meta/header_store.hpp"
#include "meta/image_file.hpp"
#include "meta/overlap.hpp"
#include "meta/tables.hpp"
#include "qcow/image.hpp"
#include "support/image_util.hpp"
#include "support/test_util.hpp"

namespace {

using namespace qcow;
using qtest::Bytes;
using qtest::open_rw;
using qtest::require_ok;

constexpr uint64_t kCluster = 65536;

uint64_t be64_at(const Bytes& file, uint64_t off) { return load_be64(file.data() + off); }

void poke_be64(const std::string& path, uint64_t off, uint64_t value) {
  Bytes f = qtest::read_file(path);
  store_be64(f.data() + off, value);
  qtest::write_file(path, f);
}

// A 1 GiB image (64 KiB clusters) with data in cluster 0 and at 600 MiB (two L2 tables).
std::string make_image(qtest::TempDir& dir, const std::string& name) {
  std::string path = dir.file(name);
  CreateOptions co;
  co.size = 1ull << 30;
  require_ok(Image::create(path, co));
  Image img = open_rw(path);
  require_ok(img.write(0, Bytes(kCluster, 0x11)));
  require_ok(img.write(600ull << 20, Bytes(kCluster, 0x22)));
  require_ok(img.close());
  return path;
}

}  // namespace

TEST_SUITE("qcow::meta") {

TEST_CASE("overlap map: ranges per structure, cluster-rounded queries, masks") {
  OverlapMap m(4096);
  m.add(Structure::kActiveL1, 0x10000, 24);
  m.add(Structure::kActiveL2, 0x20000, 4096);
  m.add(Structure::kActiveL2, 0x20000, 4096);  // the same table twice: needs two removes
  m.add(Structure::kRefcountTable, 0x40000, 0x8000);
  const StructureMask all = kAllStructures;

  SUBCASE("hits name the structure and its range") {
    auto hit = m.find(0x10000 + 4000, 1, all);  // same cluster as the 24-byte L1 table
    REQUIRE(hit);
    CHECK(hit->structure == Structure::kActiveL1);
    CHECK(hit->offset == 0x10000);
    CHECK(m.find(0x11000, 4096, all) == std::nullopt);  // the next cluster
    CHECK(m.find(0x47fff, 1, all)->structure == Structure::kRefcountTable);
    CHECK(m.find(0x48000, 4096, all) == std::nullopt);
    CHECK(m.find(0x3f000, 0x2000, all)->structure == Structure::kRefcountTable);  // spans into it
    CHECK(m.find(0, 0x100000, all));                                              // covers everything
    CHECK(m.find(0x10000, 0, all) == std::nullopt);                               // empty range
  }
  SUBCASE("masks select structures") {
    CHECK(m.find(0x20000, 1, all & ~structure_bit(Structure::kActiveL2)) == std::nullopt);
    CHECK(m.find(0x20000, 1, overlap_mask(OverlapCheck::kConstant)) == std::nullopt);
    CHECK(m.find(0x20000, 1, overlap_mask(OverlapCheck::kCached))->structure == Structure::kActiveL2);
    CHECK(m.find(0x10000, 1, overlap_mask(OverlapCheck::kNone)) == std::nullopt);
  }
  SUBCASE("remove undoes one add") {
    m.remove(Structure::kActiveL2, 0x20000, 4096);
    CHECK(m.find(0x20000, 1, all));
    m.remove(Structure::kActiveL2, 0x20000, 4096);
    CHECK(m.find(0x20000, 1, all) == std::nullopt);
    m.remove(Structure::kActiveL2, 0x20000, 4096);  // nothing left: no-op
    m.clear(Structure::kRefcountTable);
    CHECK(m.find(0x40000, 1, all) == std::nullopt);
  }
  SUBCASE("ranges from a damaged header do not wrap") {
    m.add(Structure::kBitmapDirectory, UINT64_MAX - 100, UINT64_MAX);
    CHECK(m.find(UINT64_MAX - 4095, 10, all)->structure == Structure::kBitmapDirectory);
    CHECK(m.find(0x100000, 4096, all) == std::nullopt);
  }
  SUBCASE("the levels are QEMU's") {
    CHECK(overlap_mask(OverlapCheck::kAll) == kAllStructures);
    CHECK((overlap_mask(OverlapCheck::kCached) & structure_bit(Structure::kInactiveL2)) == 0);
    CHECK((overlap_mask(OverlapCheck::kCached) & structure_bit(Structure::kInactiveL1)) != 0);
    CHECK((overlap_mask(OverlapCheck::kConstant) & structure_bit(Structure::kRefcountBlock)) == 0);
    CHECK(std::string(structure_name(Structure::kMainHeader)) == "qcow2_header");
    CHECK(parse_overlap_check("all") == OverlapCheck::kAll);
    CHECK(parse_overlap_check("everything") == std::nullopt);
  }
}

TEST_CASE("overlap map: single-cluster registrations as bitsets, counted, across words") {
  OverlapMap m(512);
  const StructureMask all = kAllStructures;
  // Every third cluster of 1,000 (spanning 16 words of 64 clusters) is an L2 table.
  for (uint64_t c = 0; c < 1000; c += 3) m.add(Structure::kActiveL2, c * 512, 512);
  CHECK(m.count(Structure::kActiveL2) == 334);
  CHECK(m.find(1 * 512, 1024, all) == std::nullopt);                // clusters 1 and 2
  CHECK(m.find(1 * 512, 1025, all)->offset == 3 * 512);             // rounds out to cluster 3
  CHECK(m.find(64 * 512 + 1, 1, all) == std::nullopt);              // first cluster of word 1, not a table
  CHECK(m.find(65 * 512, 512 * 200, all)->offset == 66 * 512);      // the first hit, not any hit
  CHECK(m.find(998 * 512, 512 * 1000, all)->offset == 999 * 512);   // the last table
  CHECK(m.find(1000 * 512, 512 * 1000, all) == std::nullopt);
  SUBCASE("the lowest cluster wins over the structure order, then the structure order") {
    m.add(Structure::kRefcountBlock, 4 * 512, 512);
    m.add(Structure::kMainHeader, 6 * 512, 512);
    CHECK(m.find(4 * 512, 512 * 3, all)->structure == Structure::kRefcountBlock);
    m.add(Structure::kMainHeader, 6 * 512, 512);
    m.add(Structure::kActiveL1, 6 * 512, 512);
    CHECK(m.find(5 * 512, 512 * 3, all)->structure == Structure::kMainHeader);
    m.remove(Structure::kMainHeader, 6 * 512, 512);
    CHECK(m.find(5 * 512, 512 * 3, all)->structure == Structure::kMainHeader);  // registered twice
    m.remove(Structure::kMainHeader, 6 * 512, 512);
    CHECK(m.find(5 * 512, 512 * 3, all)->structure == Structure::kActiveL1);
  }
  SUBCASE("removing every table empties the map; clear drops repeats too") {
    m.add(Structure::kActiveL2, 0, 512);  // cluster 0 twice
    CHECK(m.count(Structure::kActiveL2) == 335);
    for (uint64_t c = 0; c < 1000; c += 3) m.remove(Structure::kActiveL2, c * 512, 512);
    CHECK(m.count(Structure::kActiveL2) == 1);
    CHECK(m.find(0, 1, all)->offset == 0);
    m.add(Structure::kRefcountBlock, 0, 512);  // shares cluster 0 with the L2 table
    m.clear(Structure::kActiveL2);
    CHECK(m.count(Structure::kActiveL2) == 0);
    CHECK(m.find(0, 1 << 20, all)->structure == Structure::kRefcountBlock);
    m.remove(Structure::kRefcountBlock, 0, 512);
    CHECK(m.find(0, 1 << 20, all) == std::nullopt);
  }
  SUBCASE("hostile duplicates saturate and stay registered") {
    for (int i = 0; i < 70000; ++i) m.add(Structure::kInactiveL2, 0x100000, 512);
    for (int i = 0; i < 70000; ++i) m.remove(Structure::kInactiveL2, 0x100000, 512);
    CHECK(m.find(0x100000, 1, structure_bit(Structure::kInactiveL2)));
  }
  SUBCASE("clusters at the top of the address space") {
    m.add(Structure::kRefcountBlock, UINT64_MAX - 511, 512);
    CHECK(m.find(UINT64_MAX - 10, 5, all)->structure == Structure::kRefcountBlock);
    CHECK(m.find(UINT64_MAX - 10000, UINT64_MAX, all)->structure == Structure::kRefcountBlock);
  }
}

TEST_CASE("image file: refused overlaps, sticky failures, barriers") {
  auto log = std::make_shared<WriteLog>();
  auto plan = std::make_shared<FaultPlan>();
  auto file = std::make_unique<FaultFile>(
      std::make_unique<RecordingFile>(make_memory_file("m.img", std::string(16 * 4096, '\0')), log), plan);
  ImageFile io(file.get(), OverlapCheck::kCached);
  io.set_cluster_size(4096);
  io.overlaps().add(Structure::kActiveL1, 4096, 8);
  io.overlaps().add(Structure::kActiveL2, 2 * 4096, 4096);
  std::string reported;
  io.set_corruption_handler([&](const std::string& what) {
    reported = what;
    return Status::corrupt("marked: " + what);
  });
  const uint8_t data[16] = {1};

  SUBCASE("guest data may not touch metadata; a structure may rewrite itself") {
    Status s = io.write_data(4096 + 100, data);
    CHECK(s.code() == ErrorCode::kCorrupt);
    CHECK(reported.find("overlaps with active L1 table at 0x1000") != std::string::npos);
    CHECK(log->ops.empty());
    require_ok(io.write_metadata(Structure::kActiveL1, 4096, data));
    CHECK(io.write_metadata(Structure::kActiveL1, 2 * 4096, data).code() == ErrorCode::kCorrupt);
    CHECK(io.zero_data(2 * 4096 - 512, 1024).code() == ErrorCode::kCorrupt);
    CHECK(io.allocate_data(0, 16 * 4096).code() == ErrorCode::kCorrupt);
    CHECK(io.check_free(3 * 4096, 4096, "new cluster").is_ok());
    require_ok(io.write_data(5 * 4096, data));
    CHECK(log->ops.size() == 2);
  }
  SUBCASE("a failed write sticks: later writes and flushes fail, nothing more is written") {
    plan->write = {1, false, EIO};  // the second write fails once
    require_ok(io.write_data(5 * 4096, data));
    CHECK(io.write_data(6 * 4096, data).code() == ErrorCode::kIo);
    CHECK(io.failed());
    const size_t ops = log->ops.size();
    CHECK(io.write_data(7 * 4096, data).code() == ErrorCode::kIo);
    CHECK(io.write_metadata(Structure::kActiveL1, 4096, data).code() == ErrorCode::kIo);
    CHECK(io.barrier().code() == ErrorCode::kIo);
    CHECK(io.flush().code() == ErrorCode::kIo);
    CHECK(io.grow(1 << 20).code() == ErrorCode::kIo);
    CHECK(log->ops.size() == ops);
    CHECK(plan->flushes == 0);  // no flush reached the file
  }
  SUBCASE("a failed flush sticks: a retry does not report success") {
    plan->flush = {0, false, EIO};  // the first flush fails, a second would succeed
    require_ok(io.write_data(5 * 4096, data));
    CHECK(io.barrier().code() == ErrorCode::kIo);
    CHECK(io.barrier().code() == ErrorCode::kIo);
    CHECK(io.flush().code() == ErrorCode::kIo);
    CHECK(plan->flushes == 1);
    CHECK(io.sticky_error().message().find("fdatasync failed") != std::string::npos);
  }
  SUBCASE("barrier flushes only after writes") {
    require_ok(io.barrier());
    CHECK(plan->flushes == 0);
    require_ok(io.write_data(5 * 4096, data));
    require_ok(io.barrier());
    require_ok(io.barrier());
    CHECK(plan->flushes == 1);
    require_ok(io.flush());
    CHECK(plan->flushes == 2);
  }
  SUBCASE("level none checks nothing") {
    ImageFile none(file.get(), OverlapCheck::kNone);
    none.set_cluster_size(4096);
    none.overlaps().add(Structure::kActiveL1, 4096, 8);
    CHECK_FALSE(none.tracks(Structure::kActiveL1));
    require_ok(none.write_data(4096, data));
  }
}

TEST_CASE("header store: named fields, one write each, mirrors the file") {
  qtest::TempDir dir;
  const std::string path = make_image(dir, "h.qcow2");
  const Bytes before = qtest::read_file(path);
  auto parsed = parse_header(before);
  REQUIRE(parsed.is_ok());
  auto log = std::make_shared<WriteLog>();
  auto f = open_posix_file(path, FileMode::kReadWrite);
  REQUIRE(f.is_ok());
  RecordingFile rec(std::move(f).value(), log);
  ImageFile io(&rec, OverlapCheck::kCached);
  io.set_cluster_size(kCluster);
  HeaderStore h(&io);
  h.load(*parsed);
  require_ok(h.update({HeaderField::kRefcountTable, HeaderField::kRefcountOrder}, [](Header& x) {
    x.refcount_table_offset = 0x1230000;
    x.refcount_table_clusters = 3;
    x.refcount_order = 5;
  }));
  REQUIRE(log->ops.size() == 1);  // one write spanning both fields
  CHECK(log->ops[0].offset == 48);
  CHECK(log->ops[0].length == 100 - 48);
  const Bytes after = qtest::read_file(path);
  CHECK(be64_at(after, 48) == 0x1230000);
  CHECK(load_be32(after.data() + 96) == 5);
  // Everything else is as before.
  Bytes expect = before;
  std::memcpy(expect.data() + 48, after.data() + 48, 52);
  CHECK(after == expect);
  CHECK(h->refcount_order == 5);
  // Version 2 headers have no feature fields: such an update is refused, not written past byte 72.
  Header v2 = *parsed;
  v2.version = 2;
  h.load(v2);
  CHECK(h.update({HeaderField::kIncompatibleFeatures}, [](Header& x) { x.incompatible_features = 2; }).code() ==
        ErrorCode::kInternal);
  CHECK(log->ops.size() == 1);
}

TEST_CASE("writes onto metadata mark the image corrupt; reads keep working") {
  qtest::TempDir dir;
  const std::string path = make_image(dir, "o.qcow2");
  Bytes file = qtest::read_file(path);
  const uint64_t l1 = be64_at(file, 40);
  const uint64_t l2 = be64_at(file, l1) & 0x00fffffffffffe00ull;
  poke_be64(path, l2, (1ull << 63) | l1);  // guest cluster 0 -> the L1 table, COPIED
  const Bytes l1_before = Bytes(file.begin() + long(l1), file.begin() + long(l1 + 16));

  {
    Image img = open_rw(path);
    Status s = img.write(0, Bytes(4096, 0x55));
    CHECK(s.code() == ErrorCode::kCorrupt);
    CHECK(s.message().find("Marking image as corrupt: Preventing invalid write on metadata (overlaps with active L1 "
                           "table") != std::string::npos);
    CHECK(img.info().corrupt);
    // Later writes are refused, reads work.
    CHECK(img.write(1 << 20, Bytes(512, 1)).code() == ErrorCode::kReadOnly);
    CHECK(img.write_zeroes(1 << 20, 4096, Unmap::kNo).code() == ErrorCode::kReadOnly);
    CHECK(img.discard(0, kCluster).code() == ErrorCode::kReadOnly);
    Bytes buf(4096);
    require_ok(img.read(600ull << 20, buf));
    CHECK(buf[0] == 0x22);
    require_ok(img.close());
  }
  file = qtest::read_file(path);
  CHECK(Bytes(file.begin() + long(l1), file.begin() + long(l1 + 16)) == l1_before);
  CHECK((be64_at(file, 72) & 2) != 0);  // the corrupt bit is on disk
  OpenOptions rw;
  rw.writable = true;
  auto again = Image::open(path, rw);
  CHECK(again.status().code() == ErrorCode::kReadOnly);
  // qemu-img agrees the image is corrupt (the cluster is referenced twice)...
  CHECK(qtest::qemu_check(path).corruptions > 0);
}

TEST_CASE("failed flushes and writes fail every later flush and the close") {
  qtest::TempDir dir;
  const std::string path = make_image(dir, "s.qcow2");
  auto log = std::make_shared<WriteLog>();

  SUBCASE("flush") {
    auto plan = FaultPlan::fail_flush(0);  // the first flush fails, later ones would succeed
    OpenOptions o;
    o.wrap_file = [&](std::unique_ptr<File> f) -> std::unique_ptr<File> {
      return std::make_unique<FaultFile>(std::make_unique<RecordingFile>(std::move(f), log), plan);
    };
    Image img = open_rw(path, o);
    require_ok(img.write(2 << 20, Bytes(4096, 7)));  // allocates: refcounts, L2 entry
    CHECK(img.flush().code() == ErrorCode::kIo);
    const size_t ops = log->ops.size();
    CHECK(img.flush().code() == ErrorCode::kIo);
    CHECK(img.write(3 << 20, Bytes(4096, 8)).code() == ErrorCode::kIo);
    CHECK(img.close().code() == ErrorCode::kIo);
    CHECK(log->ops.size() == ops);  // the L2 entry never reached the file
    CHECK(plan->flushes == 1);
  }
  SUBCASE("write") {
    auto plan = FaultPlan::fail_write(0);  // the data write fails
    OpenOptions o;
    o.wrap_file = [&](std::unique_ptr<File> f) -> std::unique_ptr<File> {
      return std::make_unique<FaultFile>(std::make_unique<RecordingFile>(std::move(f), log), plan);
    };
    Image img = open_rw(path, o);
    CHECK(img.write(2 << 20, Bytes(4096, 7)).code() == ErrorCode::kIo);
    CHECK(img.flush().code() == ErrorCode::kIo);
    CHECK(img.close().code() == ErrorCode::kIo);
    CHECK(plan->writes == 1);  // nothing after the failed data write
  }
  // Whatever happened, the image is consistent and reads its acknowledged data.
  auto c = qtest::qemu_check(path);
  INFO(c.output);
  CHECK(c.consistent());
  auto r = Image::open(path);
  REQUIRE(r.is_ok());
  Bytes buf(4096);
  require_ok(r->read(0, buf));
  CHECK(buf[0] == 0x11);
}

TEST_CASE("discard on a version 2 image with a backing file keeps the data (as QEMU)") {
  qtest::TempDir dir;
  const std::string base = dir.file("base.raw"), top = dir.file("top.qcow2");
  qtest::write_file(base, Bytes(1 << 20, 0xbb));
  CreateOptions co;
  co.size = 1 << 20;
  co.version = 2;
  co.backing_file = base;
  co.backing_format = "raw";
  require_ok(Image::create(top, co));
  Image img = open_rw(top);
  require_ok(img.write(0, Bytes(256 << 10, 0x5a)));
  require_ok(img.discard(0, 256 << 10));
  Bytes buf(256 << 10);
  require_ok(img.read(0, buf));
  CHECK(buf == Bytes(256 << 10, 0x5a));
  require_ok(img.close());
}

}  // TEST_SUITE

namespace {

// Notes every change and flush of the files of one image, in order, tagged by file.
struct Sequence {
  struct Op {
    bool data;   // the external data file (else the image file)
    bool flush;  // else a write
    uint64_t offset = 0, length = 0;
  };
  std::vector<Op> ops;
};

class SequencedFile : public FileWrapper {
 public:
  SequencedFile(std::unique_ptr<File> inner, std::shared_ptr<Sequence> seq, bool data)
      : FileWrapper(std::move(inner)), seq_(std::move(seq)), data_(data) {}
  Status write_at(uint64_t o, std::span<const uint8_t> b) override {
    seq_->ops.push_back({data_, false, o, b.size()});
    return inner_->write_at(o, b);
  }
  Status flush() override {
    seq_->ops.push_back({data_, true});
    return inner_->flush();
  }

 private:
  std::shared_ptr<Sequence> seq_;
  bool data_;
};

}  // namespace

TEST_CASE("external data file: data is durable there before an L2 entry maps it; its failures are sticky") {
  qtest::TempDir dir;
  const std::string path = dir.path + "/x.qcow2", data = dir.path + "/x.data";
  CreateOptions c;
  c.size = 8 << 20;
  c.data_file = data;  // absolute: QEMU opens the name relative to the current directory
  require_ok(Image::create(path, c));
  auto is_data = [&](const File& f) { return f.path() == data; };

  SUBCASE("order") {
    auto seq = std::make_shared<Sequence>();
    OpenOptions o;
    o.wrap_file = [&](std::unique_ptr<File> f) -> std::unique_ptr<File> {
      const bool d = is_data(*f);
      return std::make_unique<SequencedFile>(std::move(f), seq, d);
    };
    Image img = open_rw(path, o);
    require_ok(img.write(3 << 20, Bytes(4096, 0x5a)));
    require_ok(img.close());
    const Bytes file = qtest::read_file(path);
    const uint64_t l1 = be64_at(file, 40), l2 = be64_at(file, l1) & kL1eOffsetMask;
    REQUIRE(l2 != 0);
    const uint64_t entry = be64_at(file, l2 + 8 * ((3 << 20) / kCluster));
    CHECK(entry == (kOflagCopied | (3 << 20)));  // host offset = guest offset, no refcount
    size_t data_write = SIZE_MAX, l2_write = SIZE_MAX, data_flush = SIZE_MAX;
    for (size_t i = 0; i < seq->ops.size(); ++i) {
      const auto& op = seq->ops[i];
      if (op.data && !op.flush && op.offset == (3u << 20) && data_write == SIZE_MAX) data_write = i;
      if (op.data && op.flush && data_write != SIZE_MAX && data_flush == SIZE_MAX) data_flush = i;
      // (The empty table is written when it is allocated, before the data: the entry comes after.)
      if (!op.data && !op.flush && op.offset <= l2 && l2 < op.offset + op.length && data_write != SIZE_MAX &&
          l2_write == SIZE_MAX)
        l2_write = i;
    }
    REQUIRE(data_write != SIZE_MAX);
    REQUIRE(l2_write != SIZE_MAX);
    CHECK(data_write < data_flush);
    CHECK(data_flush < l2_write);
    for (const auto& op : seq->ops) CHECK(!(op.data && !op.flush && op.offset < (3u << 20)));  // only the data went there
  }
  SUBCASE("a failed data file flush") {
    auto plan = FaultPlan::fail_flush(0);
    auto log = std::make_shared<WriteLog>();
    OpenOptions o;
    o.wrap_file = [&](std::unique_ptr<File> f) -> std::unique_ptr<File> {
      if (is_data(*f)) return std::make_unique<FaultFile>(std::move(f), plan);
      return std::make_unique<RecordingFile>(std::move(f), log);
    };
    Image img = open_rw(path, o);
    require_ok(img.write(3 << 20, Bytes(4096, 0x5a)));
    CHECK(img.flush().code() == ErrorCode::kIo);
    const size_t ops = log->ops.size();
    CHECK(img.flush().code() == ErrorCode::kIo);
    CHECK(img.write(5 << 20, Bytes(4096, 1)).code() == ErrorCode::kIo);
    CHECK(img.close().code() == ErrorCode::kIo);
    CHECK(log->ops.size() == ops);
    auto r = Image::open(path);
    REQUIRE(r.is_ok());
    Bytes buf(4096, 1);
    require_ok(r->read(3 << 20, buf));
    CHECK(buf == Bytes(4096, 0));  // never mapped
    auto check = qtest::qemu_check(path);
    INFO(check.output);
    CHECK(check.consistent());
  }
}
