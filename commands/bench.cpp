// qimg bench: the qemu-img bench compatible mode (sequential requests at a
// stride, -d requests in flight) and the entry of scenario mode.
#include "commands/bench.hpp"

#include <stdlib.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/output.hpp"
#include "commands/bench_scenarios.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_bench(CLI::App& app, std::shared_ptr<BenchOptions> o) {
  app.add_option("-c,--count", o->count, "Number of requests (default 75000; scenarios 16384)");
  app.add_option("-d", o->depth, "Requests in parallel (default 64)");
  app.add_option("-f", o->format, "Image format (default: probe)");
  app.add_option("--flush-interval", o->flush_interval, "Flush every N requests (write tests)");
  app.add_flag("-n", o->native_aio, "Native AIO (needs -t none or directsync; I/O is synchronous anyway)");
  app.add_option("-i", o->aio, "AIO mode: threads, native or io_uring");
  app.add_flag("--no-drain", o->no_drain, "Flush without draining the queue");
  app.add_option("-o", o->o, "Start offset; in scenario mode image options key=value[,...]")
      ->allow_extra_args(false);
  app.add_option("--pattern", o->pattern, "Byte written by write tests (default 0)");
  app.add_flag("-q", o->quiet, "Quiet (accepted; like qemu-img bench, the result is still printed)");
  app.add_option("-s", o->buffer_size, "Request size (default 4k)");
  app.add_option("-S", o->step, "Step between request offsets (default: request size)");
  app.add_option("-t", o->cache, "Cache mode: none, writeback, writethrough, directsync, unsafe");
  app.add_flag("-w", o->write, "Write test (default: read)");
  app.add_flag("-U,--force-share", o->force_share, "Open read-only without taking the lock");
  app.add_option("--scenario", o->scenario, "Scenario: interleave, cow-backing, alloc, partial, rewrite");
  app.add_option("--matrix", o->matrix, "Sweep image options: 'key=v1,v2;key2=v1,v2'");
  app.add_option("--dir", o->dir, "Scratch directory parent (default $TMPDIR or /tmp)");
  app.add_flag("--keep", o->keep, "Keep the scenario images");
  app.add_option("--size", o->size, "Virtual disk size of the scenario images (default 1G)");
  app.add_option("--block-size", o->block_size, "Request size of the scenario writes (default 4k)");
  app.add_option("--seed", o->seed, "Seed of the random offsets (default 1)");
  app.add_option("--baseline", o->baseline, "Also run the pattern on raw files: raw");
  app.add_option("--alloc", o->alloc, "Host cluster allocation: default or reserve");
  app.add_option("--output", o->output, "Output format: human, json or csv (scenarios)");
  app.add_option("--plot", o->plot, "Write an SVG bar chart of the scenario runs");
  app.add_option("filename", o->filename, "Image file (qemu-img bench mode)");
}

