// Crash consistency by fault injection (io/fault_file.hpp).
//
// Each workload runs once on a fresh image whose file is wrapped in a RecordingFile.
// The recorded op log is then replayed onto copies of the image as it was before the
// workload: every prefix (the process died after that many ops), every flush marker
// (power cut: unflushed ops lost) and seeded reorderings of the unflushed tail (power
// cut: any subset of them landed). Each replayed file must open, every byte acknowledged
// by the last completed Image::flush() must read back (bytes touched after it may show
// any state from then on), and `qemu-img check` must find no corruption (leaks are fine).
// Finally an EIO injected at every write of one workload must surface as an error, and
// the file left behind must open, keep its acknowledged data and pass qemu-img check.

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "io/fault_file.hpp"
#include "qcow/check.hpp"
#include "qcow/file.hpp"
#include "qcow/image.hpp"
#include "support/guest_model.hpp"
#include "support/test_util.hpp"

namespace {

using namespace qcow;
using qtest::Bytes;
using qtest::GuestModel;

struct Window {
  uint64_t start, end;
};

// Durability is modelled by the recorded flush markers, not by the host disk: skip the
// fdatasync under the recorder (it only costs time on a busy machine).
class NoSyncFile : public FileWrapper {
 public:
  using FileWrapper::FileWrapper;
  Status flush() override { return Status::ok(); }
};

struct Step {
  enum Kind { kWrite, kZero, kDiscard, kCompressed, kFlush, kResize } kind = kWrite;
  uint64_t off = 0, len = 0;  // kResize: off = new size
  Unmap unmap = Unmap::kNo;
  uint64_t seed = 0;          // data pattern
  bool compressible = false;
};

std::string describe(const Step& s) {
  static const char* names[] = {"write", "zero", "discard", "compressed", "flush", "resize"};
  std::string out = names[s.kind];
  if (s.kind == Step::kFlush) return out;
  out += " " + std::to_string(s.off);
  if (s.kind != Step::kResize) out += "+" + std::to_string(s.len);
  if (s.kind == Step::kZero && s.unmap == Unmap::kYes) out += " unmap";
  return out;
}

struct Workload {
  std::string name;
  CreateOptions create;
  uint64_t base_size = 0;  // > 0: a raw backing file of this size with random contents
  std::vector<Window> windows;
  std::vector<Step> steps;  // close() is appended as a final flush
  // Small metadata caches make slices get evicted (written back) in the middle of requests.
  uint64_t l2_cache_size = 0, l2_cache_entry_size = 0, refcount_cache_size = 0;
  void tune(OpenOptions& o) const {
    o.l2_cache_size = l2_cache_size;
    o.l2_cache_entry_size = l2_cache_entry_size;
    o.refcount_cache_size = refcount_cache_size;
  }
};

Bytes step_data(const Step& s) {
  return s.compressible ? qtest::compressible_bytes(s.len, s.seed) : qtest::random_bytes(s.len, s.seed);
}

Status execute(Image& img, const Step& s) {
  switch (s.kind) {
    case Step::kWrite: return img.write(s.off, step_data(s));
    case Step::kCompressed: return img.write(s.off, step_data(s), Compress::kYes);
    case Step::kZero: return img.write_zeroes(s.off, s.len, s.unmap);
    case Step::kDiscard: return img.discard(s.off, s.len);
    case Step::kFlush: return img.flush();
    case Step::kResize: return img.resize(s.off);
  }
  return Status::internal("unknown step");
}

void apply(GuestModel& m, const Step& s, uint64_t cluster_size, bool v2_with_backing) {
  switch (s.kind) {
    case Step::kWrite:
    case Step::kCompressed: m.write(s.off, step_data(s)); break;
    case Step::kZero: m.zero(s.off, s.len); break;
    case Step::kDiscard: {
      REQUIRE_FALSE(v2_with_backing);  // would expose the backing file: not modelled
      uint64_t a = (s.off + cluster_size - 1) / cluster_size * cluster_size;
      uint64_t b = s.off + s.len == m.size() ? m.size() : (s.off + s.len) / cluster_size * cluster_size;
      if (a < b) m.zero(a, b - a);
      break;
    }
    case Step::kFlush: break;
    case Step::kResize: m.resize(s.off); break;
  }
}

// What one recorded run produced, and the expected guest contents after each step.
struct Recording {
  Bytes base_image;
  WriteLog log;
  std::vector<Step> steps;                 // including the final close
  std::vector<size_t> op_start, op_end;    // log range of each step
  std::vector<std::vector<Bytes>> window_bytes;  // [state][window]; state j+1 = after step j
  std::vector<uint64_t> sizes;             // guest size per state
  std::vector<Window> windows;
};

struct Stats {
  size_t prefixes = 0, power_cuts = 0, reorders = 0, qemu_checks = 0, own_checks = 0, eio_runs = 0;
};

class CrashHarness {
 public:
  CrashHarness(qtest::TempDir& dir, const Workload& w) : dir_(dir), w_(w) {}

