// qimg bench scenarios (SPEC section 8): each configuration creates its image
// in the scratch directory, prepares it (backing file, pre-written data), then
// runs the measured phases through a CountingFile under the library.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "cli/options.hpp"
#include "commands/bench_scenarios.hpp"

namespace qimg {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint64_t kFillChunk = 1 << 20;   // preparation writes and interleave reads
constexpr uint64_t kInterleaveBlock = 4096;

// A 4 KiB-aligned buffer (O_DIRECT passes it through without bouncing) with
// non-zero content, so nothing is mistaken for a zero write.
struct Buffer {
  explicit Buffer(uint64_t len)
      : data(static_cast<uint8_t*>(std::aligned_alloc(4096, std::max<uint64_t>(4096, (len + 4095) & ~4095ULL))),
             &std::free),
        size(len) {
    for (uint64_t i = 0; i < len; ++i) data.get()[i] = uint8_t(0x5a + i * 7);
  }
  std::span<uint8_t> span() { return {data.get(), size}; }
  std::unique_ptr<uint8_t, void (*)(void*)> data;
  uint64_t size;
};

const char* prealloc_name(qcow::Preallocation p) {
  switch (p) {
    case qcow::Preallocation::kOff: return "off";
    case qcow::Preallocation::kMetadata: return "metadata";
    case qcow::Preallocation::kFalloc: return "falloc";
    case qcow::Preallocation::kFull: return "full";
  }
  return "off";
}

// Writes the whole disk once, sequentially (not measured).
qcow::Status fill_image(const std::string& path, qcow::Format format, uint64_t size) {
  qcow::OpenOptions oo;
  oo.format = format;
  oo.writable = true;
  QCOW_ASSIGN_OR_RETURN(qcow::Image img, qcow::Image::open(path, oo));
  Buffer buf(kFillChunk);
  for (uint64_t off = 0; off < size; off += kFillChunk) {
    QCOW_TRY(img.write(off, buf.span().first(std::min(kFillChunk, size - off))));
  }
  return img.close();
}

qcow::Result<std::string> ensure_backing(const ScenarioParams& p) {
  std::string path = p.dir + "/backing.raw";
  if (host_file_stats(path).size == p.size) return path;
  qcow::CreateOptions co;
  co.format = qcow::Format::kRaw;
  co.size = p.size;
  QCOW_TRY(qcow::Image::create(path, co));
  QCOW_TRY(fill_image(path, qcow::Format::kRaw, p.size));
  drop_page_cache(path);
  return path;
}

// The measured handle and what the phases share.
struct Session {
  const ScenarioParams& p;
  std::string path;
  qcow::Format format;
  KeyValues options;
  RunConfig config;
  std::shared_ptr<qcow::IoCounters> counters = std::make_shared<qcow::IoCounters>();
  std::optional<qcow::Image> image;
  qcow::OverlapCheck overlap_check = qcow::OverlapCheck::kCached;

  qcow::Status open(bool writable) {
    qcow::OpenOptions oo;
    oo.format = format;
    oo.writable = writable;
    oo.overlap_check = overlap_check;
    oo.cache = p.cache;
    oo.alloc = p.alloc;
    auto counters_copy = counters;
    oo.wrap_file = [counters_copy](std::unique_ptr<qcow::File> f) -> std::unique_ptr<qcow::File> {
      return std::make_unique<qcow::CountingFile>(std::move(f), counters_copy);
    };
    QCOW_ASSIGN_OR_RETURN(qcow::Image img, qcow::Image::open(path, oo));
    image.emplace(std::move(img));
    return qcow::Status::ok();
  }
  qcow::Status close() {
    qcow::Status s = image ? image->close() : qcow::Status::ok();
    image.reset();
    return s;
  }

