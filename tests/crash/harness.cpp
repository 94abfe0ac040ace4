#include "crash/harness.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string_view>
#include <thread>
#include <unordered_set>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "qcow/check.hpp"
#include "crash/content.hpp"
#include "crash/tools.hpp"

extern char** environ;

namespace crash {
namespace fs = std::filesystem;
using qcow::FaultPlan;
using qcow::LoggedOp;
using qcow::Status;
using qcow::WriteLog;

std::string describe(const Step& s) {
  static const char* names[] = {"write", "zero", "discard", "compressed", "flush", "resize"};
  std::string out = names[s.kind];
  if (s.kind == Step::kFlush) return out;
  out += fmt::format(" {:#x}", s.off);
  if (s.kind != Step::kResize) out += fmt::format("+{:#x}", s.len);
  if (s.kind == Step::kZero && s.unmap == qcow::Unmap::kYes) out += " unmap";
  return out;
}

Bytes step_data(const Step& s) {
  std::mt19937_64 rng(s.seed);
  Bytes v(s.len);
  uint8_t run = uint8_t(rng() | 1);
  for (size_t i = 0; i < v.size(); ++i) {
    if (s.compressible) {
      if ((i & 63) == 0) run = uint8_t(rng() | 1);
      v[i] = run;
    } else {
      if ((i & 7) == 0) run = uint8_t(rng());
      v[i] = uint8_t(run + i);
    }
  }
  return v;
}

const char* fault_kind_name(FaultKind k) {
  switch (k) {
    case FaultKind::kProcessKill: return "process kill";
    case FaultKind::kPowerCut: return "power cut, reordered";
    case FaultKind::kTorn: return "power cut, torn sectors";
    case FaultKind::kWriteEio: return "write EIO";
    case FaultKind::kShortWrite: return "short write + EIO";
    case FaultKind::kEnospc: return "ENOSPC growing the file";
    case FaultKind::kFlushEio: return "flush EIO";
    case FaultKind::kFallocEio: return "fallocate EIO";
    case FaultKind::kCount: break;
  }
  return "?";
}

uint64_t Report::total_states() const {
  uint64_t n = 0;
  for (const auto& [k, s] : kinds) n += s.states;
  return n;
}

namespace {

// ---- the model of guest contents ----

// Guest contents after each step: states[0] is the base image, states[j + 1] after step j;
// snapshots[j] are the internal snapshots (name -> content) that exist in states[j].
struct Model {
  std::vector<Content> states;
  std::vector<std::map<std::string, Content>> snapshots;
};

uint64_t round_up(uint64_t v, uint64_t unit) { return (v + unit - 1) / unit * unit; }

void apply_step(Content& g, const Step& s, uint64_t cluster_size, const Workload& w) {
  switch (s.kind) {
    case Step::kWrite:
    case Step::kCompressed: g.write(s.off, step_data(s)); break;
    case Step::kZero: g.zero(s.off, s.len); break;
    case Step::kDiscard: {
      if (w.v2_with_backing) break;  // refused by QEMU and by libqcow: the data stays
      // Whole clusters only (the end of the disk counts as a cluster boundary); they read as zeros.
      uint64_t a = (s.off + cluster_size - 1) / cluster_size * cluster_size;
      uint64_t b = s.off + s.len == g.size() ? g.size() : (s.off + s.len) / cluster_size * cluster_size;
      if (a < b) g.zero(a, b - a);
      break;
    }
    case Step::kFlush: break;
    case Step::kResize:
      if (s.off < g.size()) {
        // QEMU keeps the last cluster's bytes past a new end (a later growth shows them).
        g.resize(s.off, std::min(round_up(s.off, cluster_size), g.size()));
      } else {
        // Zeros, unless the old last cluster still holds such bytes; fresh clusters and
        // zeroing over a backing file cover them too.
        const bool zeroed = w.grows_over_backing || s.prealloc == qcow::Preallocation::kFalloc ||
                            s.prealloc == qcow::Preallocation::kFull;
        if (zeroed) g.zero(g.size(), s.off - g.size());
        g.resize(s.off);
      }
      break;
  }
}

// `result`: what the image reads after an offline operation that leaves no
// Workload::after (rebase, commit: Workload::operation_result); `base_snapshots`:
// what each snapshot name of Workload::After reads in the base image.
Model build_model(const Workload& w, const Content& base_content, const Content& result,
                  const std::map<std::string, Content>& base_snapshots, uint64_t cluster_size) {
  Model m;
  m.states.push_back(base_content);
  m.snapshots.push_back(base_snapshots);
  if (w.operation) {
    if (!w.after) {  // the operation and close
      m.states.push_back(result);
      m.snapshots.push_back(base_snapshots);
      return m;
    }
    auto named = [&](const std::string& name) -> const Content& {
      if (name.empty()) return base_content;
      auto it = base_snapshots.find(name);
      if (it == base_snapshots.end()) throw std::runtime_error("Workload::after names an unknown snapshot " + name);
      return it->second;
    };
    m.states.push_back(named(w.after->active));
    std::map<std::string, Content> after;
    for (const auto& [name, source] : w.after->snapshots) after[name] = named(source);
    m.snapshots.push_back(std::move(after));
    return m;
  }
  for (const Step& s : w.steps) {
    Content next = m.states.back();
    apply_step(next, s, cluster_size, w);
    m.states.push_back(std::move(next));
    m.snapshots.push_back(base_snapshots);
  }
  m.states.push_back(m.states.back());  // close()
  m.snapshots.push_back(base_snapshots);
  return m;
}

// ---- one run of the workload ----

// Durability is modelled by the recorded flush markers, not by the host disk.
class NoSyncFile : public qcow::FileWrapper {
 public:
  using FileWrapper::FileWrapper;
  Status flush() override { return Status::ok(); }
};

struct Run {
  std::shared_ptr<WriteLog> log = std::make_shared<WriteLog>();
  std::vector<size_t> op_start, op_end;  // log range of each step (close included)
  std::vector<bool> flush_ok;            // step j is a flush that completed
  size_t failed_step = SIZE_MAX;
  std::string error;
};

Status execute_step(qcow::Image& img, const Step& s) {
  switch (s.kind) {
    case Step::kWrite: return img.write(s.off, step_data(s));
    case Step::kCompressed: return img.write(s.off, step_data(s), qcow::Compress::kYes);
    case Step::kZero: return img.write_zeroes(s.off, s.len, s.unmap);
    case Step::kDiscard: return img.discard(s.off, s.len);
    case Step::kFlush: return img.flush();
    case Step::kResize: return img.resize(s.off, {s.prealloc, qcow::Shrink::kYes});
  }
  return Status::internal("unknown step");
}

// Runs the workload on `path` (holding base_file): steps stop at the first failure;
// the image is closed either way, as a command would.
Run execute(const Workload& w, const std::string& path, const Bytes& base_file, std::shared_ptr<FaultPlan> plan) {
  write_file(path, base_file);
  Run run;
  auto log = run.log;
  const std::string canonical = fs::weakly_canonical(path).string();
  qcow::FileWrapFn wrap = [log, plan, canonical](std::unique_ptr<qcow::File> f) -> std::unique_ptr<qcow::File> {
    if (fs::weakly_canonical(f->path()).string() != canonical) return f;  // backing files are only read
    std::unique_ptr<qcow::File> out =
        std::make_unique<qcow::RecordingFile>(std::make_unique<NoSyncFile>(std::move(f)), log);
    if (plan) out = std::make_unique<qcow::FaultFile>(std::move(out), plan);
    return out;
  };
  auto fail = [&](size_t step, const Status& s) {
    run.failed_step = step;
    run.error = s.message();
  };
  if (w.operation) {
    run.op_start.push_back(0);
    Status s = w.operation(path, wrap);
    if (!s.is_ok()) fail(0, s);
    run.op_end.push_back(log->size());
    run.flush_ok.push_back(s.is_ok());  // a completed operation is durable
    return run;
  }
  qcow::OpenOptions oo = w.open;
  oo.writable = true;
  oo.wrap_file = wrap;
  auto r = qcow::Image::open(path, oo);
  if (!r) {
    fail(0, r.status());
    return run;
  }
  qcow::Image img = std::move(r).value();
  for (size_t j = 0; j <= w.steps.size(); ++j) {
    const bool close = j == w.steps.size();
    run.op_start.push_back(log->size());
    Status s = close ? img.close() : execute_step(img, w.steps[j]);
    run.op_end.push_back(log->size());
    run.flush_ok.push_back(s.is_ok() && (close || w.steps[j].kind == Step::kFlush));
    if (!s.is_ok()) {
      fail(j, s);
      if (!close) {
        Status c = img.close();  // must fail too: the error is sticky
        if (c.is_ok()) run.error += " (and close() then reported success)";
      }
      break;
    }
  }
  return run;
}

// ---- states ----

struct State {
  Bytes file;
  size_t k = 0, m = 0;  // allowed model states [k, m]
  FaultKind kind;
  std::string label;
};

// The model states a file may read as when the ops before `prefix` may have landed and
// those before `durable` did: from the last acknowledged flush to the last step begun.
std::pair<size_t, size_t> allowed_states(const Run& run, size_t prefix, size_t durable) {
  size_t k = 0, m = 0;
  for (size_t j = 0; j < run.op_start.size(); ++j) {
    if (run.flush_ok[j] && run.op_end[j] <= durable) k = j + 1;
    if (run.op_start[j] < prefix || (run.op_start[j] == run.op_end[j] && run.op_end[j] <= prefix)) m = j + 1;
  }
  return {k, std::max(k, m)};
}

size_t durable_prefix(const WriteLog& log, size_t prefix) {
  for (size_t i = prefix; i > 0; --i)
    if (log.ops[i - 1].kind == LoggedOp::Kind::kFlush) return i;
  return 0;
}

Bytes replayed(const Bytes& base, const WriteLog& log, size_t prefix, qcow::PowerCut mode) {
  auto mem = qcow::make_memory_file("state", std::string(base.begin(), base.end()));
  Status s = qcow::replay(log, prefix, *mem, mode);
  if (!s.is_ok()) throw std::runtime_error("replay: " + s.message());
  uint64_t n = mem->size().value();
  Bytes out(n);
  if (mem->read_at(0, out).value() != n) throw std::runtime_error("replay: short read");
  return out;
}

// ---- the judge ----

struct Judge {
  Judge(const Workload& w, const Options& o, const Model& model, std::string dir, Report& report)
      : w(w), o(o), model(model), dir(std::move(dir)), report(report) {}