namespace {

std::optional<uint64_t> parse_uint(const std::string& text, uint64_t max) {
  if (text.empty() || text.size() > 20 || !std::all_of(text.begin(), text.end(), ::isdigit)) return std::nullopt;
  uint64_t v = std::strtoull(text.c_str(), nullptr, 10);
  if (v > max) return std::nullopt;
  return v;
}

// qemu-img's --pattern: qemu_strtoul() in base 0 (decimal, 0x hex, 0 octal; leading
// blanks and a sign as strtoul takes them), the whole string, at most 0xff.
std::optional<uint64_t> parse_pattern_byte(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  errno = 0;
  unsigned long v = std::strtoul(begin, &end, 0);
  if (errno == ERANGE) v = ULONG_MAX;
  if (end == begin || *end != '\0' || v > 0xff) return std::nullopt;
  return v;
}

// Reads requests first + k*threads, wrapping at the end of the disk like qemu-img bench.
qcow::Status read_worker(qcow::Image& img, uint64_t count, uint64_t first, uint64_t stride_requests,
                         const std::vector<uint64_t>& offsets, uint64_t len) {
  std::vector<uint8_t> buf(len);
  for (uint64_t i = first; i < count; i += stride_requests) QCOW_TRY(img.read(offsets[i], buf));
  return qcow::Status::ok();
}

// qemu-img bench's parameters, parsed and checked in its order and with its messages.
struct QemuBench {
  uint64_t count = 75000, depth = 64, offset = 0, bufsize = 4096, step = 0, flush_interval = 0, pattern = 0;
  CacheChoice cache;
};

qcow::Status parse_qemu_bench(const BenchOptions& o, QemuBench* b) {
  std::string error;
  auto size = [&](const char* what, const std::string& text, uint64_t max, uint64_t* out) -> qcow::Status {
    auto v = parse_size_arg(what, text, 0, max, &error);
    if (!v) return qcow::Status::invalid(error);
    *out = *v;
    return qcow::Status::ok();
  };
  auto number = [&](const std::string& text, const char* message, uint64_t* out) -> qcow::Status {
    auto v = parse_uint(text, INT_MAX);
    if (!v) return qcow::Status::invalid(message);
    *out = *v;
    return qcow::Status::ok();
  };
  if (!o.count.empty()) QCOW_TRY(number(o.count, "Invalid request count specified", &b->count));
  QCOW_TRY(number(o.depth, "Invalid queue depth specified", &b->depth));
  if (b->depth < 1) return qcow::Status::invalid("Invalid queue depth specified");
  if (!parse_cache(o.cache, &b->cache)) return qcow::Status::invalid("Invalid cache mode");
  if (!o.aio.empty() && o.aio != "threads" && o.aio != "native" && o.aio != "io_uring")
    return qcow::Status::invalid(fmt::format("Invalid aio option: {}", o.aio));
  if (!o.o.empty()) QCOW_TRY(size("offset", o.o.back(), kInt64Max, &b->offset));
  if (o.pattern) {
    auto v = parse_pattern_byte(*o.pattern);
    if (!v) return qcow::Status::invalid("Invalid pattern byte specified");
    b->pattern = *v;
  }
  if (!o.buffer_size.empty()) QCOW_TRY(size("buffer size", o.buffer_size, INT_MAX, &b->bufsize));
  if (!o.step.empty()) QCOW_TRY(size("step_size", o.step, INT_MAX, &b->step));
  if (!o.flush_interval.empty()) QCOW_TRY(number(o.flush_interval, "Invalid flush interval specified", &b->flush_interval));
  if (o.filename.empty()) return qcow::Status::invalid("Expecting one image file name");
  if (b->flush_interval && !o.write) return qcow::Status::invalid("--flush-interval is only available in write tests");
  if (b->flush_interval && b->flush_interval < b->depth)
    return qcow::Status::invalid("Flush interval can't be smaller than depth");
  if ((o.native_aio || o.aio == "native") && !b->cache.direct)
    return qcow::Status::invalid(fmt::format("Could not open '{}': aio=native was specified, but it requires "
                                             "cache.direct=on, which was not specified.", o.filename));
  if (b->step == 0) b->step = b->bufsize;
  return qcow::Status::ok();
}

// The requests themselves: writes on one handle; reads with depth > 1 on threads, each
// with its own read-only handle.
qcow::Status send_requests(const BenchOptions& o, const QemuBench& b, const qcow::OpenOptions& oo, qcow::Image& image,
                           const std::vector<uint64_t>& offsets) {
  const uint64_t threads = o.write ? 1 : std::min<uint64_t>({b.depth, 8, std::max<uint64_t>(b.count, 1)});
  std::vector<qcow::Image> extra;
  for (uint64_t t = 1; t < threads; ++t) {
    auto h = qcow::Image::open(o.filename, oo);
    if (!h) return h.status().prepend(fmt::format("Could not open '{}': ", o.filename));
    extra.push_back(std::move(*h));
  }
  qcow::Status status;
  if (o.write) {
    std::vector<uint8_t> buf(b.bufsize, uint8_t(b.pattern));
    for (uint64_t i = 0; i < b.count && status; ++i) {
      if (b.flush_interval && i > 0 && (b.count - i) % b.flush_interval == 0 && b.cache.flush) status = image.flush();
      if (status) status = image.write(offsets[i], buf);
      if (status && b.cache.sync_each_write) status = image.flush();
    }
  } else if (threads <= 1) {
    status = read_worker(image, b.count, 0, 1, offsets, b.bufsize);
  } else {
    std::vector<qcow::Status> results(threads);
    std::vector<std::thread> workers;
    for (uint64_t t = 0; t < threads; ++t) {
      qcow::Image& img = t == 0 ? image : extra[t - 1];
      workers.emplace_back([&, t, &img = img] { results[t] = read_worker(img, b.count, t, threads, offsets, b.bufsize); });
    }
    for (auto& w : workers) w.join();
    for (const auto& r : results)
      if (!r && status) status = r;
  }
  for (auto& h : extra) (void)h.close();
  if (!status) return status.prepend("Failed request: ");
  return status;
}

int run_qemu_mode(const BenchOptions& o) {
  QemuBench b;
  if (qcow::Status s = parse_qemu_bench(o, &b); !s) return fail(s);
  qcow::OpenOptions oo;
  if (qcow::Status s = parse_format_option(o.format, &oo.format); !s) return fail(s);
  oo.writable = o.write;
  oo.force_share = o.force_share;
  oo.cache = b.cache.mode;
  auto image = qcow::Image::open(o.filename, oo);
  if (!image) return fail(fmt::format("Could not open '{}': {}", o.filename, image.status().message()));
  const uint64_t disk = image->size();

  // Request offsets as qemu-img bench computes them: start, then += step modulo the disk size.
  std::vector<uint64_t> offsets(b.count);
  for (uint64_t i = 0, off = b.offset; i < b.count; ++i) {
    offsets[i] = off;
    off += b.step;
    off = disk ? off % disk : 0;
  }
  std::printf("Sending %llu %s requests, %llu bytes each, %llu in parallel (starting at offset %llu, step size %llu)\n",
              (unsigned long long)b.count, o.write ? "write" : "read", (unsigned long long)b.bufsize,
              (unsigned long long)b.depth, (unsigned long long)b.offset, (unsigned long long)b.step);
  if (b.flush_interval) std::printf("Sending flush every %llu requests\n", (unsigned long long)b.flush_interval);
  std::fflush(stdout);
  for (uint64_t off : offsets)
    if (off > disk || b.bufsize > disk - off) return fail("Failed request: Input/output error");

  const auto start = std::chrono::steady_clock::now();
  qcow::Status status = send_requests(o, b, oo, *image, offsets);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!status) return fail(status);
  std::printf("Run completed in %3.3f seconds.\n", seconds);
  if (qcow::Status s = image->close(); !s) return fail(s);
  return 0;
}