  // Runs `requests` requests of `len` bytes at offset_of(i) and measures them.
  template <class OffsetFn>
  qcow::Result<RunResult> phase(const std::string& name, bool write, uint64_t requests, uint64_t len,
                                OffsetFn offset_of) {
    Buffer buf(len);
    RunResult r;
    r.config = config;
    r.options = options;
    r.phase = name;
    r.requests = requests;
    r.request_size = len;
    const qcow::IoCounters before = *counters;
    const qcow::CacheStats cache_before = image->cache_stats();
    const auto start = Clock::now();
    for (uint64_t i = 0; i < requests; ++i) {
      uint64_t off = offset_of(i);
      if (write) {
        QCOW_TRY(image->write(off, buf.span()));
        if (p.sync_each_write) QCOW_TRY(image->flush());
      } else {
        QCOW_TRY(image->read(off, buf.span()));
      }
    }
    if (write && p.final_flush) QCOW_TRY(image->flush());
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    const qcow::IoCounters& after = *counters;
    r.io.reads = after.reads - before.reads;
    r.io.writes = after.writes - before.writes;
    r.io.flushes = after.flushes - before.flushes;
    r.io.fallocates = after.fallocates - before.fallocates;
    r.io.bytes_read = after.bytes_read - before.bytes_read;
    r.io.bytes_written = after.bytes_written - before.bytes_written;
    (write ? r.guest_bytes_written : r.guest_bytes_read) = requests * len;
    const qcow::CacheStats cache_after = image->cache_stats();
    r.l2_cache_hits = cache_after.l2_hits - cache_before.l2_hits;
    r.l2_cache_misses = cache_after.l2_misses - cache_before.l2_misses;
    HostFileStats hs = host_file_stats(path);
    r.image_file_size = hs.size;
    r.image_allocated_bytes = hs.allocated_bytes;
    r.host_extents = hs.extents;
    if (!hs.extents_supported) {
      static bool noted = false;
      if (!noted) std::fprintf(stderr, "qimg: note: FIEMAP is not supported here; host_extents reads 0\n");
      noted = true;
    }
    return r;
  }
};

RunResult skipped(const RunConfig& c, KeyValues options, std::string reason) {
  RunResult r;
  r.config = c;
  r.options = std::move(options);
  r.skipped = true;
  r.skip_reason = std::move(reason);
  return r;
}

}  // namespace

double RunResult::mib_per_sec() const {
  return seconds > 0 ? double(requests * request_size) / seconds / (1024.0 * 1024.0) : 0;
}

double RunResult::write_amplification() const {
  return guest_bytes_written ? double(io.bytes_written) / double(guest_bytes_written) : 0;
}

std::vector<RunConfig> expand_matrix(const ScenarioParams& p) {
  std::vector<RunConfig> out(1);
  for (const auto& [key, values] : p.matrix) {
    std::vector<RunConfig> next;
    for (const RunConfig& c : out) {
      for (const std::string& v : values) {
        RunConfig n = c;
        n.matrix_values.emplace_back(key, v);
        n.label += (n.label.empty() ? "" : " ") + key + "=" + v;
        next.push_back(std::move(n));
      }
    }
    out = std::move(next);
  }
  if (out.size() == 1 && out[0].label.empty()) out[0].label = "qcow2";
  if (p.baseline_raw) {
    out.push_back({{}, "sparse", "raw (sparse)"});
    out.push_back({{}, "full", "raw (full)"});
  }
  return out;
}