  // Creates the base image and records the workload.
  void record() {
    const std::string tag = w_.name;
    base_path_ = dir_.file(tag + ".base.qcow2");
    CreateOptions co = w_.create;
    GuestModel model(co.size);
    if (w_.base_size) {
      const std::string raw = dir_.file(tag + ".backing.raw");
      Bytes b = qtest::random_bytes(w_.base_size, 4242);
      qtest::write_file(raw, b);
      co.backing_file = raw;  // absolute: replayed copies in the same directory find it too
      co.backing_format = "raw";
      model.write(0, std::span<const uint8_t>(b.data(), std::min<uint64_t>(b.size(), co.size)));
    }
    {
      Status s = Image::create(base_path_, co);
      INFO(s.message());
      REQUIRE(s.is_ok());
    }
    rec_.base_image = qtest::read_file(base_path_);
    rec_.windows = w_.windows;
    rec_.steps = w_.steps;
    rec_.steps.push_back(Step{Step::kFlush});  // close()

    const std::string work = dir_.file(tag + ".work.qcow2");
    qtest::write_file(work, rec_.base_image);
    auto log = std::make_shared<WriteLog>();
    OpenOptions oo;
    oo.writable = true;
    w_.tune(oo);
    oo.wrap_file = [log, work](std::unique_ptr<File> f) -> std::unique_ptr<File> {
      if (f->path() != work) return f;  // the backing file is only read
      return std::make_unique<RecordingFile>(std::make_unique<NoSyncFile>(std::move(f)), log);
    };
    snapshot(model);
    {
      auto r = Image::open(work, oo);
      INFO(r.status().message());
      REQUIRE(r.is_ok());
      Image img = std::move(r).value();
      REQUIRE(log->ops.empty());  // opening writes nothing
      for (size_t j = 0; j < rec_.steps.size(); ++j) {
        const Step& s = rec_.steps[j];
        CAPTURE(j);
        std::string what = describe(s);
        CAPTURE(what);
        rec_.op_start.push_back(log->ops.size());
        Status st = j + 1 == rec_.steps.size() ? img.close() : execute(img, s);
        INFO(st.message());
        REQUIRE(st.is_ok());
        apply(model, s, co.cluster_size, co.version == 2 && w_.base_size);
        rec_.op_end.push_back(log->ops.size());
        snapshot(model);
      }
    }
    rec_.log = *log;
    if (std::getenv("QIMG_CRASH_VERBOSE")) {  // debugging aid: the steps and the op log
      for (size_t j = 0; j < rec_.steps.size(); ++j)
        std::printf("step %zu: %s [ops %zu..%zu)\n", j, describe(rec_.steps[j]).c_str(), rec_.op_start[j], rec_.op_end[j]);
      for (size_t i = 0; i < rec_.log.size(); ++i) {
        const LoggedOp& op = rec_.log.ops[i];
        static const char* kinds[] = {"write", "flush", "truncate", "allocate", "punch"};
        std::printf("op %zu: %s %#llx +%#llx\n", i, kinds[int(op.kind)], (unsigned long long)op.offset,
                    (unsigned long long)op.length);
      }
    }
    MESSAGE(w_.name << ": " << rec_.log.size() << " logged ops, " << rec_.log.flush_count() << " flush markers");
    // The run itself left a clean image with the final contents.
    verify(work, rec_.log.size(), rec_.log.size(), "complete run");
    auto c = qtest::qemu_check(work);
    INFO(c.output);
    CHECK(c.rc == 0);
    ++stats_.qemu_checks;
  }

