// Tests of the public qcow::Image API on real files: every creation layout, seeded
// random I/O against a reference model, reopen, `qemu-img check` and `qemu-img compare`;
// backing chains at subcluster granularity; error paths.

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "support/guest_model.hpp"
#include "support/image_util.hpp"
#include "support/test_util.hpp"

namespace {

using namespace qcow;
using qtest::Bytes;
using qtest::open_rw;
using qtest::require_ok;
using qtest::open_ro;
using qtest::GuestModel;

struct Layout {
  int version;
  uint32_t cluster_size;
  bool extended_l2;
  int refcount_bits;
};

std::string describe(const Layout& l) {
  return "v" + std::to_string(l.version) + " cluster=" + std::to_string(l.cluster_size) +
         (l.extended_l2 ? " ext-l2" : "") + " refcount_bits=" + std::to_string(l.refcount_bits);
}

uint64_t l2_coverage(const Layout& l) {
  return uint64_t(l.cluster_size) * (l.cluster_size / (l.extended_l2 ? 16 : 8));
}

struct Window {
  uint64_t start, end;
};

// Compares every window (and a few random ranges inside them) with the model.
void compare_windows(Image& img, const GuestModel& m, const std::vector<Window>& windows) {
  for (const Window& w : windows) {
    CAPTURE(w.start);
    CAPTURE(w.end);
    CHECK(qtest::first_mismatch(img, m, w.start, w.end - w.start) == -1);
  }
}

void qemu_check_clean(const std::string& path) {
  auto c = qtest::qemu_check(path);
  INFO(c.output);
  CHECK(c.rc == 0);
  CHECK(c.corruptions == 0);
  CHECK(c.leaks == 0);
}

void qemu_compare(const std::string& image, const GuestModel& m, const std::string& raw) {
  qtest::require_tool("qemu-img");
  m.write_raw(raw);
  std::string out;
  int rc = qtest::run_command("qemu-img compare -f qcow2 -F raw " + qtest::shell_quote(image) + " " + qtest::shell_quote(raw),
                              &out);
  INFO(out);
  CHECK(rc == 0);
}

// Seeded random operations on one image, mirrored in the model.
struct Workload {
  Image& img;
  GuestModel& m;
  const uint64_t cs;
  const bool has_backing;
  std::mt19937_64 rng;
  std::vector<Window> windows;
  uint64_t max_len;

  uint64_t rnd(uint64_t n) { return n ? rng() % n : 0; }
  Window pick() { return windows[rnd(windows.size())]; }

