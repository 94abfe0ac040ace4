// Tests for the File layer: PosixFile (I/O, holes, O_DIRECT, QEMU-compatible
// locks), MemoryFile, CountingFile, FaultFile and RecordingFile + replay().

#include <doctest/doctest.h>
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "io/extent_batch.hpp"
#include "io/fault_file.hpp"
#include "qcow/file.hpp"
#include "support/test_util.hpp"

extern char** environ;

namespace {

using namespace qcow;

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/qimg-io-XXXXXX";
    char* p = mkdtemp(tmpl);
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return path + "/" + name; }
};

std::vector<uint8_t> pattern(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

std::span<const uint8_t> bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

std::string read_all(File& f) {
  auto sz = f.size();
  REQUIRE(sz.is_ok());
  std::string out(*sz, '\0');
  auto n = f.read_at(0, {reinterpret_cast<uint8_t*>(out.data()), out.size()});
  REQUIRE(n.is_ok());
  REQUIRE(*n == out.size());
  return out;
}

// Runs a shell command with output discarded; returns its exit status.
int run_quiet(const std::string& cmd) {
  int rc = std::system((cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::unique_ptr<File> must_open(const std::string& path, FileMode mode, LockMode lock = LockMode::kNone,
                                CacheMode cache = CacheMode::kWriteback) {
  auto r = open_posix_file(path, mode, lock, cache);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

}  // namespace

TEST_SUITE("qcow::io") {

TEST_CASE("posix file: read, write, EOF, truncate, errors") {
  TempDir dir;
  const std::string path = dir.file("a.img");
  auto f = must_open(path, FileMode::kCreate);
  CHECK(f->path() == path);
  CHECK(f->size().value() == 0);

  SUBCASE("write then read back, short read only at EOF") {
    auto data = pattern(10000, 1);
    REQUIRE(f->write_at(100, data).is_ok());
    CHECK(f->size().value() == 10100);
    std::vector<uint8_t> buf(20000, 0xAA);
    auto n = f->read_at(100, buf);
    REQUIRE(n.is_ok());
    CHECK(*n == 10000);
    CHECK(std::equal(data.begin(), data.end(), buf.begin()));
    n = f->read_at(0, std::span<uint8_t>(buf.data(), 100));
    REQUIRE(n.is_ok());
    CHECK(*n == 100);
    CHECK(std::all_of(buf.begin(), buf.begin() + 100, [](uint8_t b) { return b == 0; }));
    n = f->read_at(10100, buf);  // at EOF
    REQUIRE(n.is_ok());
    CHECK(*n == 0);
    n = f->read_at(1 << 30, buf);  // far past EOF
    REQUIRE(n.is_ok());
    CHECK(*n == 0);
  }

  SUBCASE("truncate shrinks and grows with zeros") {
    REQUIRE(f->write_at(0, pattern(8192, 2)).is_ok());
    REQUIRE(f->truncate(4096).is_ok());
    CHECK(f->size().value() == 4096);
    REQUIRE(f->truncate(16384).is_ok());
    CHECK(f->size().value() == 16384);
    std::vector<uint8_t> buf(8192);
    REQUIRE(f->read_at(4096, buf).value() == 8192);
    CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
    CHECK(f->flush().is_ok());
  }

  SUBCASE("kCreate truncates an existing file; kReadWrite keeps it") {
    REQUIRE(f->write_at(0, pattern(4096, 3)).is_ok());
    f.reset();
    auto g = must_open(path, FileMode::kReadWrite);
    CHECK(g->size().value() == 4096);
    g.reset();
    g = must_open(path, FileMode::kCreate);
    CHECK(g->size().value() == 0);
  }

  SUBCASE("missing file is kNotFound with path and strerror") {
    auto r = open_posix_file(dir.file("missing.img"), FileMode::kReadOnly);
    REQUIRE(!r.is_ok());
    CHECK(r.status().code() == ErrorCode::kNotFound);
    CHECK(r.status().saved_errno() == ENOENT);
    CHECK(r.status().message().find(dir.file("missing.img")) != std::string::npos);
    CHECK(r.status().message().find("No such file") != std::string::npos);
  }

  SUBCASE("read-only file refuses writes") {
    REQUIRE(f->write_at(0, pattern(512, 4)).is_ok());
    auto ro = must_open(path, FileMode::kReadOnly);
    Status st = ro->write_at(0, pattern(512, 5));
    CHECK(st.code() == ErrorCode::kReadOnly);
    CHECK(ro->truncate(0).code() == ErrorCode::kReadOnly);
    CHECK(ro->flush().is_ok());
    std::vector<uint8_t> buf(512);
    CHECK(ro->read_at(0, buf).value() == 512);
  }

  SUBCASE("writethrough mode writes and reads") {
    auto wt = must_open(dir.file("wt.img"), FileMode::kCreate, LockMode::kNone, CacheMode::kWritethrough);
    auto data = pattern(3000, 6);
    REQUIRE(wt->write_at(7, data).is_ok());
    std::vector<uint8_t> buf(3000);
    REQUIRE(wt->read_at(7, buf).value() == 3000);
    CHECK(buf == data);
  }
}

// probe_data_for_report (FIEMAP batches on a read-only file) agrees with probe_data
// everywhere: the same answer, and a run never longer. 600 data extents (more than
// one batch of 256), walked forward run by run and then probed at scattered offsets,
// also inside a preallocated (unwritten) extent, which is left to lseek.
TEST_CASE("posix file: probe_data_for_report agrees with probe_data") {
  TempDir dir;
  const std::string path = dir.file("extents.img");
  constexpr uint64_t kBlock = 4096, kExtents = 600;
  {
    auto w = must_open(path, FileMode::kCreate);
    REQUIRE(w->truncate(2 * kExtents * kBlock + kBlock * 64).is_ok());
    auto data = pattern(kBlock, 3);
    for (uint64_t i = 0; i < kExtents; ++i) REQUIRE(w->write_at(2 * i * kBlock + (i % 3 == 0 ? kBlock : 0), data).is_ok());
    REQUIRE(w->allocate(2 * kExtents * kBlock + 16 * kBlock, 8 * kBlock).is_ok());
    REQUIRE(w->flush().is_ok());
  }
  auto f = must_open(path, FileMode::kReadOnly);
  const uint64_t size = f->size().value();
  auto agree = [&](uint64_t off) {
    uint64_t e1 = 0, e2 = 0;
    auto a = f->probe_data_for_report(off, &e1);
    auto b = f->probe_data(off, &e2);
    REQUIRE(a.is_ok());
    REQUIRE(b.is_ok());
    CHECK_MESSAGE(*a == *b, "offset " << off);
    CHECK_MESSAGE(e1 > off, "offset " << off);
    CHECK_MESSAGE(std::min(e1, size) <= std::min(e2, size), "offset " << off);
    return std::min(std::max(e1, off + 1), size);
  };
  uint64_t runs = 0;
  for (uint64_t off = 0; off < size; ++runs) off = agree(off);
  CHECK(runs > kExtents);
  for (uint64_t off = 7; off < size + 3 * kBlock; off += 5 * kBlock + 513) agree(off);
  agree(size);

  // The batches themselves: where FIEMAP works they answer (and stay on), exactly
  // where they say so; where it does not, they switch off and never answer.
  int fd = ::open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  struct fiemap probe {};
  probe.fm_length = FIEMAP_MAX_OFFSET;  // fm_extent_count 0: only count the extents
  const bool fiemap = ::ioctl(fd, FS_IOC_FIEMAP, &probe) == 0;
  qcow::ExtentBatch batch;
  uint64_t answered = 0;
  for (uint64_t off = 0; off < size;) {
    uint64_t end = 0;
    const bool data = f->probe_data(off, &end).value();
    std::optional<qcow::ExtentBatch::Answer> a = batch.lookup(fd, off);
    if (a) {
      ++answered;
      CHECK_MESSAGE(a->data == data, "offset " << off);
      if (a->exact) CHECK_MESSAGE(a->run_end == end, "offset " << off);
      else CHECK_MESSAGE((a->run_end > off && a->run_end <= end), "offset " << off);
    }
    off = std::min(end, size);
  }
  ::close(fd);
  if (fiemap) {
    CHECK(batch.enabled());
    CHECK(answered > kExtents);  // the preallocated extent alone is left to lseek
  } else {
    CHECK(!batch.enabled());
    CHECK(answered == 0);
  }
}

TEST_CASE("posix file: holes, probe_data, allocated_bytes, allocate, punch_hole") {
  TempDir dir;
  const std::string path = dir.file("sparse.img");
  auto f = must_open(path, FileMode::kCreate);
  constexpr uint64_t kMiB = 1024 * 1024;
  REQUIRE(f->truncate(4 * kMiB).is_ok());
  auto data = pattern(64 * 1024, 7);
  REQUIRE(f->write_at(kMiB, data).is_ok());
  REQUIRE(f->flush().is_ok());

  auto alloc = f->allocated_bytes();
  REQUIRE(alloc.is_ok());
  CHECK(*alloc >= 64 * 1024);
  CHECK(*alloc < 4 * kMiB);

  uint64_t end = 0;
  auto r = f->probe_data(0, &end);
  REQUIRE(r.is_ok());
  // A file system without holes (SEEK_HOLE) fails here: CI's has them, and so must a test machine's /tmp.
  REQUIRE_MESSAGE(!*r, "the file system of " << dir.path << " reports no holes");
  CHECK(end == kMiB);
  r = f->probe_data(kMiB, &end);
  REQUIRE(r.is_ok());
  CHECK(*r);
  CHECK(end == kMiB + 64 * 1024);
  r = f->probe_data(kMiB + 4096, &end);
  REQUIRE(r.is_ok());
  CHECK(*r);
  CHECK(end == kMiB + 64 * 1024);
  r = f->probe_data(kMiB + 64 * 1024, &end);  // trailing hole up to EOF (ENXIO path)
  REQUIRE(r.is_ok());
  CHECK(!*r);
  CHECK(end == 4 * kMiB);
  r = f->probe_data(4 * kMiB, &end);  // past EOF: hole
  REQUIRE(r.is_ok());
  CHECK(!*r);
  CHECK(end >= 4 * kMiB);

  SUBCASE("punch_hole frees and zeroes") {
    REQUIRE(f->punch_hole(kMiB, 64 * 1024).is_ok());
    std::vector<uint8_t> buf(64 * 1024, 1);
    REQUIRE(f->read_at(kMiB, buf).value() == buf.size());
    CHECK(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0; }));
    CHECK(f->allocated_bytes().value() < *alloc);
    CHECK(f->size().value() == 4 * kMiB);  // KEEP_SIZE
    r = f->probe_data(0, &end);
    REQUIRE(r.is_ok());
    CHECK(!*r);
    CHECK(end == 4 * kMiB);
  }

  SUBCASE("allocate reserves space, keeps data, extends the file") {
    REQUIRE(f->allocate(0, 2 * kMiB).is_ok());
    CHECK(f->allocated_bytes().value() >= 2 * kMiB);
    std::vector<uint8_t> buf(data.size());
    REQUIRE(f->read_at(kMiB, buf).value() == buf.size());
    CHECK(buf == data);
    REQUIRE(f->allocate(4 * kMiB, kMiB).is_ok());
    CHECK(f->size().value() == 5 * kMiB);
  }
}

TEST_CASE("posix file: O_DIRECT with unaligned offsets, lengths and buffers") {
  TempDir dir;
  const std::string path = dir.file("direct.img");
  auto r = open_posix_file(path, FileMode::kCreate, LockMode::kNone, CacheMode::kNone);
  // A file system without O_DIRECT fails here: CI's has it, and so must a test machine's /tmp.
  REQUIRE_MESSAGE(r.is_ok(), r.status().message());
  auto f = std::move(r).value();
  std::vector<uint8_t> model;
  auto write = [&](uint64_t off, const std::vector<uint8_t>& d) {
    Status st = f->write_at(off, d);
    INFO(st.message());
    REQUIRE(st.is_ok());
    if (model.size() < off + d.size()) model.resize(off + d.size(), 0);
    std::copy(d.begin(), d.end(), model.begin() + static_cast<ptrdiff_t>(off));
    auto sz = f->size();
    REQUIRE(sz.is_ok());
    CHECK(*sz == model.size());  // padding must not leak into the file size
  };
  // Some file systems accept the O_DIRECT open but fail the I/O: that fails here too.
  {
    Status st = f->write_at(0, pattern(4096, 1));
    REQUIRE_MESSAGE(st.is_ok(), "O_DIRECT write: " << st.message());
    model = pattern(4096, 1);
  }
  write(1000, pattern(5000, 2));           // unaligned both ends, extends the file
  write(8192, pattern(8192, 3));           // aligned, extends
  write(8192 + 100, pattern(10, 4));       // inside one block
  write(20000, pattern(3 * 1024 * 1024 + 17, 5));  // spans several bounce windows
  write(4095, pattern(2, 6));              // straddles a block boundary
  write(model.size() - 3, pattern(1, 7));  // inside the last, partial block

  // Whole file through an aligned buffer, then unaligned reads through an
  // unaligned buffer, including a short read at EOF.
  CHECK(read_all(*f) == std::string(model.begin(), model.end()));
  std::mt19937 rng(9);
  std::vector<uint8_t> storage(70000);
  for (int i = 0; i < 50; i++) {
    uint64_t off = rng() % (model.size() + 100);
    size_t len = 1 + rng() % 65000;
    std::span<uint8_t> buf(storage.data() + 1 + rng() % 1000, len);
    auto n = f->read_at(off, buf);
    REQUIRE(n.is_ok());
    size_t expect = off >= model.size() ? 0 : std::min<size_t>(len, model.size() - off);
    REQUIRE(*n == expect);
    CHECK(std::equal(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(expect),
                     model.begin() + static_cast<ptrdiff_t>(std::min<uint64_t>(off, model.size()))));
  }
  REQUIRE(f->flush().is_ok());
  f.reset();

  // A buffered reopen sees the same bytes; a direct reopen can write into an
  // existing file whose size is unaligned.
  auto g = must_open(path, FileMode::kReadWrite);
  CHECK(read_all(*g) == std::string(model.begin(), model.end()));
  g.reset();
  f = must_open(path, FileMode::kReadWrite, LockMode::kNone, CacheMode::kNone);
  write(model.size() - 5, pattern(3, 8));
  write(12345, pattern(777, 10));
  CHECK(read_all(*f) == std::string(model.begin(), model.end()));
}

TEST_CASE("posix file: QEMU-compatible locking") {
  TempDir dir;
  const std::string path = dir.file("locked.img");
  {
    auto f = must_open(path, FileMode::kCreate);
    REQUIRE(f->truncate(1024 * 1024).is_ok());
  }

  SUBCASE("exclusive excludes exclusive and shared") {
    auto a = must_open(path, FileMode::kReadWrite, LockMode::kExclusive);
    auto b = open_posix_file(path, FileMode::kReadWrite, LockMode::kExclusive);
    REQUIRE(!b.is_ok());
    CHECK(b.status().code() == ErrorCode::kLocked);
    CHECK(b.status().message().find("failed to get \"write\" lock") != std::string::npos);
    CHECK(b.status().message().find(path) != std::string::npos);
    auto c = open_posix_file(path, FileMode::kReadOnly, LockMode::kShared);
    REQUIRE(!c.is_ok());
    CHECK(c.status().code() == ErrorCode::kLocked);
    // -U: no lock taken, no check made.
    auto d = open_posix_file(path, FileMode::kReadOnly, LockMode::kNone);
    CHECK(d.is_ok());
    // Closing the holder releases its locks.
    a.reset();
    auto e = open_posix_file(path, FileMode::kReadWrite, LockMode::kExclusive);
    CHECK(e.is_ok());
  }

  SUBCASE("shared and shared coexist; shared excludes exclusive") {
    auto a = must_open(path, FileMode::kReadOnly, LockMode::kShared);
    auto b = open_posix_file(path, FileMode::kReadOnly, LockMode::kShared);
    CHECK(b.is_ok());
    auto c = open_posix_file(path, FileMode::kReadWrite, LockMode::kExclusive);
    REQUIRE(!c.is_ok());
    CHECK(c.status().code() == ErrorCode::kLocked);
    CHECK(open_posix_file(path, FileMode::kReadWrite, LockMode::kNone).is_ok());
  }

  SUBCASE("kCreate on a locked image fails without truncating it") {
    auto a = must_open(path, FileMode::kReadWrite, LockMode::kExclusive);
    auto b = open_posix_file(path, FileMode::kCreate, LockMode::kExclusive);
    REQUIRE(!b.is_ok());
    CHECK(b.status().code() == ErrorCode::kLocked);
    CHECK(a->size().value() == 1024 * 1024);
  }

  SUBCASE("qemu-img sees our locks") {
    qtest::require_tool("qemu-img");
    qtest::require_tool("qemu-io");
    // A qcow2 image: QEMU's format layer is what refuses to share write and
    // resize on the file (with -f raw, QEMU readers share everything).
    const std::string qpath = dir.file("q.qcow2");
    REQUIRE(run_quiet("qemu-img create -f qcow2 '" + qpath + "' 1M") == 0);
    const std::string info = "qemu-img info -f qcow2 '" + qpath + "'";
    CHECK(run_quiet(info) == 0);
    {
      auto a = must_open(qpath, FileMode::kReadWrite, LockMode::kExclusive);
      CHECK(run_quiet(info) != 0);          // a reader wants us not to write
      CHECK(run_quiet(info + " -U") == 0);  // unless it takes no lock
    }
    {
      auto a = must_open(qpath, FileMode::kReadOnly, LockMode::kShared);
      CHECK(run_quiet(info) == 0);  // readers share
      CHECK(run_quiet("qemu-io -f qcow2 -c 'write 0 512' '" + qpath + "'") != 0);
      CHECK(run_quiet("qemu-io -r -f qcow2 -c 'read 0 512' '" + qpath + "'") == 0);
    }
    CHECK(run_quiet(info) == 0);
  }

  SUBCASE("we see qemu-io's locks") {
    qtest::require_tool("qemu-img");
    qtest::require_tool("qemu-io");
    const std::string qpath = dir.file("q.qcow2");
    REQUIRE(run_quiet("qemu-img create -f qcow2 '" + qpath + "' 1M") == 0);
    // qemu-io opens read-write and holds the image while it sleeps.
    std::string p = qpath;
    std::vector<std::string> args = {"qemu-io", "-f", "qcow2", "-c", "sleep 10000", p};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    pid_t pid = 0;
    int rc = posix_spawnp(&pid, "qemu-io", &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    REQUIRE(rc == 0);
    // Wait for qemu-io's write lock (byte 101) with a bare F_OFD_GETLK:
    // polling with our own open would take locks that make qemu-io fail.
    bool qemu_holds = false;
    int probe_fd = ::open(qpath.c_str(), O_RDONLY | O_CLOEXEC);
    REQUIRE(probe_fd >= 0);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(8);
    while (!qemu_holds && std::chrono::steady_clock::now() < deadline) {
      struct flock fl = {};
      fl.l_type = F_WRLCK;
      fl.l_whence = SEEK_SET;
      fl.l_start = 101;
      fl.l_len = 1;
      REQUIRE(fcntl(probe_fd, F_OFD_GETLK, &fl) == 0);
      if (fl.l_type != F_UNLCK) qemu_holds = true;
      else std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    ::close(probe_fd);
    bool saw_lock = false;
    if (qemu_holds) {
      auto r = open_posix_file(qpath, FileMode::kReadOnly, LockMode::kShared);
      CHECK(r.status().code() == ErrorCode::kLocked);
      saw_lock = r.status().code() == ErrorCode::kLocked;
      auto w = open_posix_file(qpath, FileMode::kReadWrite, LockMode::kExclusive);
      CHECK(w.status().code() == ErrorCode::kLocked);
      CHECK(w.status().message().find("is another process using the image?") != std::string::npos);
      CHECK(open_posix_file(qpath, FileMode::kReadOnly, LockMode::kNone).is_ok());
    }
    kill(pid, SIGTERM);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    CHECK(qemu_holds);
    CHECK(saw_lock);
  }
}

TEST_CASE("memory file") {
  auto f = make_memory_file("mem", "hello");
  CHECK(f->path() == "mem");
  CHECK(f->size().value() == 5);
  REQUIRE(f->write_at(8, bytes("xy")).is_ok());
  CHECK(read_all(*f) == std::string("hello\0\0\0xy", 10));
  std::vector<uint8_t> buf(16);
  CHECK(f->read_at(8, buf).value() == 2);
  CHECK(f->read_at(100, buf).value() == 0);
  REQUIRE(f->punch_hole(1, 2).is_ok());
  CHECK(read_all(*f).substr(0, 5) == std::string("h\0\0lo", 5));
  REQUIRE(f->truncate(3).is_ok());
  CHECK(f->size().value() == 3);
  REQUIRE(f->allocate(0, 100).is_ok());
  CHECK(f->size().value() == 100);
  CHECK(f->allocated_bytes().value() == 100);
  uint64_t end = 0;
  CHECK(f->probe_data(10, &end).value());
  CHECK(end == 100);
  CHECK(!f->probe_data(100, &end).value());
  CHECK(f->flush().is_ok());
  // An absurd offset is an error, not an allocation attempt.
  CHECK(f->write_at(uint64_t{1} << 62, bytes("z")).code() == ErrorCode::kNoSpace);
}

TEST_CASE("counting file") {
  auto counters = std::make_shared<IoCounters>();
  CountingFile f(make_memory_file("mem"), counters);
  REQUIRE(f.write_at(0, bytes("abcdef")).is_ok());
  REQUIRE(f.write_at(10, bytes("gh")).is_ok());
  std::vector<uint8_t> buf(100);
  CHECK(f.read_at(0, buf).value() == 12);
  REQUIRE(f.flush().is_ok());
  REQUIRE(f.allocate(0, 4096).is_ok());
  CHECK(counters->writes == 2);
  CHECK(counters->bytes_written == 8);
  CHECK(counters->reads == 1);
  CHECK(counters->bytes_read == 12);
  CHECK(counters->flushes == 1);
  CHECK(counters->fallocates == 1);
  CHECK(f.size().value() == 4096);
}

TEST_CASE("fault file") {
  SUBCASE("fails only the Nth write") {
    auto plan = FaultPlan::fail_write(2);
    FaultFile f(make_memory_file("mem"), plan);
    CHECK(f.write_at(0, bytes("a")).is_ok());
    CHECK(f.write_at(1, bytes("b")).is_ok());
    Status st = f.write_at(2, bytes("c"));
    CHECK(st.code() == ErrorCode::kIo);
    CHECK(st.saved_errno() == EIO);
    CHECK(st.message().find("mem") != std::string::npos);
    CHECK(f.write_at(3, bytes("d")).is_ok());
    CHECK(read_all(f) == std::string("ab\0d", 4));  // the failed write left nothing
    CHECK(plan->writes == 4);
    CHECK(plan->injected == 1);
  }

  SUBCASE("sticky ENOSPC fails every write from N on") {
    auto plan = FaultPlan::fail_write(1, ENOSPC, true);
    FaultFile f(make_memory_file("mem"), plan);
    CHECK(f.write_at(0, bytes("a")).is_ok());
    for (int i = 0; i < 3; i++) {
      Status st = f.write_at(1, bytes("b"));
      CHECK(st.code() == ErrorCode::kNoSpace);
      CHECK(st.saved_errno() == ENOSPC);
    }
    CHECK(plan->injected == 3);
    CHECK(f.flush().is_ok());
  }

  SUBCASE("a short write lands its first half in whole sectors, then fails") {
    auto plan = std::make_shared<FaultPlan>();
    plan->write = {0, false, EIO, true};
    FaultFile f(make_memory_file("mem", std::string(4096, '.')), plan);
    Status st = f.write_at(512, std::vector<uint8_t>(2048, 'x'));
    CHECK(st.code() == ErrorCode::kIo);
    const std::string after = read_all(f);
    CHECK(after.substr(512, 1024) == std::string(1024, 'x'));  // [512, 1536): half, up to a sector boundary
    CHECK(after.substr(1536) == std::string(4096 - 1536, '.'));
    CHECK(f.write_at(0, bytes("ok")).is_ok());  // not sticky
  }

  SUBCASE("the grow rule fails whatever would extend the file, with ENOSPC") {
    auto plan = FaultPlan::fail_grow(0);  // the disk is full from the first growth on
    FaultFile f(make_memory_file("mem", std::string(100, '.')), plan);
    CHECK(f.write_at(10, bytes("inside")).is_ok());
    CHECK(f.write_at(98, bytes("over")).code() == ErrorCode::kNoSpace);
    CHECK(f.truncate(200).code() == ErrorCode::kNoSpace);
    CHECK(f.allocate(50, 100).code() == ErrorCode::kNoSpace);
    CHECK(f.zero_range(90, 20).code() == ErrorCode::kNoSpace);
    CHECK(f.truncate(50).is_ok());  // shrinking needs no space
    CHECK(f.size().value() == 50);
    CHECK(plan->grows == 4);
    CHECK(plan->truncates == 2);
  }

  SUBCASE("flush and allocate faults; plan shared across files") {
    auto plan = std::make_shared<FaultPlan>();
    plan->flush = {1, false, EIO};
    plan->allocate = {0, false, ENOSPC};
    FaultFile a(make_memory_file("a"), plan);
    FaultFile b(make_memory_file("b"), plan);
    CHECK(a.flush().is_ok());
    Status st = b.flush();  // the plan's 2nd flush, on the other file
    CHECK(st.code() == ErrorCode::kIo);
    CHECK(st.message().find("b") == 0);
    CHECK(a.flush().is_ok());
    CHECK(a.allocate(0, 10).code() == ErrorCode::kNoSpace);
    CHECK(a.size().value() == 0);
    CHECK(a.allocate(0, 10).is_ok());
    CHECK(a.size().value() == 10);
  }
}

TEST_CASE("recording and replay") {
  const std::string base = "0123456789";
  auto log = std::make_shared<WriteLog>();
  RecordingFile f(make_memory_file("img", base), log);
  REQUIRE(f.write_at(0, bytes("AA")).is_ok());   // 0
  REQUIRE(f.flush().is_ok());                    // 1
  REQUIRE(f.write_at(4, bytes("BB")).is_ok());   // 2
  REQUIRE(f.truncate(12).is_ok());               // 3
  REQUIRE(f.flush().is_ok());                    // 4
  REQUIRE(f.write_at(8, bytes("CC")).is_ok());   // 5
  REQUIRE(f.punch_hole(0, 1).is_ok());           // 6
  REQUIRE(f.allocate(12, 4).is_ok());            // 7
  std::vector<uint8_t> buf(4);
  CHECK(f.read_at(0, buf).value() == 4);  // reads are not logged
  REQUIRE(log->size() == 8);
  CHECK(log->flush_count() == 2);
  CHECK(log->after_flush(0) == 2);
  CHECK(log->after_flush(1) == 5);
  CHECK(log->after_flush(2) == 8);
  CHECK(log->ops[0].kind == LoggedOp::Kind::kWrite);
  CHECK(log->ops[0].data == std::vector<uint8_t>{'A', 'A'});
  CHECK(log->ops[3].kind == LoggedOp::Kind::kTruncate);
  CHECK(log->ops[3].offset == 12);

  const std::string full = read_all(f);
  CHECK(full == std::string("\0A23BB67CC\0\0\0\0\0\0", 16));

  auto replayed = [&](size_t prefix, PowerCut mode) {
    auto target = make_memory_file("copy", base);
    Status st = replay(*log, prefix, *target, mode);
    REQUIRE(st.is_ok());
    return read_all(*target);
  };

  SUBCASE("process kill applies the prefix exactly") {
    CHECK(replayed(0, kProcessKill) == base);
    CHECK(replayed(1, kProcessKill) == "AA23456789");
    CHECK(replayed(3, kProcessKill) == "AA23BB6789");
    CHECK(replayed(4, kProcessKill) == std::string("AA23BB6789\0\0", 12));
    CHECK(replayed(log->size(), kProcessKill) == full);
    CHECK(replayed(1000, kProcessKill) == full);  // clamped
  }

  SUBCASE("power cut drops the unflushed tail") {
    CHECK(replayed(1, kPowerCut) == base);
    CHECK(replayed(2, kPowerCut) == "AA23456789");
    CHECK(replayed(4, kPowerCut) == "AA23456789");
    CHECK(replayed(5, kPowerCut) == std::string("AA23BB6789\0\0", 12));
    CHECK(replayed(8, kPowerCut) == std::string("AA23BB6789\0\0", 12));
  }

  SUBCASE("reordered power cut applies a subset of the tail, deterministically") {
    const std::string durable("AA23BB6789\0\0", 12);
    bool saw_none = false, saw_cc = false, saw_all = false;
    for (uint64_t seed = 0; seed < 64; seed++) {
      std::string s = replayed(8, kPowerCutReorder(seed));
      CHECK(s == replayed(8, kPowerCutReorder(seed)));
      // Every outcome starts from the durable state plus some of ops 5..7.
      CHECK(s.substr(1, 7) == durable.substr(1, 7));
      CHECK((s[0] == 'A' || s[0] == '\0'));
      CHECK((s.substr(8, 2) == "CC" || s.substr(8, 2) == "89"));
      CHECK((s.size() == 12 || s.size() == 16));
      saw_none |= s == durable;
      saw_cc |= s.substr(8, 2) == "CC";
      saw_all |= s == full;
    }
    CHECK(saw_none);
    CHECK(saw_cc);
    CHECK(saw_all);
    CHECK(replayed(4, kPowerCutReorder(1)).substr(0, 2) == "AA");  // op 0 is before a flush
  }

  SUBCASE("torn power cut: each sector of an unflushed write old or new") {
    auto log3 = std::make_shared<WriteLog>();
    const std::string old(2048, 'o');
    RecordingFile r(make_memory_file("img", old), log3);
    REQUIRE(r.write_at(0, std::vector<uint8_t>(2048, 'N')).is_ok());
    std::set<std::string> seen;
    for (uint64_t seed = 0; seed < 200; ++seed) {
      auto target = make_memory_file("t", old);
      REQUIRE(replay(*log3, 1, *target, kPowerCutTorn(seed)).is_ok());
      const std::string s3 = read_all(*target);
      for (size_t sector = 0; sector < 4; ++sector) {
        const std::string part = s3.substr(sector * 512, 512);
        CHECK((part == std::string(512, 'o') || part == std::string(512, 'N')));
      }
      seen.insert(s3);
    }
    CHECK(seen.size() == 16);  // every combination of the four sectors turns up
  }

  SUBCASE("replay onto a posix file") {
    TempDir dir;
    auto target = must_open(dir.file("replay.img"), FileMode::kCreate);
    REQUIRE(target->write_at(0, bytes(base)).is_ok());
    REQUIRE(replay(*log, log->size(), *target, kProcessKill).is_ok());
    CHECK(read_all(*target) == full);
  }

  SUBCASE("a failed write is still logged") {
    auto plan = FaultPlan::fail_write(0);
    auto log2 = std::make_shared<WriteLog>();
    RecordingFile r(std::make_unique<FaultFile>(make_memory_file("img"), plan), log2);
    CHECK(!r.write_at(0, bytes("x")).is_ok());
    CHECK(log2->size() == 1);
  }
}

}  // TEST_SUITE

TEST_CASE("zero_range: posix (fallocate), default (writes zeros), decorators") {
  TempDir dir;
  constexpr uint64_t kKiB = 1024;
  auto f = must_open(dir.file("z.img"), FileMode::kCreate);
  auto data = pattern(256 * kKiB, 3);
  REQUIRE(f->write_at(0, data).is_ok());
  REQUIRE(f->zero_range(64 * kKiB, 100 * kKiB + 5).is_ok());  // unaligned end
  REQUIRE(f->zero_range(250 * kKiB, 16 * kKiB).is_ok());      // past the end: extends the file
  CHECK(f->size().value() == 266 * kKiB);
  std::vector<uint8_t> back(266 * kKiB);
  REQUIRE(f->read_at(0, back).value() == back.size());
  for (uint64_t i = 0; i < back.size(); ++i) {
    const bool zero = (i >= 64 * kKiB && i < 164 * kKiB + 5) || i >= 250 * kKiB;
    if (back[i] != (zero ? 0 : data[i])) {
      FAIL_CHECK("byte " << i << " is " << int(back[i]));
      break;
    }
  }
  CHECK(f->zero_range(0, 0).is_ok());

  // The default implementation (memory file) and the decorators: counting counts an
  // fallocate and no written bytes; recording logs writes of zeros that replay.
  auto counters = std::make_shared<IoCounters>();
  auto log = std::make_shared<WriteLog>();
  CountingFile counting(std::make_unique<RecordingFile>(make_memory_file("mem", "abcdefghij"), log), counters);
  REQUIRE(counting.zero_range(2, 3).is_ok());
  CHECK(counters->fallocates == 1);
  CHECK(counters->bytes_written == 0);
  REQUIRE(log->size() == 1);
  CHECK(log->ops[0].kind == LoggedOp::Kind::kWrite);
  CHECK(log->ops[0].data == std::vector<uint8_t>(3, 0));
  CHECK(read_all(counting) == std::string("ab\0\0\0fghij", 10));
  auto replayed = make_memory_file("r", "abcdefghij");
  REQUIRE(replay(*log, log->size(), *replayed, PowerCut{}).is_ok());
  CHECK(read_all(*replayed) == std::string("ab\0\0\0fghij", 10));

  // A fault plan fails zero_range like the fallocate it is.
  FaultFile faulty(make_memory_file("f", "abcdefghij"), FaultPlan::fail_allocate(0));
  CHECK_FALSE(faulty.zero_range(0, 4).is_ok());
  CHECK(faulty.plan().allocates == 1);
  CHECK(faulty.plan().writes == 0);
  CHECK(read_all(faulty) == "abcdefghij");
}
