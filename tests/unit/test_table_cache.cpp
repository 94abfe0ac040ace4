// Tests for TableCache (cache/table_cache.*): LRU eviction, write-back of dirty slices,
// the dependency + barrier ordering between two caches, and forget().

#include <doctest/doctest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cache/table_cache.hpp"
#include "meta/image_file.hpp"
#include "io/fault_file.hpp"
#include "qcow/file.hpp"

namespace {

using namespace qcow;
using Bytes = std::vector<uint8_t>;
using Kind = LoggedOp::Kind;

constexpr size_t kSlice = 512;

// A memory file of 64 slices, slice i filled with byte i, recorded.
struct Fixture {
  std::shared_ptr<WriteLog> log = std::make_shared<WriteLog>();
  std::unique_ptr<File> file;
  ImageFile io;
  Fixture() : file(make()), io(file.get(), OverlapCheck::kCached) { io.set_cluster_size(kSlice); }
  std::unique_ptr<File> make() {
    std::string init(64 * kSlice, '\0');
    for (size_t i = 0; i < 64; ++i) std::fill(init.begin() + i * kSlice, init.begin() + (i + 1) * kSlice, char(i));
    return std::make_unique<RecordingFile>(make_memory_file("cache.img", init), log);
  }
  uint8_t disk_byte(uint64_t off) {
    uint8_t b = 0;
    auto r = file->read_at(off, std::span<uint8_t>(&b, 1));
    REQUIRE(r.is_ok());
    return b;
  }
  // Offsets of the logged writes, in order (flush markers left out).
  std::vector<int64_t> writes() const {
    std::vector<int64_t> t;
    for (const auto& op : log->ops)
      if (op.kind == Kind::kWrite) t.push_back(int64_t(op.offset));
    return t;
  }
  // True when a flush marker lies between the last write at one of `before` and the first
  // write at one of `after`, and every `before` write precedes every `after` write.
  bool ordered_with_flush(const std::vector<int64_t>& before, const std::vector<int64_t>& after) const {
    auto in = [](const std::vector<int64_t>& v, int64_t x) { return std::find(v.begin(), v.end(), x) != v.end(); };
    int64_t last_before = -1, first_after = -1;
    for (size_t i = 0; i < log->ops.size(); ++i) {
      const auto& op = log->ops[i];
      if (op.kind != Kind::kWrite) continue;
      if (in(before, int64_t(op.offset))) last_before = int64_t(i);
      if (in(after, int64_t(op.offset)) && first_after < 0) first_after = int64_t(i);
    }
    if (last_before < 0 || first_after < 0 || last_before > first_after) return false;
    for (int64_t i = last_before; i < first_after; ++i)
      if (log->ops[size_t(i)].kind == Kind::kFlush) return true;
    return false;
  }
  // Offsets of the logged writes, with -1 for each flush marker.
  std::vector<int64_t> trace() const {
    std::vector<int64_t> t;
    for (const auto& op : log->ops) t.push_back(op.kind == Kind::kFlush ? -1 : int64_t(op.offset));
    return t;
  }
};

uint8_t* get(TableCache& c, uint64_t off) {
  auto r = c.get(off);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return r.value();
}

}  // namespace