  void write() {
    Window w = pick();
    uint64_t off = w.start + rnd(w.end - w.start);
    uint64_t len = 1 + rnd(std::min<uint64_t>(max_len, w.end - off));
    Bytes d = qtest::random_bytes(len, rng());
    CAPTURE(off);
    CAPTURE(len);
    note("write", off, len);
    require_ok(img.write(off, d));
    m.write(off, d);
  }
  void write_zeroes() {
    Window w = pick();
    uint64_t off = w.start + rnd(w.end - w.start);
    uint64_t len = 1 + rnd(std::min<uint64_t>(max_len, w.end - off));
    Unmap unmap = rnd(2) ? Unmap::kYes : Unmap::kNo;
    CAPTURE(off);
    CAPTURE(len);
    note(unmap == Unmap::kYes ? "zero-unmap" : "zero", off, len);
    require_ok(img.write_zeroes(off, len, unmap));
    m.zero(off, len);
  }
  void discard() {
    Window w = pick();
    uint64_t off = w.start + rnd(w.end - w.start);
    uint64_t len = 1 + rnd(std::min<uint64_t>(max_len + cs, w.end - off));
    CAPTURE(off);
    CAPTURE(len);
    note("discard", off, len);
    require_ok(img.discard(off, len));
    // Whole clusters (the end of the image counts as a boundary) now read as zeros.
    uint64_t a = (off + cs - 1) / cs * cs;
    uint64_t b = off + len == m.size() ? off + len : (off + len) / cs * cs;
    if (a < b) m.zero(a, b - a);
  }
  void compressed() {
    Window w = pick();
    uint64_t first = (w.start + cs - 1) / cs, last = w.end / cs;  // whole clusters of the window
    if (w.end == m.size() && w.end % cs) ++last;                  // the final partial cluster counts
    if (first >= last) return;
    uint64_t c = first + rnd(last - first);
    uint64_t n = 1 + rnd(std::min<uint64_t>(2, last - c));
    uint64_t off = c * cs;
    uint64_t len = std::min(n * cs, m.size() - off);
    Bytes d = rnd(4) ? qtest::compressible_bytes(len, rng()) : qtest::random_bytes(len, rng());
    CAPTURE(off);
    CAPTURE(len);
    note("compressed", off, len);
    require_ok(img.write(off, d, Compress::kYes));
    m.write(off, d);
  }
  void read_check() {
    Window w = pick();
    uint64_t off = w.start + rnd(w.end - w.start);
    uint64_t len = 1 + rnd(std::min<uint64_t>(max_len, w.end - off));
    CAPTURE(off);
    CAPTURE(len);
    CHECK(qtest::first_mismatch(img, m, off, len) == -1);
  }
  std::string history;  // the ops so far, printed when a check fails
  void note(const char* what, uint64_t off, uint64_t len) {
    history += std::string(what) + " " + std::to_string(off) + "+" + std::to_string(len) + "\n";
  }
  void run(int ops, bool with_discard, bool with_compressed) {
    // QIMG_TEST_PARANOID=1 compares every window after every operation (to find the first bad one).
    static const bool paranoid = std::getenv("QIMG_TEST_PARANOID") != nullptr;
    for (int i = 0; i < ops; ++i) {
      CAPTURE(i);
      INFO(history);
      if (paranoid) {
        for (const Window& x : windows) REQUIRE(qtest::first_mismatch(img, m, x.start, x.end - x.start) == -1);
      }
      uint64_t r = rnd(100);
      if (r < 45) write();
      else if (r < 60) write_zeroes();
      else if (r < 70) { if (with_discard) discard(); else write(); }
      else if (r < 85) { if (with_compressed) compressed(); else write(); }
      else read_check();
      if (rnd(10) == 0) {
        history += "flush\n";
        require_ok(img.flush());
      }
    }
  }
};

}  // namespace

