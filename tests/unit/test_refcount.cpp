// Tests for refcount entry packing and the Refcounts allocator (refcount/refcount.*)
// over an in-memory file laid out like a fresh image.

#include <doctest/doctest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <vector>

#include "cache/table_cache.hpp"
#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "format/header.hpp"
#include "io/fault_file.hpp"
#include "map/geometry.hpp"
#include "qcow/file.hpp"
#include "refcount/refcount.hpp"

namespace {

using namespace qcow;
using Bytes = std::vector<uint8_t>;

Geometry geometry(uint32_t cluster_bits, uint32_t refcount_order) {
  Header h;
  h.version = 3;
  h.cluster_bits = cluster_bits;
  h.refcount_order = refcount_order;
  return Geometry::from(h);
}

// A memory file laid out like a freshly created image: cluster 0 (header), cluster 1
// (one-cluster refcount table), cluster 2 (refcount block 0), refcounts of 0..2 = 1.
struct Fixture {
  Geometry geo;
  std::shared_ptr<WriteLog> log = std::make_shared<WriteLog>();
  std::unique_ptr<File> file;
  std::unique_ptr<ImageFile> io;
  std::unique_ptr<Refcounts> rc;
  std::vector<std::pair<uint64_t, uint32_t>> moves;  // header callback calls

  Fixture(uint32_t cluster_bits, uint32_t order, size_t cache_slices = 8) : geo(geometry(cluster_bits, order)) {
    const uint64_t cs = geo.cluster_size;
    std::string boot(3 * cs, '\0');
    auto* b = reinterpret_cast<uint8_t*>(boot.data());
    store_be64(b + 48, cs);  // header: refcount_table_offset, refcount_table_clusters
    store_be32(b + 56, 1);
    store_be64(b + cs, 2 * cs);
    for (uint64_t c = 0; c < 3; ++c) set_refcount_entry(b + 2 * cs, order, c, 1);
    file = std::make_unique<RecordingFile>(make_memory_file("mem.qcow2", boot), log);
    io = std::make_unique<ImageFile>(file.get(), OverlapCheck::kCached);
    io->set_cluster_size(cs);
    rc = std::make_unique<Refcounts>(io.get(), geo, cache_slices);
    Status s = rc->load(cs, 1);
    INFO(s.message());
    REQUIRE(s.is_ok());
    rc->set_reftable_moved([this](uint64_t off, uint32_t clusters) -> Status {
      // The new table and its blocks must be durable before the header points at them:
      // the last logged op is a flush.
      REQUIRE(!log->ops.empty());
      CHECK(log->ops.back().kind == LoggedOp::Kind::kFlush);
      moves.emplace_back(off, clusters);
      uint8_t hb[12];
      store_be64(hb, off);
      store_be32(hb + 8, clusters);
      QCOW_TRY(file->write_at(48, hb));
      return file->flush();
    });
  }

  uint64_t refcount(uint64_t cluster) {
    auto r = rc->get(cluster);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    return r.value();
  }
  uint64_t alloc(uint64_t n) {
    auto r = rc->alloc(n);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    CHECK(r.value() % geo.cluster_size == 0);
    return r.value();
  }
  Bytes read(uint64_t off, uint64_t len) {
    Bytes b(len);
    auto n = file->read_at(off, b);
    REQUIRE(n.is_ok());
    b.resize(n.value());
    return b;
  }
  // Refcounts as stored on disk (after a flush), through the table at the header's location.
  uint64_t on_disk_refcount(uint64_t cluster) {
    Bytes h = read(48, 12);
    uint64_t table = load_be64(h.data());
    uint64_t rt = cluster >> geo.refblock_bits;
    Bytes e = read(table + 8 * rt, 8);
    uint64_t block = load_be64(e.data()) & kReftOffsetMask;
    if (!block) return 0;
    Bytes b = read(block, geo.cluster_size);
    return get_refcount_entry(b.data(), geo.refcount_order, cluster & (geo.refblock_entries - 1));
  }
};

}  // namespace