qcow::Status parse_matrix(const std::string& text, ScenarioParams* p) {
  size_t pos = 0;
  while (pos <= text.size() && !text.empty()) {
    size_t end = text.find(';', pos);
    std::string item = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == item.size()) {
      return qcow::Status::invalid(fmt::format("Invalid --matrix item '{}': expected key=value[,value...]", item));
    }
    std::vector<std::string> values;
    std::string rest = item.substr(eq + 1);
    for (size_t b = 0;;) {
      size_t c = rest.find(',', b);
      values.push_back(rest.substr(b, c == std::string::npos ? std::string::npos : c - b));
      if (c == std::string::npos) break;
      b = c + 1;
    }
    p->matrix.emplace_back(item.substr(0, eq), values);
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return qcow::Status::ok();
}

int run_scenario_mode(const BenchOptions& o) {
  static const char* const kScenarios[] = {"interleave", "cow-backing", "alloc", "partial", "rewrite"};
  ScenarioParams p;
  p.scenario = o.scenario;
  if (std::find(std::begin(kScenarios), std::end(kScenarios), o.scenario) == std::end(kScenarios)) {
    return fail(fmt::format("Unknown scenario '{}' (expected interleave, cow-backing, alloc, partial or rewrite)",
                            o.scenario));
  }
  if (!o.filename.empty()) return fail("--scenario creates its own images and takes no image file name");
  OptionList list;
  if (qcow::Status s = parse_option_list(o.o, &list); !s) return fail(s);
  if (list.help) {
    print_create_help(qcow::Format::kQcow2);
    return 0;
  }
  for (const auto& item : list.items) p.base_options.emplace_back(item.key, item.value);
  if (qcow::Status s = parse_matrix(o.matrix, &p); !s) return fail(s);
  std::string error;
  auto size = parse_size_arg("size", o.size.empty() ? "1G" : o.size, 1 << 20, kInt64Max, &error);
  if (!size) return fail(error);
  auto bs = parse_size_arg("block size", o.block_size.empty() ? "4k" : o.block_size, 512, 64 << 20, &error);
  if (!bs) return fail(error);
  if (*bs % 512) return fail("Invalid block size specified. Must be a multiple of 512.");
  p.size = *size / *bs * *bs;
  p.block_size = *bs;
  auto count = parse_uint(o.count.empty() ? "16384" : o.count, UINT32_MAX);
  if (!count) return fail("Invalid request count specified");
  p.count = *count;
  auto seed = parse_uint(o.seed.empty() ? "1" : o.seed, UINT64_MAX);
  if (!seed) return fail("Invalid seed specified");
  p.seed = *seed;
  CacheChoice cache;
  if (!parse_cache(o.cache, &cache)) return fail("Invalid cache mode");
  p.cache_name = cache.name;
  p.cache = cache.mode;
  p.sync_each_write = cache.sync_each_write;
  p.final_flush = cache.flush;
  if (o.alloc == "reserve") p.alloc = qcow::AllocPolicy::kReserve;
  else if (!o.alloc.empty() && o.alloc != "default") return fail(fmt::format("Invalid --alloc '{}' (expected default or reserve)", o.alloc));
  if (o.baseline == "raw") p.baseline_raw = true;
  else if (!o.baseline.empty()) return fail(fmt::format("Invalid --baseline '{}' (expected raw)", o.baseline));
  if (o.output != "human" && o.output != "json" && o.output != "csv") {
    return fail(fmt::format("--output must be human, json or csv, not '{}'", o.output));
  }

  // A fresh scratch directory under --dir, removed afterwards unless --keep.
  std::string parent = o.dir;
  if (parent.empty()) parent = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  std::string templ = parent + "/qimg-bench-XXXXXX";
  if (!mkdtemp(templ.data())) return fail(fmt::format("{}: cannot create a scratch directory: {}", parent, strerror(errno)));
  p.dir = templ;
  struct Cleanup {
    std::string dir;
    bool keep;
    ~Cleanup() {
      if (keep) {
        std::fprintf(stderr, "qimg: images kept in %s\n", dir.c_str());
      } else {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
    }
  } cleanup{p.dir, o.keep};

  std::vector<RunResult> runs;
  std::string first_skip;
  for (const RunConfig& c : expand_matrix(p)) {
    auto r = run_configuration(p, c);
    if (!r) return fail(fmt::format("{}: {}", c.label, r.status().message()));
    for (RunResult& run : *r) {
      if (run.skipped) {
        std::fprintf(stderr, "qimg: note: skipping %s: %s\n", c.label.c_str(), run.skip_reason.c_str());
        if (first_skip.empty()) first_skip = c.label + ": " + run.skip_reason;
        continue;
      }
      runs.push_back(std::move(run));
    }
  }
  if (runs.empty()) return fail(first_skip.empty() ? "no configuration to run" : first_skip);

  std::string text = o.output == "json" ? report_json(p, runs) : o.output == "csv" ? report_csv(runs)
                                                                                    : report_human(p, runs);
  std::fputs(text.c_str(), stdout);
  if (!o.plot.empty()) {
    std::FILE* f = std::fopen(o.plot.c_str(), "w");
    if (!f) return fail(fmt::format("{}: {}", o.plot, strerror(errno)));
    std::string svg = report_svg(p, runs);
    bool ok = std::fwrite(svg.data(), 1, svg.size(), f) == svg.size();
    ok = std::fclose(f) == 0 && ok;
    if (!ok) return fail(fmt::format("{}: write failed", o.plot));
  }
  return 0;
}

}  // namespace

int run_bench(const BenchOptions& o) {
  if (!o.scenario.empty()) return run_scenario_mode(o);
  for (const auto* opt : {&o.matrix, &o.size, &o.block_size, &o.seed, &o.baseline, &o.alloc, &o.plot, &o.dir}) {
    if (!opt->empty()) return fail("--matrix, --size, --block-size, --seed, --baseline, --alloc, --dir and --plot "
                                   "need --scenario");
  }
  if (o.keep || o.output != "human") return fail("--keep and --output need --scenario");
  return run_qemu_mode(o);
}

}  // namespace qimg