  // Process kill after every prefix of the op log (replayed incrementally onto one copy).
  void process_kill_sweep() {
    const size_t L = rec_.log.size();
    const std::string path = dir_.file(w_.name + ".kill.qcow2");
    qtest::write_file(path, rec_.base_image);
    auto f = open_posix_file(path, FileMode::kReadWrite);
    REQUIRE(f.is_ok());
    std::unique_ptr<File> target = std::move(f).value();
    std::set<size_t> qemu_at = evenly_spread(L, 20);
    for (size_t j = 0; j < rec_.steps.size(); ++j)
      if (rec_.steps[j].kind == Step::kFlush) qemu_at.insert(rec_.op_end[j]);
    std::set<size_t> cross_check = {L / 3, (2 * L) / 3};
    for (size_t n = 0; n <= L; ++n) {
      if (n > 0) {
        WriteLog one;
        one.ops.push_back(rec_.log.ops[n - 1]);
        Status s = replay(one, 1, *target, kProcessKill);
        REQUIRE(s.is_ok());
        // A flush marker changes nothing on disk: the state was checked at n - 1.
        if (rec_.log.ops[n - 1].kind == LoggedOp::Kind::kFlush && !qemu_at.count(n)) continue;
      }
      if (cross_check.count(n)) {  // incremental replay == replay of the whole prefix
        auto mem = make_memory_file("check", std::string(rec_.base_image.begin(), rec_.base_image.end()));
        REQUIRE(replay(rec_.log, n, *mem, kProcessKill).is_ok());
        CHECK(file_bytes(*mem) == qtest::read_file(path));
      }
      std::string what = "process kill after " + std::to_string(n) + " of " + std::to_string(L) + " ops";
      verify(path, n, n, what);
      ++stats_.prefixes;
      if (qemu_at.count(n) || !own_check_clean(path)) qemu_consistent(path, what);
    }
  }

  // Power cut at every flush marker (a sample when there are many) and seeded reorderings
  // of the unflushed ops; qemu-img check runs on a few of each.
  void power_cut_sweep(size_t max_cuts, size_t reorder_points, int seeds, size_t qemu_reorders) {
    std::vector<size_t> markers;
    for (size_t i = 0; i < rec_.log.size(); ++i)
      if (rec_.log.ops[i].kind == LoggedOp::Kind::kFlush) markers.push_back(i);
    // Cut just before each marker: everything since the previous marker may be lost.
    std::vector<size_t> cuts;
    for (size_t m : markers) cuts.push_back(m);
    cuts.push_back(rec_.log.size());
    std::set<size_t> pick = evenly_spread(cuts.size() - 1, max_cuts);
    std::set<size_t> reorder = evenly_spread(cuts.size() - 1, reorder_points);
    std::set<size_t> qemu_pick = evenly_spread(cuts.size() - 1, 4);
    std::set<size_t> qemu_reorder = evenly_spread(cuts.size() - 1, qemu_reorders);
    const std::string path = dir_.file(w_.name + ".cut.qcow2");
    for (size_t i = 0; i < cuts.size(); ++i) {
      if (!pick.count(i) && !reorder.count(i)) continue;
      const size_t prefix = cuts[i];
      const size_t durable = durable_prefix(prefix);
      if (pick.count(i)) {
        replay_to(path, prefix, kPowerCut);
        std::string what = "power cut at op " + std::to_string(prefix);
        verify(path, prefix, durable, what);
        ++stats_.power_cuts;
        if (qemu_pick.count(i) || !own_check_clean(path)) qemu_consistent(path, what);
      }
      if (reorder.count(i) && prefix > durable) {
        for (int seed = 1; seed <= seeds; ++seed) {
          replay_to(path, prefix, kPowerCutReorder(uint64_t(seed) * 7919 + i));
          std::string what = "reordered power cut at op " + std::to_string(prefix) + " seed " + std::to_string(seed);
          verify(path, prefix, durable, what);
          if ((qemu_reorder.count(i) && seed == 1) || !own_check_clean(path)) qemu_consistent(path, what);
          ++stats_.reorders;
        }
      }
    }
  }