TEST_SUITE("qcow::image") {

TEST_CASE("image: create layouts, random I/O vs model, reopen, qemu-img check/compare, chains, errors") {
  qtest::TempDir dir("qimg-image");

  SUBCASE("every layout: random I/O, resize, reopen, qemu-img check and compare") {
    std::vector<Layout> layouts;
    for (int v : {2, 3})
      for (uint32_t cs : {512u, 4096u, 65536u, 2u << 20})
        for (bool ext : {false, true})
          for (int rb : {1, 16, 64}) {
            if (v == 2 && (ext || rb != 16)) continue;
            if (ext && cs < 16384) continue;
            layouts.push_back({v, cs, ext, rb});
          }
    REQUIRE(layouts.size() == 22);
    uint64_t seed = 1000;
    for (const Layout& l : layouts) {
      ++seed;
      const std::string name = describe(l);
      CAPTURE(name);
      const uint64_t cs = l.cluster_size;
      const uint64_t cov = l2_coverage(l);
      const uint64_t size = cov + 2 * cs + 1536;  // two L1 entries; a partial last cluster
      const std::string path = dir.file("img-" + std::to_string(seed) + ".qcow2");
      CreateOptions co;
      co.size = size;
      co.version = l.version;
      co.cluster_size = l.cluster_size;
      co.extended_l2 = l.extended_l2;
      co.refcount_bits = l.refcount_bits;
      require_ok(Image::create(path, co));
      {
        Image ro = open_ro(path);
        CHECK(ro.size() == size);
        ImageInfo info = ro.info();
        CHECK(info.format == Format::kQcow2);
        CHECK(info.cluster_size == cs);
        CHECK(info.version == l.version);
        CHECK(info.extended_l2 == l.extended_l2);
        CHECK(info.refcount_bits == l.refcount_bits);
        CHECK_FALSE(ro.writable());
      }
      qemu_check_clean(path);

      GuestModel m(size);
      std::vector<Window> windows = {
          {0, std::min(size, 3 * cs)},                          // the start
          {cov - 2 * cs, std::min(size, cov + 2 * cs)},         // across the first L2 table boundary
          {size > 3 * cs ? size - 3 * cs : 0, size},            // the (partial) end
      };
      const bool big = cs >= (2u << 20);
      {
        Image img = open_rw(path);
        CHECK(img.writable());
        Workload w{img, m, cs, false, std::mt19937_64(seed), windows, std::min<uint64_t>(5 * cs / 2, 3u << 20), {}};
        w.run(big ? 16 : 50, true, true);
        compare_windows(img, m, windows);

        // Grow past another L1 entry; the new space (including the tail of the old last cluster) reads zeros.
        const uint64_t old_size = size;
        const uint64_t new_size = size + cov + 3 * cs + 512;
        require_ok(img.resize(new_size));
        CHECK(img.size() == new_size);
        m.resize(new_size);
        CHECK(qtest::first_mismatch(img, m, old_size - std::min<uint64_t>(old_size, cs), 2 * cs) == -1);
        CHECK(qtest::first_mismatch(img, m, new_size - 2 * cs, 2 * cs) == -1);
        w.windows = {{old_size - 2 * cs, old_size + 2 * cs}, {new_size - 3 * cs, new_size}};
        w.run(big ? 8 : 25, true, true);
        for (const Window& x : w.windows) windows.push_back(x);
        compare_windows(img, m, windows);
        require_ok(img.close());
      }
      {
        Image ro = open_ro(path);
        CHECK(ro.size() == m.size());
        compare_windows(ro, m, windows);
        // Far from every window: zeros.
        CHECK(qtest::first_mismatch(ro, m, cov / 2, std::min<uint64_t>(cs, 65536)) == -1);
      }
      qemu_check_clean(path);
      qemu_compare(path, m, dir.file("model-" + std::to_string(seed) + ".raw"));
    }
  }

  SUBCASE("large writes into fresh space need runs longer than a refcount block's range") {
    for (int rb : {16, 64}) {
      CAPTURE(rb);
      const std::string path = dir.file("large-" + std::to_string(rb) + ".qcow2");
      CreateOptions co;
      co.size = 8 << 20;
      co.cluster_size = 512;
      co.refcount_bits = rb;
      require_ok(Image::create(path, co));
      GuestModel m(co.size);
      {
        Image img = open_rw(path);
        Bytes d = qtest::random_bytes(1 << 20, 77);  // 2048 clusters in one request
        Status s = img.write(4096 + 100, d);
        CHECK_MESSAGE(s.is_ok(), s.message());
        if (s.is_ok()) m.write(4096 + 100, d);
        CHECK(qtest::first_mismatch(img, m, 0, co.size) == -1);
        require_ok(img.close());
      }
      qemu_check_clean(path);
    }
    // Creating a large image with small clusters grows the L1 table by many clusters at once.
    CreateOptions co;
    co.size = 1ull << 30;
    co.cluster_size = 512;
    co.refcount_bits = 64;
    Status s = Image::create(dir.file("big-l1.qcow2"), co);
    CHECK_MESSAGE(s.is_ok(), s.message());
    if (s.is_ok()) qemu_check_clean(dir.file("big-l1.qcow2"));
  }

  SUBCASE("refcount table growth between small writes and flushes") {
    // 512-byte clusters, 64-bit refcounts: the first refcount table covers 4096 clusters.
    // A small write into a fresh cluster leaves a zero tail past the written end of the
    // file; when the next write moves the refcount table (and lands in the old table's
    // freed cluster), the following flush must not cut the new table off. Flushing after
    // every second write, in both phases, puts a flush right after the growing write.
    for (int phase = 0; phase < 2; ++phase) {
      CAPTURE(phase);
      const std::string path = dir.file("growth-flush-" + std::to_string(phase) + ".qcow2");
      CreateOptions co;
      co.size = 4 << 20;
      co.cluster_size = 512;
      co.refcount_bits = 64;
      require_ok(Image::create(path, co));
      GuestModel m(co.size);
      {
        Image img = open_rw(path);
        Bytes bulk = qtest::random_bytes(1800 << 10, 9);
        require_ok(img.write(0, bulk));
        m.write(0, bulk);
        require_ok(img.flush());
        for (uint64_t i = 0; i < 500; ++i) {
          uint64_t off = (1800 << 10) + i * 2048 + 7;  // one byte in every fourth cluster
          Bytes b = {uint8_t(i + 1)};
          require_ok(img.write(off, b));
          m.write(off, b);
          if (i % 2 == uint64_t(phase)) require_ok(img.flush());
        }
        require_ok(img.close());
      }
      auto r = Image::open(path);
      INFO(r.status().message());
      REQUIRE(r.is_ok());
      CHECK(qtest::first_mismatch(r.value(), m, 0, co.size) == -1);
      qemu_check_clean(path);
    }
  }

  SUBCASE("compressed clusters, freed and reused, never share a host cluster with live data") {
    for (int rb : {2, 16}) {
      CAPTURE(rb);
      const std::string path = dir.file("creuse-" + std::to_string(rb) + ".qcow2");
      CreateOptions co;
      co.size = 1 << 20;
      co.cluster_size = 65536;
      co.refcount_bits = rb;
      require_ok(Image::create(path, co));
      GuestModel m(co.size);
      const uint64_t cs = co.cluster_size;
      {
        Image img = open_rw(path);
        Bytes c0 = qtest::compressible_bytes(cs, 1);
        require_ok(img.write(0, c0, Compress::kYes));  // packs into a fresh host cluster H
        m.write(0, c0);
        Bytes plain = qtest::random_bytes(cs, 2);
        require_ok(img.write(0, plain));  // guest cluster 0 moves; H is freed at the next flush
        m.write(0, plain);
        require_ok(img.flush());
        Bytes d1 = qtest::random_bytes(cs, 3);
        require_ok(img.write(cs, d1));  // may reuse H for ordinary data
        m.write(cs, d1);
        Bytes c2 = qtest::compressible_bytes(cs, 4);
        require_ok(img.write(2 * cs, c2, Compress::kYes));  // must not pack into H any more
        m.write(2 * cs, c2);
        CHECK(qtest::first_mismatch(img, m, 0, co.size) == -1);
        require_ok(img.close());
      }
      {
        Image ro = open_ro(path);
        CHECK(qtest::first_mismatch(ro, m, 0, co.size) == -1);
      }
      auto c = qtest::qemu_check(path);
      INFO(c.output);
      CHECK(c.consistent());
      CHECK(c.corruptions == 0);
    }
  }

  SUBCASE("backing chain: raw base, qcow2 overlay larger than the base, subcluster writes") {
    struct Overlay {
      uint32_t cluster_size;
      bool ext;
      int version;
    };
    const Overlay overlays[] = {{65536, false, 3}, {65536, true, 3}, {16384, true, 3}, {4096, false, 2}};
    uint64_t seed = 500;
    for (const Overlay& o : overlays) {
      ++seed;
      CAPTURE(o.cluster_size);
      CAPTURE(o.ext);
      CAPTURE(o.version);
      const uint64_t cs = o.cluster_size;
      const uint64_t sub = o.ext ? cs / 32 : cs;
      const uint64_t base_size = 6 * cs + 1000;
      const uint64_t size = (base_size + 511) / 512 * 512 + 4 * cs + 512;  // qcow2 sizes are whole sectors
      const std::string base = dir.file("base-" + std::to_string(seed) + ".raw");
      const std::string top = dir.file("top-" + std::to_string(seed) + ".qcow2");
      Bytes base_data = qtest::random_bytes(base_size, seed);
      qtest::write_file(base, base_data);
      CreateOptions co;
      co.size = size;
      co.version = o.version;
      co.cluster_size = o.cluster_size;
      co.extended_l2 = o.ext;
      co.backing_file = base;
      co.backing_format = "raw";
      require_ok(Image::create(top, co));
      GuestModel m(size);
      m.write(0, base_data);
      const std::vector<Window> windows = {{0, size}};
      {
        Image img = open_ro(top);
        CHECK(qtest::first_mismatch(img, m, 0, size) == -1);
        auto chain = img.chain_info();
        REQUIRE(chain.size() == 2);
        CHECK(chain[1].format == Format::kRaw);
      }
      {
        Image img = open_rw(top);
        std::mt19937_64 rng(seed);
        for (int i = 0; i < 80; ++i) {
          CAPTURE(i);
          uint64_t r = rng() % 100;
          uint64_t units = size / sub;
          uint64_t off, len;
          if (r < 50) {  // subcluster-aligned writes of whole subclusters
            off = (rng() % units) * sub;
            len = std::min<uint64_t>((1 + rng() % 5) * sub, size - off);
          } else {  // unaligned
            off = rng() % size;
            len = 1 + rng() % std::min<uint64_t>(3 * sub + 100, size - off);
          }
          CAPTURE(off);
          CAPTURE(len);
          if (r < 75) {
            Bytes d = qtest::random_bytes(len, rng());
            require_ok(img.write(off, d));
            m.write(off, d);
          } else if (r < 90) {
            require_ok(img.write_zeroes(off, len, (rng() & 1) ? Unmap::kYes : Unmap::kNo));
            m.zero(off, len);
          } else if (o.version >= 3) {
            require_ok(img.discard(off, len));  // v3: discarded clusters read as zeros, not as the base
            uint64_t a = (off + cs - 1) / cs * cs;
            uint64_t b = off + len == size ? size : (off + len) / cs * cs;
            if (a < b) m.zero(a, b - a);
          }
          if (i % 10 == 0) {
            uint64_t ro = rng() % size, rl = 1 + rng() % std::min<uint64_t>(4 * cs, size - ro);
            CHECK(qtest::first_mismatch(img, m, ro, rl) == -1);
          }
        }
        CHECK(qtest::first_mismatch(img, m, 0, size) == -1);
        require_ok(img.close());
      }
      {
        Image img = open_ro(top);
        CHECK(qtest::first_mismatch(img, m, 0, size) == -1);
        // Without the backing file, untouched ranges read as zeros.
        OpenOptions nob;
        nob.open_backing = false;
        auto r = Image::open(top, nob);
        REQUIRE(r.is_ok());
      }
      // The base was never written.
      CHECK(qtest::read_file(base) == base_data);
      qemu_check_clean(top);
      qemu_compare(top, m, dir.file("model-" + std::to_string(seed) + ".raw"));
    }
  }

  SUBCASE("error paths") {
    const std::string path = dir.file("err.qcow2");
    CreateOptions co;
    co.size = 1 << 20;
    require_ok(Image::create(path, co));
    Bytes buf(4096);
    {
      Image img = open_rw(path);
      CHECK(img.read(co.size - 100, buf).code() == ErrorCode::kInvalidArgument);
      CHECK(img.read(co.size + 4096, buf).code() == ErrorCode::kInvalidArgument);
      CHECK(img.read(~uint64_t(0) - 10, buf).code() == ErrorCode::kInvalidArgument);
      CHECK(img.write(co.size - 100, buf).code() == ErrorCode::kInvalidArgument);
      CHECK(img.write(~uint64_t(0) - 10, buf).code() == ErrorCode::kInvalidArgument);
      CHECK(img.write_zeroes(co.size - 100, 4096, Unmap::kNo).code() == ErrorCode::kInvalidArgument);
      CHECK(img.discard(co.size, 1).code() == ErrorCode::kInvalidArgument);
      CHECK(img.write(100, buf, Compress::kYes).code() == ErrorCode::kInvalidArgument);  // not cluster aligned
      CHECK(img.resize(co.size - 512).code() == ErrorCode::kInvalidArgument);           // shrinking needs Shrink::kYes
      // Reads and writes that end exactly at the end are fine.
      CHECK(img.write(co.size - 4096, buf).is_ok());
      CHECK(img.read(co.size - 4096, buf).is_ok());
      CHECK(img.read(co.size, std::span<uint8_t>()).is_ok());

      // A second writer is refused while we hold the image.
      OpenOptions w;
      w.writable = true;
      auto second = Image::open(path, w);
      REQUIRE_FALSE(second.is_ok());
      CHECK(second.status().code() == ErrorCode::kLocked);
      // So is a reader that wants to share (it would not tolerate our writes).
      auto reader = Image::open(path);
      REQUIRE_FALSE(reader.is_ok());
      CHECK(reader.status().code() == ErrorCode::kLocked);
      // force_share takes no lock.
      OpenOptions fs;
      fs.force_share = true;
      CHECK(Image::open(path, fs).is_ok());
      require_ok(img.close());
    }
    {
      Image ro = open_ro(path);
      CHECK(ro.write(0, buf).code() == ErrorCode::kReadOnly);
      CHECK(ro.write_zeroes(0, 4096, Unmap::kNo).code() == ErrorCode::kReadOnly);
      CHECK(ro.discard(0, 65536).code() == ErrorCode::kReadOnly);
      CHECK(ro.resize(2 << 20).code() == ErrorCode::kReadOnly);
      CHECK(ro.flush().is_ok());
      // Two readers coexist; a writer is refused while a reader holds the image.
      CHECK(Image::open(path).is_ok());
      OpenOptions w;
      w.writable = true;
      auto writer = Image::open(path, w);
      REQUIRE_FALSE(writer.is_ok());
      CHECK(writer.status().code() == ErrorCode::kLocked);
    }
    auto missing = Image::open(dir.file("does-not-exist.qcow2"));
    REQUIRE_FALSE(missing.is_ok());
    CHECK(missing.status().code() == ErrorCode::kNotFound);
    // A missing backing file fails the open of the overlay.
    CreateOptions bo;
    bo.size = 1 << 20;
    bo.backing_file = dir.file("gone.raw");
    bo.backing_format = "raw";
    require_ok(Image::create(dir.file("orphan.qcow2"), bo));
    auto orphan = Image::open(dir.file("orphan.qcow2"));
    REQUIRE_FALSE(orphan.is_ok());
    CHECK(orphan.status().code() == ErrorCode::kNotFound);
    // Invalid creation options.
    CreateOptions bad;
    bad.size = 1 << 20;
    bad.cluster_size = 4096;
    bad.extended_l2 = true;
    CHECK(Image::create(dir.file("bad.qcow2"), bad).code() == ErrorCode::kInvalidArgument);
    bad = CreateOptions{};
    bad.version = 2;
    bad.refcount_bits = 64;
    CHECK(Image::create(dir.file("bad.qcow2"), bad).code() == ErrorCode::kInvalidArgument);
    bad = CreateOptions{};
    bad.cluster_size = 1000;
    CHECK(Image::create(dir.file("bad.qcow2"), bad).code() == ErrorCode::kInvalidArgument);
  }
}

}  // TEST_SUITE