  const Workload& w;
  const Options& o;
  const Model& model;
  long base_corruptions = 0;
  std::string dir;
  Report& report;

  std::mutex mu;
  std::condition_variable cv;
  std::deque<State> queue;
  bool done = false;
  std::unordered_set<uint64_t> seen;
  uint64_t serial = 0;

  // Queues a state unless an identical file was judged already; returns whether it was new.
  bool submit(State st) {
    uint64_t h = std::hash<std::string_view>{}(std::string_view(reinterpret_cast<const char*>(st.file.data()), st.file.size()));
    h ^= (uint64_t(st.k) << 40) ^ (uint64_t(st.m) << 20);
    std::unique_lock lock(mu);
    if (!seen.insert(h).second) return false;
    cv.wait(lock, [&] { return queue.size() < 2 * o.jobs; });
    queue.push_back(std::move(st));
    cv.notify_all();
    return true;
  }

  void worker() {
    for (;;) {
      State st;
      uint64_t id;
      {
        std::unique_lock lock(mu);
        cv.wait(lock, [&] { return done || !queue.empty(); });
        if (queue.empty()) return;
        st = std::move(queue.front());
        queue.pop_front();
        id = serial++;
        cv.notify_all();
      }
      judge(st, id);
    }
  }

  void judge(const State& st, uint64_t id) {
    const std::string path = fmt::format("{}/state-{}.qcow2", dir, id), raw = path + ".raw";
    write_file(path, st.file);
    std::string problem;
    bool corrupt = false, lost = false;
    QemuCheck c = qemu_check(path);
    if (w.verdict == Verdict::kConsistent) {
      if (!c.consistent()) {
        corrupt = true;
        problem = fmt::format("qemu-img check: rc {} corruptions {} check-errors {}", c.rc, c.corruptions, c.check_errors);
      }
    } else if (c.rc != 0 && c.rc != 2 && c.rc != 3) {
      corrupt = true;
      problem = fmt::format("qemu-img check could not check the image (rc {})", c.rc);
    } else if (c.corruptions > base_corruptions) {
      corrupt = true;
      problem = fmt::format("qemu-img check: {} corruptions, more than the {} the repair started from", c.corruptions,
                            base_corruptions);
    }
    if (!corrupt && w.verdict == Verdict::kRepairable) {  // a second repair must finish the job
      qcow::CheckOptions again;
      again.repair = qcow::Repair::kAll;
      auto r = [&] {
        std::lock_guard lock(spawn_mutex());  // no child may inherit the image's locked descriptor
        return qcow::check_image(path, again);
      }();
      QemuCheck after = qemu_check(path);
      if (!r.is_ok() || after.rc != 0) {
        corrupt = true;
        problem = fmt::format("after a second check -r all ({}): qemu-img check rc {}",
                              r.is_ok() ? "ok" : r.status().message(), after.rc);
      }
    }
    if (!corrupt) {
      std::string why;
      if (!content_ok(path, raw, st, &why)) {
        lost = true;
        problem = why;
      }
    }
    std::error_code ec;
    if ((corrupt || lost) && !o.keep_dir.empty()) {
      fs::create_directories(o.keep_dir, ec);
      std::string kept = fmt::format("{}/{}-{}.qcow2", o.keep_dir, w.name, id);
      write_file(kept, st.file);
      problem += " (kept: " + kept + ")";
    }
    fs::remove(path, ec);
    fs::remove(raw, ec);
    std::lock_guard lock(mu);
    KindStats& ks = report.kinds[st.kind];
    ++ks.states;
    if (corrupt) ++ks.corrupt;
    if (lost) ++ks.lost;
    if (corrupt || lost) report.failures.push_back(fmt::format("{}: {}: {}", st.label, fault_kind_name(st.kind), problem));
  }