  // EIO on the n-th write, for every write of the workload.
  void eio_sweep() {
    // Count the writes of a clean run.
    uint64_t total = 0;
    {
      auto plan = std::make_shared<FaultPlan>();
      run_with_faults(plan, dir_.file(w_.name + ".count.qcow2"), nullptr, nullptr);
      total = plan->writes;
    }
    REQUIRE(total > 0);
    MESSAGE(w_.name << ": injecting EIO at each of " << total << " writes");
    const std::string path = dir_.file(w_.name + ".eio.qcow2");
    for (uint64_t n = 0; n < total; ++n) {
      CAPTURE(n);
      auto plan = FaultPlan::fail_write(n, EIO);
      size_t failed_step = SIZE_MAX;
      bool close_ok = false;
      run_with_faults(plan, path, &failed_step, &close_ok);
      CHECK(plan->injected == 1);
      REQUIRE_MESSAGE(failed_step != SIZE_MAX, "the injected EIO at write " << n << " was not reported");
      std::string what = "EIO at write " + std::to_string(n) + " during step " + std::to_string(failed_step) + " (" +
                         describe(rec_.steps[failed_step]) + ")" + (close_ok ? ", close ok" : ", close failed");
      // Acknowledged data: up to the last successful flush; with a successful close, every step
      // before the failed one. The failed step itself may or may not have happened.
      size_t k = 0;  // state index
      if (close_ok && failed_step + 1 < rec_.steps.size()) {
        k = failed_step;
      } else {
        for (size_t j = 0; j < failed_step; ++j)
          if (rec_.steps[j].kind == Step::kFlush) k = j + 1;
      }
      verify_states(path, k, failed_step + 1, what);
      qemu_consistent(path, what);
      ++stats_.eio_runs;
    }
  }

  const Stats& stats() const { return stats_; }

 private:
  // Runs the steps with a FaultFile around the image file; stops at the first failure.
  void run_with_faults(const std::shared_ptr<FaultPlan>& plan, const std::string& path, size_t* failed_step,
                       bool* close_ok) {
    qtest::write_file(path, rec_.base_image);
    OpenOptions oo;
    oo.writable = true;
    w_.tune(oo);
    oo.wrap_file = [plan, path](std::unique_ptr<File> f) -> std::unique_ptr<File> {
      if (f->path() != path) return f;
      return std::make_unique<FaultFile>(std::make_unique<NoSyncFile>(std::move(f)), plan);
    };
    auto r = Image::open(path, oo);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    Image img = std::move(r).value();
    for (size_t j = 0; j < rec_.steps.size(); ++j) {
      bool last = j + 1 == rec_.steps.size();
      Status st = last ? img.close() : execute(img, rec_.steps[j]);
      if (!st.is_ok()) {
        CHECK_MESSAGE(st.code() == ErrorCode::kIo, st.message());
        if (!failed_step) FAIL("unexpected failure without injection: " << st.message());
        *failed_step = j;
        if (!last) {
          Status c = img.close();
          *close_ok = c.is_ok();
        }
        return;
      }
    }
    if (close_ok) *close_ok = true;
  }

  void snapshot(const GuestModel& m) {
    std::vector<Bytes> w;
    for (const Window& x : rec_.windows) w.push_back(m.read(x.start, x.end - x.start));
    rec_.window_bytes.push_back(std::move(w));
    rec_.sizes.push_back(m.size());
  }

  static std::set<size_t> evenly_spread(size_t n, size_t k) {
    std::set<size_t> out;
    if (k == 0) return out;
    if (n + 1 <= k) {
      for (size_t i = 0; i <= n; ++i) out.insert(i);
      return out;
    }
    for (size_t i = 0; i < k; ++i) out.insert(i * n / (k - 1));
    return out;
  }

  size_t durable_prefix(size_t prefix) const {
    for (size_t i = prefix; i > 0; --i)
      if (rec_.log.ops[i - 1].kind == LoggedOp::Kind::kFlush) return i;
    return 0;
  }

  static Bytes file_bytes(File& f) {
    uint64_t n = f.size().value();
    Bytes b(n);
    REQUIRE(f.read_at(0, b).value() == n);
    return b;
  }

  void replay_to(const std::string& path, size_t prefix, PowerCut mode) {
    auto f = open_posix_file(path, FileMode::kCreate);
    REQUIRE(f.is_ok());
    std::unique_ptr<File> target = std::move(f).value();
    REQUIRE(target->write_at(0, rec_.base_image).is_ok());
    Status s = replay(rec_.log, prefix, *target, mode);
    INFO(s.message());
    REQUIRE(s.is_ok());
  }