// Completing an empty subcluster of an allocated cluster zeroes its host bytes with
// File::zero_range instead of writing them: a 4 KiB write moves 4 KiB of data.
TEST_CASE("image: in-place subcluster writes zero their fill instead of writing it") {
  qtest::TempDir dir;
  const std::string path = dir.file("el2-2m.qcow2");
  CreateOptions c;
  c.size = 64 << 20;
  c.cluster_size = 2 << 20;
  c.extended_l2 = true;
  require_ok(Image::create(path, c));
  auto counters = std::make_shared<IoCounters>();
  OpenOptions o;
  o.wrap_file = [counters](std::unique_ptr<File> f) -> std::unique_ptr<File> {
    return std::make_unique<CountingFile>(std::move(f), counters);
  };
  Bytes want(2 << 20, 0);
  {
    Image img = open_rw(path, o);
    const Bytes a = qtest::random_bytes(4096, 1), b = qtest::random_bytes(4096, 2), e = qtest::random_bytes(100, 3);
    require_ok(img.write(0, a));  // allocates the cluster (first subcluster)
    std::copy(a.begin(), a.end(), want.begin());
    const uint64_t before = counters->bytes_written;
    const uint64_t zeroings = counters->fallocates;
    // Empty subcluster 16 of the allocated cluster: 8 KiB zero head, 52 KiB zero tail.
    require_ok(img.write((1 << 20) + 8192, b));
    std::copy(b.begin(), b.end(), want.begin() + (1 << 20) + 8192);
    // 100 unaligned bytes in empty subcluster 19.
    require_ok(img.write((1 << 20) + (200 << 10) + 10, e));
    std::copy(e.begin(), e.end(), want.begin() + (1 << 20) + (200 << 10) + 10);
    CHECK(counters->bytes_written - before == 4096 + 100);  // the data only (L2 updates wait for close)
    CHECK(counters->fallocates - zeroings == 4);            // head and tail of each subcluster
    require_ok(img.close());
  }
  Image img = open_ro(path);
  Bytes got(2 << 20);
  require_ok(img.read(0, got));
  CHECK(got == want);
  CHECK(qtest::qemu_check(path).rc == 0);
}