TEST_SUITE("qcow::table_cache") {

TEST_CASE("table cache: LRU, write-back, dependency order, forget") {
  Fixture f;

  SUBCASE("hits return cached data; misses read the file") {
    TableCache c(&f.io, Structure::kActiveL2, kSlice, 4);
    uint8_t* p = get(c, 3 * kSlice);
    CHECK(p[0] == 3);
    CHECK(p[kSlice - 1] == 3);
    CHECK(c.misses() == 1);
    CHECK(get(c, 3 * kSlice)[0] == 3);
    CHECK(c.hits() == 1);
    CHECK(c.slice_size() == kSlice);
    CHECK_FALSE(c.has_dirty());
    // get_empty installs zeros without reading.
    auto e = c.get_empty(5 * kSlice);
    REQUIRE(e.is_ok());
    CHECK(std::all_of(e.value(), e.value() + kSlice, [](uint8_t b) { return b == 0; }));
    // A slice beyond the end of the file is corruption, not zeros.
    auto beyond = c.get(100 * kSlice);
    REQUIRE_FALSE(beyond.is_ok());
    CHECK(beyond.status().code() == ErrorCode::kCorrupt);
    CHECK(beyond.status().message().find("active L2 table") != std::string::npos);
    CHECK(f.log->ops.empty());  // reads only
  }

  SUBCASE("LRU eviction order") {
    TableCache c(&f.io, Structure::kActiveL2, kSlice, 3);
    get(c, 0);
    get(c, kSlice);
    get(c, 2 * kSlice);
    get(c, 0);  // 0 becomes most recent: LRU order now 1, 2, 0
    CHECK(c.misses() == 3);
    get(c, 3 * kSlice);  // evicts 1
    CHECK(c.misses() == 4);
    get(c, 0);
    get(c, 2 * kSlice);
    get(c, 3 * kSlice);
    CHECK(c.misses() == 4);  // all still cached
    get(c, kSlice);           // miss; evicts the LRU: 0
    CHECK(c.misses() == 5);
    get(c, 2 * kSlice);
    CHECK(c.misses() == 5);
    get(c, 0);
    CHECK(c.misses() == 6);
    // A cache never holds fewer than two slices.
    TableCache tiny(&f.io, Structure::kActiveL2, kSlice, 0);
    get(tiny, 0);
    get(tiny, kSlice);
    get(tiny, 0);
    CHECK(tiny.misses() == 2);
    CHECK(f.log->ops.empty());  // clean slices are dropped without writing
  }

  SUBCASE("dirty slices are written back on eviction, clean ones are not") {
    TableCache c(&f.io, Structure::kActiveL2, kSlice, 2);
    uint8_t* p = get(c, 4 * kSlice);
    p[10] = 0xee;
    c.mark_dirty(4 * kSlice);
    CHECK(c.has_dirty());
    get(c, 5 * kSlice);  // clean
    CHECK(f.disk_byte(4 * kSlice + 10) == 4);  // not yet written
    get(c, 6 * kSlice);  // evicts dirty slice 4
    CHECK(f.disk_byte(4 * kSlice + 10) == 0xee);
    CHECK_FALSE(c.has_dirty());
    get(c, 7 * kSlice);  // evicts clean slice 5: no write
    REQUIRE(f.log->ops.size() == 1);
    CHECK(f.log->ops[0].kind == Kind::kWrite);
    CHECK(f.log->ops[0].offset == 4 * kSlice);
    CHECK(f.log->ops[0].data.size() == kSlice);
    // Reading it again gets the written-back contents.
    CHECK(get(c, 4 * kSlice)[10] == 0xee);
  }

  SUBCASE("flush writes every dirty slice once, in offset order, then nothing") {
    TableCache c(&f.io, Structure::kActiveL2, kSlice, 8);
    for (uint64_t s : {9, 2, 7}) {
      get(c, s * kSlice)[0] = 0xaa;
      c.mark_dirty(s * kSlice);
    }
    c.mark_dirty(9 * kSlice);  // twice: still one write
    c.mark_dirty(30 * kSlice);  // not cached: ignored
    REQUIRE(c.flush().is_ok());
    std::vector<int64_t> expect = {2 * kSlice, 7 * kSlice, 9 * kSlice};
    CHECK(f.writes() == expect);
    REQUIRE(c.flush().is_ok());
    CHECK(f.writes() == expect);
    CHECK_FALSE(c.has_dirty());
  }

  SUBCASE("dependency: refcount writes and a barrier precede L2 writes") {
    TableCache refcounts(&f.io, Structure::kRefcountBlock, kSlice, 4);
    TableCache l2(&f.io, Structure::kActiveL2, kSlice, 2);
    l2.set_dependency(&refcounts);

    SUBCASE("on flush") {
      get(refcounts, 1 * kSlice)[0] = 0x11;
      refcounts.mark_dirty(1 * kSlice);
      get(refcounts, 3 * kSlice)[0] = 0x33;
      refcounts.mark_dirty(3 * kSlice);
      get(l2, 10 * kSlice)[0] = 0x10;
      l2.mark_dirty(10 * kSlice);
      get(l2, 11 * kSlice)[0] = 0x11;
      l2.mark_dirty(11 * kSlice);
      REQUIRE(l2.flush().is_ok());
      std::vector<int64_t> expect = {1 * kSlice, 3 * kSlice, 10 * kSlice, 11 * kSlice};
      CHECK(f.writes() == expect);
      CHECK(f.ordered_with_flush({1 * kSlice, 3 * kSlice}, {10 * kSlice, 11 * kSlice}));
      CHECK_FALSE(refcounts.has_dirty());
      CHECK_FALSE(l2.has_dirty());
    }
    SUBCASE("on eviction") {
      get(l2, 10 * kSlice)[0] = 0x10;
      l2.mark_dirty(10 * kSlice);
      get(refcounts, 2 * kSlice)[0] = 0x22;
      refcounts.mark_dirty(2 * kSlice);
      get(l2, 11 * kSlice);
      get(l2, 12 * kSlice);  // evicts dirty 10: the refcount block goes first, then a flush
      std::vector<int64_t> expect = {2 * kSlice, -1, 10 * kSlice};
      CHECK(f.trace() == expect);
    }
    SUBCASE("an earlier unflushed write is flushed before an L2 write") {
      const uint8_t data[4] = {1, 2, 3, 4};
      REQUIRE(f.io.write_data(40 * kSlice, data).is_ok());  // guest data written just before
      get(l2, 10 * kSlice)[0] = 0x10;
      l2.mark_dirty(10 * kSlice);
      REQUIRE(l2.flush().is_ok());
      std::vector<int64_t> expect = {40 * kSlice, -1, 10 * kSlice};
      CHECK(f.trace() == expect);
    }
    SUBCASE("nothing pending: no needless flush") {
      get(l2, 10 * kSlice)[0] = 0x10;
      l2.mark_dirty(10 * kSlice);
      REQUIRE(l2.flush().is_ok());
      std::vector<int64_t> expect = {10 * kSlice};
      CHECK(f.trace() == expect);
    }
    SUBCASE("flushing the dependency alone does not touch L2") {
      get(l2, 10 * kSlice)[0] = 0x10;
      l2.mark_dirty(10 * kSlice);
      get(refcounts, 2 * kSlice)[0] = 0x22;
      refcounts.mark_dirty(2 * kSlice);
      REQUIRE(refcounts.flush().is_ok());
      std::vector<int64_t> expect = {2 * kSlice};
      CHECK(f.trace() == expect);
      CHECK(l2.has_dirty());
    }
  }

  SUBCASE("forget drops slices without writing them") {
    TableCache c(&f.io, Structure::kActiveL2, kSlice, 8);
    get(c, 4 * kSlice)[0] = 0x44;
    c.mark_dirty(4 * kSlice);
    get(c, 5 * kSlice)[0] = 0x55;
    c.mark_dirty(5 * kSlice);
    get(c, 6 * kSlice)[0] = 0x66;
    c.mark_dirty(6 * kSlice);
    c.forget(4 * kSlice, 2 * kSlice);  // slices 4 and 5
    CHECK(c.has_dirty());              // 6 is still dirty
    REQUIRE(c.flush().is_ok());
    std::vector<int64_t> expect = {6 * kSlice};
    CHECK(f.trace() == expect);
    CHECK_FALSE(c.has_dirty());
    uint64_t misses = c.misses();
    CHECK(get(c, 4 * kSlice)[0] == 4);  // re-read from the file: the change is gone
    CHECK(c.misses() == misses + 1);
    c.forget(50 * kSlice, kSlice);  // not cached: no effect
    REQUIRE(c.flush().is_ok());
    CHECK(f.trace() == expect);
  }

  SUBCASE("a failed write-back keeps the slice dirty, and the failure sticks") {
    auto plan = FaultPlan::fail_write(0);
    auto faulty = std::make_unique<FaultFile>(make_memory_file("f.img", std::string(8 * kSlice, '\0')), plan);
    ImageFile io(faulty.get(), OverlapCheck::kCached);
    io.set_cluster_size(kSlice);
    TableCache c(&io, Structure::kActiveL2, kSlice, 4);
    get(c, kSlice)[0] = 1;
    c.mark_dirty(kSlice);
    Status s = c.flush();
    CHECK(s.code() == ErrorCode::kIo);
    CHECK(s.message().find("active L2 table at 0x200") != std::string::npos);
    CHECK(c.has_dirty());
    // The file would take the write now, but the image may hold a torn slice: every
    // later write and flush reports the first failure instead of succeeding.
    Status again = c.flush();
    CHECK(again.code() == ErrorCode::kIo);
    CHECK(again.message().find("an earlier write or flush failed") != std::string::npos);
    CHECK(io.barrier().code() == ErrorCode::kIo);
    CHECK(io.flush().code() == ErrorCode::kIo);
    CHECK(plan->writes == 1);  // nothing more reached the file
    CHECK(c.has_dirty());
  }
}

}  // TEST_SUITE