  // The replayed file must match some state from the last flush acknowledged within the
  // durable part of the prefix through the last step that had started within the prefix.
  void verify(const std::string& path, size_t prefix, size_t durable, const std::string& what) {
    size_t k = 0, m = 0;
    for (size_t j = 0; j < rec_.steps.size(); ++j) {
      if (rec_.steps[j].kind == Step::kFlush && rec_.op_end[j] <= durable) k = j + 1;
      if (rec_.op_start[j] < prefix) m = j + 1;
    }
    // A step that logged nothing before the prefix may still have finished without writing.
    for (size_t j = 0; j < rec_.steps.size(); ++j)
      if (rec_.op_start[j] == rec_.op_end[j] && rec_.op_end[j] <= prefix) m = std::max(m, j + 1);
    verify_states(path, k, std::max(k, m), what);
  }

  void verify_states(const std::string& path, size_t k, size_t m, const std::string& what) {
    INFO(what);
    INFO(w_.name);
    auto r = Image::open(path);
    INFO(r.status().message());
    REQUIRE(r.is_ok());
    Image img = std::move(r).value();
    bool size_ok = false;
    for (size_t s = k; s <= m; ++s) size_ok |= img.size() == rec_.sizes[s];
    CAPTURE(img.size());
    CAPTURE(rec_.sizes[k]);
    REQUIRE(size_ok);
    for (size_t wi = 0; wi < rec_.windows.size(); ++wi) {
      const Window& w = rec_.windows[wi];
      const uint64_t len = std::min(w.end, img.size()) > w.start ? std::min(w.end, img.size()) - w.start : 0;
      if (!len) continue;
      Bytes got(len);
      Status s = img.read(w.start, got);
      INFO(s.message());
      REQUIRE(s.is_ok());
      const Bytes& old = rec_.window_bytes[k][wi];
      if (std::equal(got.begin(), got.end(), old.begin())) continue;
      const Bytes& last = rec_.window_bytes[m][wi];
      for (uint64_t b = 0; b < len; b += 512) {
        uint64_t n = std::min<uint64_t>(512, len - b);
        if (std::equal(got.begin() + b, got.begin() + b + n, old.begin() + b)) continue;
        if (std::equal(got.begin() + b, got.begin() + b + n, last.begin() + b)) continue;
        for (uint64_t i = b; i < b + n; ++i) {
          bool ok = false;
          for (size_t s2 = k; s2 <= m && !ok; ++s2) ok = rec_.window_bytes[s2][wi][i] == got[i];
          if (!ok) {
            std::string history;
            for (size_t j = 0; j < rec_.steps.size(); ++j)
              history += std::to_string(j) + ": " + describe(rec_.steps[j]) + " [ops " + std::to_string(rec_.op_start[j]) +
                         ".." + std::to_string(rec_.op_end[j]) + ")\n";
            INFO(history);
            FAIL("guest byte " << (w.start + i) << " reads " << int(got[i]) << "; acknowledged state " << k << " has "
                               << int(old[i]) << " (allowed states " << k << ".." << m << ")");
          }
        }
      }
    }
  }

  // libqcow's own checker (qemu-img check's rules, in process, so cheap enough for every
  // replayed state). It only selects states for qemu-img, whose verdict is the one tested.
  bool own_check_clean(const std::string& path) {
    CheckOptions o;
    o.force_share = true;
    auto r = check_image(path, o);
    ++stats_.own_checks;
    return r.is_ok() && r->corruptions == 0 && r->check_errors == 0;
  }

  void qemu_consistent(const std::string& path, const std::string& what) {
    auto c = qtest::qemu_check(path);
    ++stats_.qemu_checks;
    if (!c.consistent()) {
      if (std::getenv("QIMG_CRASH_KEEP")) {  // debugging aid: keep the failing file
        static int kept = 0;
        std::filesystem::copy_file(path, std::string(std::getenv("QIMG_CRASH_KEEP")) + "/" + w_.name + "-" + std::to_string(kept++) + ".qcow2",
                                   std::filesystem::copy_options::overwrite_existing);
      }
      INFO(w_.name);
      INFO(what);
      INFO(c.output);
      CHECK(c.consistent());
    }
  }