  // The guest content and the snapshots (names and contents) as qemu-img reads them,
  // against the model. Guest operations, commit and rebase may leave any mix of the
  // allowed states' bytes; a snapshot operation (Workload::after) one allowed state as a whole.
  bool content_ok(const std::string& path, const std::string& raw, const State& st, std::string* why) {
    std::string out;
    if (run_tool({"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", path, raw}, &out) != 0) {
      *why = "qemu-img convert failed: " + first_line(out);
      return false;
    }
    const Content active = Content::load_raw(raw);
    std::set<std::string> names;
    if (!list_snapshots(path, &names, why)) return false;
    std::map<std::string, Content> read;  // snapshot contents, read once
    std::string mismatch;
    for (size_t i = st.k; i <= st.m; ++i) {
      const auto& expected = model.snapshots[i];
      if (names.size() != expected.size() ||
          !std::equal(names.begin(), names.end(), expected.begin(), [](const auto& a, const auto& b) { return a == b.first; })) {
        mismatch = fmt::format("snapshots [{}] are not those of an allowed state", fmt::join(names, " "));
        continue;
      }
      const bool whole = w.operation && w.after;  // snapshot operations commit as a whole; commit and rebase do not
      if (whole ? !same_but_zero_tail(active, model.states[i]) : !matches_any(active, model.states, st.k, st.m, &mismatch)) {
        if (whole) mismatch = fmt::format("the guest content is that of no allowed state ({}..{})", st.k, st.m);
        continue;
      }
      bool all = true;
      for (const auto& [name, content] : expected) {
        if (!read.count(name)) {
          if (run_tool({"qemu-img", "convert", "-U", "-f", "qcow2", "-l", "snapshot.name=" + name, "-O", "raw", path, raw},
                       &out) != 0) {
            *why = fmt::format("snapshot '{}' unreadable: {}", name, first_line(out));
            return false;
          }
          read[name] = Content::load_raw(raw);
        }
        if (!same_as_far_as_read(read[name], content)) {
          mismatch = fmt::format("snapshot '{}' changed", name);
          all = false;
          break;
        }
      }
      if (all) return true;
    }
    *why = mismatch;
    return false;
  }