TEST_SUITE("qcow::refcount") {

TEST_CASE("refcounts: entry packing and the cluster allocator") {
  SUBCASE("get/set_refcount_entry packing for orders 0..6") {
    std::mt19937_64 rng(42);
    for (uint32_t order = 0; order <= 6; ++order) {
      const uint32_t bits = 1u << order;
      const uint64_t max = bits == 64 ? ~uint64_t(0) : (uint64_t(1) << bits) - 1;
      const uint64_t entries = 64 * 8 / bits;  // a 64-byte block
      CAPTURE(order);
      // Entry 0 occupies the least significant bits of byte 0 (sub-byte), or is big-endian.
      {
        Bytes b(64, 0);
        set_refcount_entry(b.data(), order, 0, 1);
        if (bits < 8) {
          CHECK(b[0] == 1);
        } else {
          CHECK(b[bits / 8 - 1] == 1);
          for (uint32_t i = 0; i + 1 < bits / 8; ++i) CHECK(b[i] == 0);
        }
        std::fill(b.begin(), b.end(), 0);
        set_refcount_entry(b.data(), order, 1, max);
        if (bits < 8) {
          CHECK(b[0] == uint8_t(max << bits));
        } else {
          for (uint32_t i = 0; i < bits / 8; ++i) CHECK(b[bits / 8 + i] == 0xff);
          CHECK(b[0] == 0);
        }
        CHECK(get_refcount_entry(b.data(), order, 0) == 0);
        CHECK(get_refcount_entry(b.data(), order, 1) == max);
      }
      // Concrete layouts.
      {
        Bytes b(64, 0);
        if (order == 0) {
          set_refcount_entry(b.data(), 0, 7, 1);
          set_refcount_entry(b.data(), 0, 8, 1);
          CHECK(b[0] == 0x80);
          CHECK(b[1] == 0x01);
        } else if (order == 1) {
          set_refcount_entry(b.data(), 1, 1, 2);
          set_refcount_entry(b.data(), 1, 3, 3);
          CHECK(b[0] == 0xc8);
        } else if (order == 2) {
          set_refcount_entry(b.data(), 2, 0, 0xa);
          set_refcount_entry(b.data(), 2, 1, 0x5);
          CHECK(b[0] == 0x5a);
        } else if (order == 3) {
          set_refcount_entry(b.data(), 3, 2, 0xab);
          CHECK(b[2] == 0xab);
        } else if (order == 4) {
          set_refcount_entry(b.data(), 4, 1, 0x1234);
          CHECK(b[2] == 0x12);
          CHECK(b[3] == 0x34);
        } else if (order == 5) {
          set_refcount_entry(b.data(), 5, 1, 0x12345678);
          CHECK(load_be32(b.data() + 4) == 0x12345678);
        } else {
          set_refcount_entry(b.data(), 6, 1, 0x0123456789abcdefull);
          CHECK(load_be64(b.data() + 8) == 0x0123456789abcdefull);
        }
      }
      // Random values in random blocks: the written entry reads back, neighbours are untouched.
      for (int iter = 0; iter < 300; ++iter) {
        Bytes b(64);
        for (auto& x : b) x = uint8_t(rng());
        std::vector<uint64_t> before(entries);
        for (uint64_t i = 0; i < entries; ++i) before[i] = get_refcount_entry(b.data(), order, i);
        uint64_t idx = rng() % entries;
        uint64_t v = iter % 3 == 0 ? max : iter % 3 == 1 ? 0 : (rng() & max);
        CAPTURE(idx);
        CAPTURE(v);
        set_refcount_entry(b.data(), order, idx, v);
        CHECK(get_refcount_entry(b.data(), order, idx) == v);
        for (uint64_t i = 0; i < entries; ++i)
          if (i != idx && get_refcount_entry(b.data(), order, i) != before[i]) FAIL_CHECK("neighbour " << i << " changed");
        // Values are truncated to the width, never spilling into neighbours.
        if (bits < 64) {
          set_refcount_entry(b.data(), order, idx, max + 1 + v);
          CHECK(get_refcount_entry(b.data(), order, idx) == ((max + 1 + v) & max));
          for (uint64_t i = 0; i < entries; ++i)
            if (i != idx && get_refcount_entry(b.data(), order, i) != before[i]) FAIL_CHECK("neighbour " << i << " changed");
        }
      }
    }
  }

  SUBCASE("alloc: contiguous runs after the bootstrap clusters") {
    Fixture f(12, 4);
    CHECK(f.refcount(0) == 1);
    CHECK(f.refcount(2) == 1);
    CHECK(f.refcount(3) == 0);
    uint64_t a = f.alloc(1);
    CHECK(a == 3 * 4096);
    uint64_t b = f.alloc(5);
    CHECK(b == 4 * 4096);
    for (uint64_t c = 3; c < 9; ++c) CHECK(f.refcount(c) == 1);
    CHECK(f.refcount(9) == 0);
    // A run that does not fit in a hole continues after it.
    REQUIRE(f.rc->update(5, -1).is_ok());  // free cluster 5: one-cluster hole
    uint64_t c = f.alloc(2);
    CHECK(c == 9 * 4096);
    uint64_t d = f.alloc(1);
    CHECK(d == 5 * 4096);  // the hole is reused
    // Flushed refcounts are on disk.
    REQUIRE(f.rc->flush().is_ok());
    for (uint64_t i = 0; i < 12; ++i) {
      CAPTURE(i);
      CHECK(f.on_disk_refcount(i) == (i < 11 ? 1u : 0u));
    }
  }

  SUBCASE("try_alloc_at takes exactly the requested free clusters") {
    Fixture f(12, 4);
    auto r = f.rc->try_alloc_at(2 * 4096, 1);
    REQUIRE(r.is_ok());
    CHECK_FALSE(r.value());  // cluster 2 is the refcount block
    r = f.rc->try_alloc_at(10 * 4096, 3);
    REQUIRE(r.is_ok());
    CHECK(r.value());
    for (uint64_t c = 10; c < 13; ++c) CHECK(f.refcount(c) == 1);
    r = f.rc->try_alloc_at(12 * 4096, 2);
    REQUIRE(r.is_ok());
    CHECK_FALSE(r.value());
    CHECK(f.refcount(13) == 0);
  }

  SUBCASE("refcount block creation: the block describes itself at the first cluster of its range") {
    Fixture f(9, 6);  // 512-byte clusters, 64-bit refcounts: 64 entries per block
    REQUIRE(f.geo.refblock_entries == 64);
    uint64_t first = f.alloc(61);  // clusters 3..63 fill the range of block 0
    CHECK(first == 3 * 512);
    REQUIRE(f.rc->reftable()[1] == 0);
    uint64_t next = f.alloc(1);
    // Block 1 went to cluster 64, the first cluster of its own range; the data cluster follows.
    CHECK(f.rc->reftable()[1] == 64 * 512);
    CHECK(next == 65 * 512);
    CHECK(f.refcount(64) == 1);
    CHECK(f.refcount(65) == 1);
    CHECK(f.refcount(66) == 0);
    // The refcount table entry was written to the file at once, after the block was flushed.
    CHECK(load_be64(f.read(512 + 8, 8).data()) == 64 * 512);
    size_t entry_write = SIZE_MAX, block_write = SIZE_MAX;
    for (size_t i = 0; i < f.log->ops.size(); ++i) {
      const LoggedOp& op = f.log->ops[i];
      if (op.kind != LoggedOp::Kind::kWrite) continue;
      if (op.offset == 512 + 8) entry_write = i;
      if (op.offset == 64 * 512 && block_write == SIZE_MAX) block_write = i;
    }
    REQUIRE(entry_write != SIZE_MAX);
    REQUIRE(block_write != SIZE_MAX);
    CHECK(block_write < entry_write);
    bool flushed_between = false;
    for (size_t i = block_write; i < entry_write; ++i) flushed_between |= f.log->ops[i].kind == LoggedOp::Kind::kFlush;
    CHECK(flushed_between);
    REQUIRE(f.rc->flush().is_ok());
    CHECK(f.on_disk_refcount(64) == 1);
    CHECK(f.on_disk_refcount(65) == 1);
    CHECK(f.moves.empty());
    // Runs longer than a refcount block's range must still come out contiguous, which
    // means some new blocks cannot sit inside the range they describe.
    for (uint64_t n : {63, 64, 100, 300}) {
      CAPTURE(n);
      uint64_t run = f.alloc(n) >> 9;
      for (uint64_t c = run; c < run + n; ++c) {
        CAPTURE(c);
        REQUIRE(f.refcount(c) == 1);
        for (uint64_t e : f.rc->reftable()) REQUIRE((e >> 9) != c);  // not a refcount block
      }
      // Every refcount block is itself refcounted.
      for (uint64_t e : f.rc->reftable())
        if (e) CHECK(f.refcount(e >> 9) == 1);
    }
    REQUIRE(f.rc->flush().is_ok());
    for (uint64_t e : f.rc->reftable())
      if (e) CHECK(f.on_disk_refcount(e >> 9) == 1);
  }

  SUBCASE("refcount table growth keeps every allocation and moves the table") {
    Fixture f(9, 6, 4);  // one-cluster table: 64 blocks of 64 clusters = 4096 clusters
    std::set<uint64_t> data;
    uint64_t end = 0;
    while (f.moves.empty()) {
      uint64_t off = f.alloc(1);
      REQUIRE(data.insert(off >> 9).second);  // never handed out twice
      end = std::max(end, off >> 9);
      REQUIRE(end < 10000);
    }
    REQUIRE(f.moves.size() == 1);
    const uint64_t table = f.rc->reftable_offset();
    CHECK(table != 512);
    CHECK(f.moves[0].first == table);
    CHECK(f.moves[0].second == f.rc->reftable_clusters());
    CHECK(f.rc->reftable_clusters() >= 2);
    CHECK(load_be64(f.read(48, 8).data()) == table);
    // Keep allocating past the growth point for a while.
    for (int i = 0; i < 300; ++i) {
      uint64_t off = f.alloc(1 + i % 3);
      for (uint64_t c = 0; c < 1 + uint64_t(i % 3); ++c) REQUIRE(data.insert((off >> 9) + c).second);
    }
    // Expected refcounts: header, block 0, every block in the table, the table, every data cluster.
    std::set<uint64_t> metadata = {0};
    for (uint64_t e : f.rc->reftable())
      if (e) metadata.insert(e >> 9);
    for (uint64_t c = 0; c < f.rc->reftable_clusters(); ++c) metadata.insert((table >> 9) + c);
    for (uint64_t c : data) CHECK(metadata.count(c) == 0);
    uint64_t max_cluster = std::max(*data.rbegin(), *metadata.rbegin());
    REQUIRE(f.rc->flush().is_ok());
    for (uint64_t c = 0; c <= max_cluster + 70; ++c) {
      CAPTURE(c);
      uint64_t expect = (data.count(c) || metadata.count(c)) ? 1 : 0;
      CHECK(f.refcount(c) == expect);
      CHECK(f.on_disk_refcount(c) == expect);
    }
    // The old table (cluster 1) was freed once the header pointed elsewhere, and was reused.
    CHECK(data.count(1) == 1);
    // A fresh Refcounts over the moved table sees the same counts.
    ImageFile io(f.file.get(), OverlapCheck::kCached);
    io.set_cluster_size(f.geo.cluster_size);
    Refcounts again(&io, f.geo, 4);
    REQUIRE(again.load(table, f.rc->reftable_clusters()).is_ok());
    for (uint64_t c = 0; c <= max_cluster; c += 7) {
      CAPTURE(c);
      CHECK(again.get(c).value() == ((data.count(c) || metadata.count(c)) ? 1u : 0u));
    }
  }

  SUBCASE("free_later + apply_deferred, then the freed clusters are reused") {
    Fixture f(12, 4);
    uint64_t a = f.alloc(3);
    uint64_t b = f.alloc(2);
    f.rc->free_later(a, 3);
    CHECK(f.rc->has_deferred());
    for (uint64_t c = 0; c < 3; ++c) CHECK(f.refcount((a >> 12) + c) == 1);  // not yet
    uint64_t c = f.alloc(1);
    CHECK(c == b + 2 * 4096);  // deferred clusters are not reused before apply
    REQUIRE(f.rc->apply_deferred().is_ok());
    CHECK_FALSE(f.rc->has_deferred());
    for (uint64_t i = 0; i < 3; ++i) CHECK(f.refcount((a >> 12) + i) == 0);
    CHECK(f.alloc(3) == a);
    // free_later of zero clusters schedules nothing.
    f.rc->free_later(b, 0);
    CHECK_FALSE(f.rc->has_deferred());
  }

  SUBCASE("overflow with 1-bit refcounts and underflow") {
    Fixture f(12, 0);
    REQUIRE(f.geo.max_refcount() == 1);
    uint64_t a = f.alloc(1) >> 12;
    CHECK(f.refcount(a) == 1);
    Status s = f.rc->update(a, 1);
    CHECK(s.code() == ErrorCode::kLimit);
    CHECK(f.refcount(a) == 1);  // unchanged
    REQUIRE(f.rc->update(a, -1).is_ok());
    CHECK(f.refcount(a) == 0);
    s = f.rc->update(a, -1);
    CHECK(s.code() == ErrorCode::kCorrupt);
    CHECK(f.refcount(a) == 0);
    // Refcount of a cluster with no block: decreasing is corruption.
    s = f.rc->update(1 << 20, -1);
    CHECK(s.code() == ErrorCode::kCorrupt);
    // 16-bit: 0xffff is the maximum.
    Fixture g(12, 4);
    uint64_t c = g.alloc(1) >> 12;
    REQUIRE(g.rc->update(c, 0xfffe).is_ok());
    CHECK(g.refcount(c) == 0xffff);
    CHECK(g.rc->update(c, 1).code() == ErrorCode::kLimit);
    // 64-bit: the full range.
    Fixture h(12, 6);
    uint64_t d = h.alloc(1) >> 12;
    REQUIRE(h.rc->update(d, int64_t(0x7fffffffffffffff)).is_ok());
    REQUIRE(h.rc->update(d, int64_t(0x7fffffffffffffff)).is_ok());
    CHECK(h.refcount(d) == ~uint64_t(0));
    CHECK(h.rc->update(d, 1).code() == ErrorCode::kLimit);
  }

  SUBCASE("load rejects bad tables") {
    Fixture f(12, 4);
    ImageFile io(f.file.get(), OverlapCheck::kCached);
    io.set_cluster_size(f.geo.cluster_size);
    Refcounts r(&io, f.geo, 4);
    CHECK(r.load(4096, 0).code() == ErrorCode::kCorrupt);
    CHECK(r.load(4097, 1).code() == ErrorCode::kCorrupt);
    CHECK(r.load(1 << 20, 1).code() == ErrorCode::kCorrupt);  // beyond the end of the file
    CHECK(r.load(4096, 4096).code() == ErrorCode::kLimit);     // 16 MiB > 8 MiB
  }
}

TEST_CASE("refcounts: a new block is linked only after the block counting its cluster") {
  // 512-byte clusters, 64-bit refcounts: 64 clusters per block. Fill range 0, then ask for a
  // run that needs blocks for several new ranges at once: they go in front of the run, at
  // the start of range 1, so range 1's new block counts the clusters of the others. A power
  // cut may keep any subset of unflushed writes, so every table entry for a block must come
  // after a flush that follows the entry of the block counting that block's cluster
  // (the crash harness found the reverse at 2,000 states: refcount-growth).
  Fixture f(9, 6);
  const uint64_t cs = f.geo.cluster_size;
  f.alloc(61);  // clusters 3..63: range 0 is full
  f.log->ops.clear();
  const uint64_t run = f.alloc(200);
  CHECK(run >= 64 * cs);
  std::map<uint64_t, std::pair<size_t, uint64_t>> entry_writes;  // range -> (op index, block offset)
  for (size_t i = 0; i < f.log->ops.size(); ++i) {
    const LoggedOp& op = f.log->ops[i];
    if (op.kind != LoggedOp::Kind::kWrite || op.offset < cs || op.offset >= 2 * cs || op.length != 8) continue;
    entry_writes[(op.offset - cs) / 8] = {i, load_be64(op.data.data()) & kReftOffsetMask};
  }
  REQUIRE(entry_writes.size() >= 3);
  int dependent = 0;
  for (const auto& [range, w] : entry_writes) {
    const uint64_t counted_by = (w.second / cs) >> f.geo.refblock_bits;
    if (counted_by == range || !entry_writes.count(counted_by)) continue;
    ++dependent;
    const size_t before = entry_writes[counted_by].first, after = w.first;
    CAPTURE(range);
    CAPTURE(counted_by);
    REQUIRE(before < after);
    bool flushed = false;
    for (size_t i = before + 1; i < after; ++i) flushed |= f.log->ops[i].kind == LoggedOp::Kind::kFlush;
    CHECK(flushed);
  }
  CHECK(dependent >= 2);
  REQUIRE(f.rc->cache().flush().is_ok());
  for (uint64_t c = run / cs; c < run / cs + 200; ++c) CHECK(f.on_disk_refcount(c) == 1);
}

}  // TEST_SUITE