  qtest::TempDir& dir_;
  const Workload& w_;
  std::string base_path_;
  Recording rec_;
  Stats stats_;
};

// ---- workloads ----

struct Gen {
  std::mt19937_64 rng;
  explicit Gen(uint64_t seed) : rng(seed) {}
  uint64_t rnd(uint64_t n) { return n ? rng() % n : 0; }
  Step write_in(const Window& w, uint64_t max_len, uint64_t align = 1) {
    Step s;
    s.kind = Step::kWrite;
    s.off = (w.start + rnd(w.end - w.start)) / align * align;
    s.len = std::min<uint64_t>(w.end - s.off, align > 1 ? (1 + rnd(max_len / align)) * align : 1 + rnd(max_len));
    s.seed = rng();
    return s;
  }
  Step range(Step::Kind k, const Window& w, uint64_t max_len) {
    Step s;
    s.kind = k;
    s.off = w.start + rnd(w.end - w.start);
    s.len = 1 + rnd(std::min<uint64_t>(max_len, w.end - s.off));
    s.unmap = rnd(2) ? Unmap::kYes : Unmap::kNo;
    return s;
  }
};

Step flush_step() { return Step{Step::kFlush}; }

CreateOptions layout(uint64_t size, uint32_t cs, bool ext = false, int version = 3, int refcount_bits = 16) {
  CreateOptions co;
  co.size = size;
  co.cluster_size = cs;
  co.extended_l2 = ext;
  co.version = version;
  co.refcount_bits = refcount_bits;
  return co;
}

Workload allocating_writes(bool ext) {
  Workload w;
  w.name = ext ? "alloc-ext" : "alloc-std";
  if (ext) {
    w.create = layout((1 << 20) + 4096, 65536, true);
    w.windows = {{0, (1 << 20) + 4096}};
  } else {
    // 4 KiB clusters: one L2 table maps 2 MiB, so writes around 2 MiB cross tables.
    w.create = layout(3 << 20, 4096);
    w.windows = {{0, 192 << 10}, {(2 << 20) - (96 << 10), (2 << 20) + (96 << 10)}, {(3 << 20) - (32 << 10), 3 << 20}};
  }
  if (ext) {
    w.l2_cache_entry_size = 4096;  // 256 extended entries per slice
    w.l2_cache_size = 4 * 4096;
  } else {
    w.l2_cache_entry_size = 512;  // 64 entries (256 KiB of guest) per slice: the windows need more than 4
    w.l2_cache_size = 4 * 512;
    w.refcount_cache_size = 4 * 4096;
  }
  Gen g(ext ? 11 : 12);
  for (int i = 0; i < 24; ++i) {
    const Window& win = w.windows[g.rnd(w.windows.size())];
    w.steps.push_back(i % 3 == 0 && ext ? g.write_in(win, 8192, 2048) : g.write_in(win, 20000));
    if (i % 6 == 5) w.steps.push_back(flush_step());
  }
  return w;
}

Workload backing_writes(bool ext) {
  Workload w;
  w.name = ext ? "backing-ext" : "backing-std";
  w.create = layout(1 << 20, 65536, ext);
  w.base_size = (640 << 10) + 1000;
  w.windows = {{0, 1 << 20}};
  Gen g(ext ? 21 : 22);
  for (int i = 0; i < 24; ++i) {
    uint64_t r = g.rnd(10);
    if (r < 6) w.steps.push_back(g.write_in(w.windows[0], 6000, ext ? 2048 : 1));
    else if (r < 7) w.steps.push_back(g.write_in(w.windows[0], 40000));
    else if (r < 9) w.steps.push_back(g.range(Step::kZero, w.windows[0], 150000));
    else w.steps.push_back(g.range(Step::kDiscard, w.windows[0], 200000));
    if (i % 6 == 5) w.steps.push_back(flush_step());
  }
  return w;
}

// 1 KiB clusters, 512-byte L2 slices (64 KiB of guest each) and a 4-slice L2 cache: L2 slices are
// written back in the middle of requests, over a backing file whose data differs from
// what an unwritten cluster would show.
Workload backing_small_cache() {
  Workload w;
  w.name = "backing-small-cache";
  w.create = layout(512 << 10, 1024, false, 3, 16);
  w.base_size = 512 << 10;
  w.windows = {{0, 512 << 10}};
  w.l2_cache_entry_size = 512;
  w.l2_cache_size = 4 * 512;
  w.refcount_cache_size = 4 * 1024;
  Gen g(23);
  for (int i = 0; i < 30; ++i) {
    w.steps.push_back(i % 4 == 3 ? g.write_in(w.windows[0], 40000) : g.write_in(w.windows[0], 3000));
    if (i % 8 == 7) w.steps.push_back(flush_step());
  }
  return w;
}

Workload compressed_writes() {
  Workload w;
  w.name = "compressed";
  const uint64_t cs = 65536;
  w.create = layout(16 * cs + 4096, cs);  // a partial last cluster
  w.windows = {{0, 16 * cs + 4096}};
  Gen g(31);
  for (int i = 0; i < 26; ++i) {
    Step s;
    uint64_t r = g.rnd(10);
    if (r < 6) {
      s.kind = Step::kCompressed;
      uint64_t c = g.rnd(17);
      s.off = c * cs;
      s.len = c == 16 ? 4096 : std::min<uint64_t>((1 + g.rnd(2)) * cs, 16 * cs - s.off);
      s.seed = g.rng();
      s.compressible = g.rnd(5) != 0;
    } else {
      s = g.write_in(w.windows[0], 30000);  // partial overwrites of compressed clusters: copy-on-write
    }
    w.steps.push_back(s);
    if (i % 5 == 4) w.steps.push_back(flush_step());
  }
  return w;
}

Workload zeroes_with_unmap(bool ext) {
  Workload w;
  w.name = ext ? "zero-unmap-ext" : "zero-unmap-std";
  w.create = ext ? layout(1 << 20, 65536, true) : layout(512 << 10, 4096);
  w.windows = {{0, w.create.size}};
  if (!ext) {
    w.l2_cache_size = 4 * 4096;
    w.refcount_cache_size = 4 * 4096;
  }
  Gen g(ext ? 41 : 42);
  for (int i = 0; i < 8; ++i) w.steps.push_back(g.write_in(w.windows[0], 60000));
  w.steps.push_back(flush_step());
  for (int i = 0; i < 16; ++i) {
    if (i % 3 == 2) {
      w.steps.push_back(g.write_in(w.windows[0], 30000));
    } else {
      Step z = g.range(Step::kZero, w.windows[0], 120000);
      z.unmap = i % 4 == 3 ? Unmap::kNo : Unmap::kYes;
      w.steps.push_back(z);
    }
    if (i % 4 == 3) w.steps.push_back(flush_step());
  }
  return w;
}

Workload discards(int version) {
  Workload w;
  w.name = version == 2 ? "discard-v2" : "discard-v3";
  w.create = layout(512 << 10, 4096, false, version);
  w.windows = {{0, w.create.size}};
  Gen g(50 + version);
  for (int i = 0; i < 8; ++i) w.steps.push_back(g.write_in(w.windows[0], 60000));
  w.steps.push_back(flush_step());
  for (int i = 0; i < 16; ++i) {
    if (i % 3 == 2) w.steps.push_back(g.write_in(w.windows[0], 40000));  // reuses freed clusters
    else w.steps.push_back(g.range(Step::kDiscard, w.windows[0], 150000));
    if (i % 4 == 3) w.steps.push_back(flush_step());
  }
  return w;
}

// 512-byte clusters with 64-bit refcounts: a refcount block covers 64 clusters, and a
// one-cluster refcount table 64 blocks, so allocation creates many blocks and grows the table.
Workload refcount_growth() {
  Workload w;
  w.name = "refcount-growth";
  w.create = layout(3 << 20, 512, false, 3, 64);
  w.windows = {{0, 3 << 20}};
  w.l2_cache_size = 8 * 512;
  w.refcount_cache_size = 4 * 512;
  Gen g(61);
  for (int i = 0; i < 22; ++i) {
    Step s;
    s.kind = Step::kWrite;
    s.len = (96 << 10) + g.rnd(40000);
    s.off = g.rnd((3 << 20) - s.len);
    s.seed = g.rng();
    w.steps.push_back(s);
    if (i % 5 == 4) w.steps.push_back(flush_step());
  }
  return w;
}

Workload growth_by_resize() {
  Workload w;
  w.name = "resize";
  // 512-byte clusters: each L1 entry maps 32 KiB, so every resize below grows the L1 table.
  w.create = layout(200 << 10, 512);
  const uint64_t sizes[] = {200 << 10, 700 << 10, 1536 << 10};
  w.windows = {{0, 1536 << 10}};
  Gen g(71);
  for (int phase = 0; phase < 3; ++phase) {
    if (phase > 0) {
      Step r;
      r.kind = Step::kResize;
      r.off = sizes[phase];
      w.steps.push_back(r);
      if (phase == 1) w.steps.push_back(flush_step());
    }
    const Window win{phase ? sizes[phase - 1] - 4096 : 0, sizes[phase]};  // includes the old end
    for (int i = 0; i < 6; ++i) w.steps.push_back(g.write_in(win, 30000));
    w.steps.push_back(flush_step());
  }
  return w;
}

// Everything at once, on the smallest layout, for the EIO sweep.
Workload mixed_for_eio() {
  Workload w;
  w.name = "eio-mixed";
  w.create = layout(96 << 10, 512, false, 3, 64);
  w.windows = {{0, 160 << 10}};
  const Window start{0, 96 << 10};
  w.l2_cache_size = 4 * 512;
  w.refcount_cache_size = 4 * 512;
  Gen g(81);
  for (int i = 0; i < 4; ++i) w.steps.push_back(g.write_in(start, 12000));
  w.steps.push_back(flush_step());
  Step c;
  c.kind = Step::kCompressed;
  c.off = 8192;
  c.len = 1024;
  c.seed = 5;
  c.compressible = true;
  w.steps.push_back(c);
  Step z = g.range(Step::kZero, start, 20000);
  z.unmap = Unmap::kYes;
  w.steps.push_back(z);
  w.steps.push_back(g.range(Step::kDiscard, start, 20000));
  w.steps.push_back(g.write_in(start, 9000));
  w.steps.push_back(flush_step());
  Step r;
  r.kind = Step::kResize;
  r.off = 160 << 10;
  w.steps.push_back(r);
  w.steps.push_back(g.write_in({(96 << 10) - 2048, 160 << 10}, 30000));
  w.steps.push_back(g.write_in({0, 160 << 10}, 10000));
  w.steps.push_back(flush_step());
  w.steps.push_back(g.write_in({0, 160 << 10}, 10000));
  return w;
}

}  // namespace