  // Equal once the shorter is extended with zeros. qemu-img convert -l reads a snapshot
  // at the active image's size (QEMU's snapshot_load_tmp keeps the size), so neither a
  // snapshot's content nor what applying it gives can be known with its own size: the
  // bytes are compared, the size only as far as zeros can tell.
  static bool same_but_zero_tail(const Content& a, const Content& b) {
    if (a.size() == b.size()) return a == b;
    Content x = a, y = b;
    const uint64_t n = std::max(a.size(), b.size());
    x.resize(n);
    y.resize(n);
    return x == y;
  }

  // A snapshot read at a smaller active size shows only the prefix of its content.
  static bool same_as_far_as_read(const Content& read, const Content& expected) {
    if (read.size() >= expected.size()) return same_but_zero_tail(read, expected);
    Content prefix = expected;
    prefix.resize(read.size());
    return read == prefix;
  }

  // The snapshot names `qemu-img snapshot -l` lists (the TAG column).
  static bool list_snapshots(const std::string& path, std::set<std::string>* names, std::string* why) {
    std::string out;
    if (run_tool({"qemu-img", "snapshot", "-U", "-l", path}, &out) != 0) {
      *why = "qemu-img snapshot -l failed: " + first_line(out);
      return false;
    }
    std::istringstream lines(out);
    std::string line;
    for (int n = 0; std::getline(lines, line); ++n) {
      if (n < 2) continue;  // "Snapshot list:" and the column titles
      std::istringstream fields(line);
      std::string id, tag;
      if (fields >> id >> tag) names->insert(tag);
    }
    return true;
  }
};

// Evenly spread picks of `want` among n items (all of them when n <= want).
std::vector<size_t> spread(size_t n, size_t want) {
  std::vector<size_t> out;
  if (!n || !want) return out;
  if (n <= want) {
    for (size_t i = 0; i < n; ++i) out.push_back(i);
    return out;
  }
  for (size_t i = 0; i < want; ++i) out.push_back(i * (n - 1) / std::max<size_t>(1, want - 1));
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

// Process kills after spread prefixes of the log.
void kill_states(Judge& j, const Bytes& base, const Run& run, size_t budget) {
  const WriteLog& log = *run.log;
  uint64_t judged = 0;
  for (size_t p : spread(log.size() + 1, budget * 2)) {
    if (judged >= budget) break;
    auto [k, m] = allowed_states(run, p, p);
    judged += j.submit({replayed(base, log, p, qcow::kProcessKill), k, m, FaultKind::kProcessKill,
                        fmt::format("kill after {} of {} ops", p, log.size())});
  }
}

// Power cuts: for each window between flushes, seeded subsets (or torn subsets) of its ops.
void power_states(Judge& j, const Bytes& base, const Run& run, size_t budget, FaultKind kind, uint64_t salt,
                  const std::string& what) {
  const WriteLog& log = *run.log;
  std::vector<size_t> cuts;  // cut just before each flush marker (its window may be lost), and at the end
  for (size_t i = 0; i < log.size(); ++i)
    if (log.ops[i].kind == LoggedOp::Kind::kFlush && i > durable_prefix(log, i)) cuts.push_back(i);
  if (log.size() > durable_prefix(log, log.size())) cuts.push_back(log.size());
  if (cuts.empty()) return;
  uint64_t judged = 0, misses = 0;
  for (uint64_t seed = 1; judged < budget && misses < 4 * budget + 64; ++seed) {
    for (size_t c : cuts) {
      if (judged >= budget) break;
      const size_t durable = durable_prefix(log, c);
      auto [k, m] = allowed_states(run, c, durable);
      qcow::PowerCut mode = kind == FaultKind::kTorn ? qcow::kPowerCutTorn(seed * 1000003 + salt)
                                                     : qcow::kPowerCutReorder(seed * 1000003 + salt);
      bool fresh = j.submit({replayed(base, log, c, mode), k, m, kind,
                             fmt::format("{}power cut at op {} (window from {}), seed {}", what, c, durable, seed)});
      judged += fresh;
      misses += !fresh;
    }
  }
}

struct FaultSpec {
  FaultKind kind;
  uint64_t FaultPlan::*counter;
  std::function<void(FaultPlan&, uint64_t)> arm;
};

std::vector<FaultSpec> fault_specs() {
  return {
      {FaultKind::kWriteEio, &FaultPlan::writes, [](FaultPlan& p, uint64_t n) { p.write = {n, false, EIO}; }},
      {FaultKind::kShortWrite, &FaultPlan::writes,
       [](FaultPlan& p, uint64_t n) { p.write = {n, false, EIO, true}; }},
      {FaultKind::kEnospc, &FaultPlan::grows, [](FaultPlan& p, uint64_t n) { p.grow = {n, true, ENOSPC}; }},
      {FaultKind::kFlushEio, &FaultPlan::flushes, [](FaultPlan& p, uint64_t n) { p.flush = {n, false, EIO}; }},
      {FaultKind::kFallocEio, &FaultPlan::allocates, [](FaultPlan& p, uint64_t n) { p.allocate = {n, false, EIO}; }},
  };
}

// Runs with one injected failure each, judging the file as left and power cuts of its tail.
void fault_states(Judge& j, const Workload& w, const std::string& work, const Bytes& base, const FaultSpec& spec,
                  uint64_t total, size_t budget) {
  for (size_t n : spread(total, std::max<size_t>(1, budget / 2))) {
    auto plan = std::make_shared<FaultPlan>();
    spec.arm(*plan, n);
    Run run = execute(w, work, base, plan);
    {
      std::lock_guard lock(j.mu);
      ++j.report.kinds[spec.kind].runs;
      if (plan->injected == 0) continue;  // the operation was not reached in this run
      if (run.failed_step == SIZE_MAX)
        j.report.failures.push_back(fmt::format("{} #{}: the injected failure was not reported", fault_kind_name(spec.kind), n));
      else if (run.error.find("then reported success") != std::string::npos)
        j.report.failures.push_back(fmt::format("{} #{}: {}", fault_kind_name(spec.kind), n, run.error));
    }
    const WriteLog& log = *run.log;
    const std::string label = fmt::format("{} #{} (step {})", fault_kind_name(spec.kind), n, run.failed_step);
    auto [k, m] = allowed_states(run, log.size(), durable_prefix(log, log.size()));
    j.submit({replayed(base, log, log.size(), qcow::kProcessKill), k, m, spec.kind, label + ", file as left"});
    if (log.size() > durable_prefix(log, log.size())) {
      auto [pk, pm] = allowed_states(run, log.size(), durable_prefix(log, log.size()));
      j.submit({replayed(base, log, log.size(), qcow::kPowerCutTorn(n + 17)), pk, pm, spec.kind,
                label + ", then a power cut"});
    }
  }
}

}  // namespace

Report run_workload(const Workload& w, const Options& o) {
  Report report;
  report.workload = w.name;
  ScratchDir scratch("qimg-crash-" + w.name);
  const std::string base_path = w.prepare(scratch.path);
  const Bytes base_file = read_file(base_path);
  const std::string work = scratch.path + "/work.qcow2";

  // What qemu-img reads from the base image: the model's start, and the snapshots to keep.
  std::string out;
  const std::string base_raw = scratch.path + "/base.raw";
  if (run_tool({"qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", base_path, base_raw}, &out) != 0)
    throw std::runtime_error("qemu-img convert of the base image failed: " + out);
  const Content base_content = Content::load_raw(base_raw);
  Content result = base_content;
  if (!w.operation_result.empty()) {
    const std::string image = scratch.path + "/" + w.operation_result, raw = scratch.path + "/result.raw";
    if (run_tool({"qemu-img", "convert", "-U", "-O", "raw", image, raw}, &out) != 0)
      throw std::runtime_error("qemu-img convert of " + image + " failed: " + out);
    result = Content::load_raw(raw);
  }
  const uint64_t cluster_size = image_cluster_size(base_file);
  std::map<std::string, Content> base_snapshots;
  for (const std::string& name : w.snapshots) {
    if (run_tool({"qemu-img", "convert", "-U", "-f", "qcow2", "-l", "snapshot.name=" + name, "-O", "raw", base_path, base_raw},
                 &out) != 0)
      throw std::runtime_error("qemu-img convert -l of the base image failed: " + out);
    base_snapshots[name] = Content::load_raw(base_raw);
  }
  const Model model = build_model(w, base_content, result, base_snapshots, cluster_size);

  Judge j(w, o, model, scratch.path, report);
  if (w.verdict == Verdict::kRepairable) j.base_corruptions = qemu_check(base_path).corruptions;

  // The recorded run must succeed and leave what the model says.
  Run rec = execute(w, work, base_file, nullptr);
  if (rec.failed_step != SIZE_MAX)
    throw std::runtime_error(fmt::format("the workload failed at step {}: {}", rec.failed_step, rec.error));
  report.ops = rec.log->size();
  report.flushes = rec.log->flush_count();
  // Operation counts of a clean run, for spreading the injected faults.
  auto counting = std::make_shared<FaultPlan>();
  execute(w, work, base_file, counting);

  std::vector<std::thread> workers;
  for (unsigned i = 0; i < std::max(1u, o.jobs); ++i) workers.emplace_back([&] { j.worker(); });
  try {
    // The complete run itself, then the budget: a quarter process kills, a fifth each
    // reordered and torn power cuts, the rest over the injected faults.
    auto [k, m] = allowed_states(rec, rec.log->size(), rec.log->size());
    j.submit({replayed(base_file, *rec.log, rec.log->size(), qcow::kProcessKill), k, m, FaultKind::kProcessKill,
              "complete run"});
    const size_t n = std::max<size_t>(o.states, 20);
    kill_states(j, base_file, rec, n / 4);
    power_states(j, base_file, rec, n / 5, FaultKind::kPowerCut, 0, "");
    power_states(j, base_file, rec, n / 5, FaultKind::kTorn, 7, "");
    const auto specs = fault_specs();
    const size_t per_fault = (n - n / 4 - 2 * (n / 5)) / specs.size();
    for (const FaultSpec& spec : specs)
      fault_states(j, w, work, base_file, spec, (*counting).*spec.counter, per_fault);
  } catch (...) {
    {
      std::lock_guard lock(j.mu);
      j.done = true;
    }
    j.cv.notify_all();
    for (auto& t : workers) t.join();
    throw;
  }
  {
    std::lock_guard lock(j.mu);
    j.done = true;
  }
  j.cv.notify_all();
  for (auto& t : workers) t.join();
  return report;
}

}  // namespace crash