qcow::Result<std::vector<RunResult>> run_configuration(const ScenarioParams& p, const RunConfig& c) {
  static int serial = 0;
  const bool raw = !c.raw.empty();
  Session s{p, fmt::format("{}/{}-{}.{}", p.dir, p.scenario, serial++, raw ? "raw" : "qcow2"),
            raw ? qcow::Format::kRaw : qcow::Format::kQcow2, {}, c, std::make_shared<qcow::IoCounters>(), {}};

  // Create options: -o items and the matrix values (a raw baseline takes none of them).
  OptionList list;
  if (raw) {
    list.items.push_back({"preallocation", c.raw == "full" ? "full" : "off"});
  } else {
    for (const auto& [k, v] : p.base_options) list.items.push_back({k, v});
    for (const auto& [k, v] : c.matrix_values) list.items.push_back({k, v});
  }
  s.options.emplace_back("format", raw ? "raw" : "qcow2");
  for (const auto& item : list.items) s.options.emplace_back(item.key, item.value);
  s.options.emplace_back("cache", p.cache_name);
  s.options.emplace_back("alloc", p.alloc == qcow::AllocPolicy::kReserve ? "reserve" : "default");
  if (p.scenario == "cow-backing" && !raw) {
    QCOW_ASSIGN_OR_RETURN(std::string backing, ensure_backing(p));
    list.items.push_back({"backing_file", backing});
    list.items.push_back({"backing_fmt", "raw"});
  }
  // overlap-check is an open option (QEMU's runtime option), not a creation option.
  for (auto it = list.items.begin(); it != list.items.end();) {
    if (it->key != "overlap-check") {
      ++it;
      continue;
    }
    auto level = qcow::parse_overlap_check(it->value);
    if (!level)
      return std::vector<RunResult>{skipped(c, s.options, fmt::format("Unsupported value '{}' for qcow2 option "
                                                                      "'overlap-check'", it->value))};
    s.overlap_check = *level;
    it = list.items.erase(it);
  }
  CreateSpec spec;
  if (qcow::Status st = parse_create_options(list, s.format, &spec); !st) {
    return std::vector<RunResult>{skipped(c, s.options, st.message())};
  }
  spec.size = p.size;
  if (qcow::Status st = validate_create_options(&spec); !st) {
    return std::vector<RunResult>{skipped(c, s.options, st.message())};
  }
  // Report the effective layout even where it was left at its default.
  if (!raw) {
    KeyValues effective{{"format", "qcow2"},
                        {"cluster_size", std::to_string(spec.options.cluster_size)},
                        {"extended_l2", spec.options.extended_l2 ? "on" : "off"},
                        {"preallocation", prealloc_name(spec.options.preallocation)}};
    for (const auto& kv : s.options) {
      bool known = false;
      for (const auto& e : effective) known |= e.first == kv.first;
      if (!known) effective.push_back(kv);
    }
    s.options = std::move(effective);
  }
  QCOW_TRY(qcow::Image::create(s.path, spec.options));
  if (p.scenario == "rewrite") QCOW_TRY(fill_image(s.path, s.format, p.size));
  // Start every configuration alike: what creation and preparation wrote is on the
  // device, not dirty in the page cache waiting for the measured phase's flush.
  drop_page_cache(s.path);

  std::vector<RunResult> runs;
  QCOW_TRY(s.open(true));
  const uint64_t bs = p.block_size;
  if (p.scenario == "interleave") {
    const uint64_t half = p.size / kInterleaveBlock / 2;
    for (uint64_t parity = 0; parity < 2; ++parity) {
      QCOW_ASSIGN_OR_RETURN(RunResult r, s.phase(parity ? "write-odd" : "write-even", true, half, kInterleaveBlock,
                                                  [&](uint64_t i) { return (2 * i + parity) * kInterleaveBlock; }));
      runs.push_back(std::move(r));
    }
    // Read back later, from the device: a fresh handle, nothing in the page cache.
    QCOW_TRY(s.close());
    drop_page_cache(s.path);
    QCOW_TRY(s.open(false));
    const uint64_t chunk = std::min(kFillChunk, p.size);
    QCOW_ASSIGN_OR_RETURN(RunResult r,
                          s.phase("read", false, p.size / chunk, chunk, [&](uint64_t i) { return i * chunk; }));
    runs.push_back(std::move(r));
  } else if (p.scenario == "partial") {
    const uint64_t start = (bs / 2) & ~uint64_t(511);
    const uint64_t n = std::min(p.count, (p.size - start) / bs);
    QCOW_ASSIGN_OR_RETURN(RunResult r, s.phase("write", true, n, bs, [&](uint64_t i) { return start + i * bs; }));
    runs.push_back(std::move(r));
  } else {  // cow-backing, alloc, rewrite: random writes
    std::vector<uint64_t> blocks = random_blocks(p.size / bs, p.count, p.seed);
    QCOW_ASSIGN_OR_RETURN(RunResult r,
                          s.phase("write", true, blocks.size(), bs, [&](uint64_t i) { return blocks[i] * bs; }));
    runs.push_back(std::move(r));
  }
  QCOW_TRY(s.close());
  return runs;
}

}  // namespace qimg