TEST_SUITE("qcow::crash") {

TEST_CASE("crash consistency: process kill, power cut, reordering, injected EIO") {
  qtest::TempDir dir("qimg-crash");
  Stats total;
  auto run = [&](const Workload& w, size_t max_cuts = 40, size_t reorder_points = 40, int seeds = 3) {
    CrashHarness h(dir, w);
    h.record();
    h.process_kill_sweep();
    h.power_cut_sweep(max_cuts, reorder_points, seeds, 6);
    const Stats& s = h.stats();
    total.prefixes += s.prefixes;
    total.power_cuts += s.power_cuts;
    total.reorders += s.reorders;
    total.qemu_checks += s.qemu_checks;
    total.own_checks += s.own_checks;
  };

  SUBCASE("allocating writes, standard L2") { run(allocating_writes(false)); }
  SUBCASE("allocating writes, extended L2") { run(allocating_writes(true)); }
  SUBCASE("writes over a backing file, standard L2") { run(backing_writes(false)); }
  SUBCASE("writes over a backing file, extended L2") { run(backing_writes(true)); }
  SUBCASE("writes over a backing file, small metadata caches") { run(backing_small_cache()); }
  SUBCASE("compressed writes") { run(compressed_writes()); }
  SUBCASE("write_zeroes with unmap, standard L2") { run(zeroes_with_unmap(false)); }
  SUBCASE("write_zeroes with unmap, extended L2") { run(zeroes_with_unmap(true)); }
  SUBCASE("discards, v3") { run(discards(3)); }
  SUBCASE("discards, v2") { run(discards(2)); }
  SUBCASE("refcount block creation and refcount table growth") { run(refcount_growth(), 30, 30, 2); }
  SUBCASE("image growth by resize") { run(growth_by_resize()); }
  SUBCASE("EIO at every write") {
    Workload w = mixed_for_eio();
    CrashHarness h(dir, w);
    h.record();
    h.eio_sweep();
    total.eio_runs += h.stats().eio_runs;
    total.qemu_checks += h.stats().qemu_checks;
  }
  MESSAGE("prefixes " << total.prefixes << ", power cuts " << total.power_cuts << ", reorders " << total.reorders
                      << ", EIO runs " << total.eio_runs << ", qemu-img checks " << total.qemu_checks
                      << ", in-process checks " << total.own_checks);
}

}  // TEST_SUITE
