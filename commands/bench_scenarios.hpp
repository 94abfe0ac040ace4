// Scenario mode of qimg bench: the runs, their measurements, and the reports.
// Internal to commands/bench*.cpp.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "qcow/file.hpp"
#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qimg {

// key=value pairs in command-line order (a run's create/open options).
using KeyValues = std::vector<std::pair<std::string, std::string>>;

struct ScenarioParams {
  std::string scenario;
  std::string dir;                      // scratch directory (exists)
  uint64_t size = 0;                    // virtual disk size
  uint64_t block_size = 0;              // request size of the write phases
  uint64_t count = 0;                   // requests of the random/partial phases
  uint64_t seed = 1;
  std::string cache_name = "writeback";
  qcow::CacheMode cache = qcow::CacheMode::kWriteback;
  bool sync_each_write = false;         // directsync: flush after every write
  bool final_flush = true;              // unsafe: never flush
  qcow::AllocPolicy alloc = qcow::AllocPolicy::kDefault;
  KeyValues base_options;               // -o items
  std::vector<std::pair<std::string, std::vector<std::string>>> matrix;
  bool baseline_raw = false;
};

// One configuration of the sweep: the matrix values it takes, and whether it
// is a raw baseline ("raw sparse" or "raw full").
struct RunConfig {
  KeyValues matrix_values;
  std::string raw;                      // "", "sparse" or "full"
  std::string label;                    // "cluster_size=64k extended_l2=on" / "raw (sparse)"
};

struct RunResult {
  RunConfig config;
  KeyValues options;                    // what JSON prints under "options"
  std::string phase;
  uint64_t requests = 0, request_size = 0;
  double seconds = 0;
  uint64_t guest_bytes_written = 0, guest_bytes_read = 0;
  qcow::IoCounters io;
  uint64_t image_file_size = 0, image_allocated_bytes = 0, host_extents = 0;
  uint64_t l2_cache_hits = 0, l2_cache_misses = 0;
  bool skipped = false;                 // configuration rejected (reason in skip_reason)
  std::string skip_reason;

  double ops_per_sec() const { return seconds > 0 ? double(requests) / seconds : 0; }
  double mib_per_sec() const;
  double write_amplification() const;
  double calls_per_request(uint64_t calls) const { return requests ? double(calls) / double(requests) : 0; }
};

// Every configuration of the sweep, baselines last.
std::vector<RunConfig> expand_matrix(const ScenarioParams& p);

// Runs one configuration (all its phases). A configuration the create options
// reject comes back as one skipped result; I/O errors are returned.
qcow::Result<std::vector<RunResult>> run_configuration(const ScenarioParams& p, const RunConfig& c);

// Reports (bench_report.cpp).
std::string report_human(const ScenarioParams& p, const std::vector<RunResult>& runs);
std::string report_json(const ScenarioParams& p, const std::vector<RunResult>& runs);
std::string report_csv(const std::vector<RunResult>& runs);
std::string report_svg(const ScenarioParams& p, const std::vector<RunResult>& runs);

// Host-side helpers (bench_host.cpp).
struct HostFileStats {
  uint64_t size = 0, allocated_bytes = 0, extents = 0;
  bool extents_supported = true;
};
HostFileStats host_file_stats(const std::string& path);
// fdatasync + POSIX_FADV_DONTNEED: the next reads come from the device.
void drop_page_cache(const std::string& path);

// splitmix64: small, and easy to reproduce in bench/cow-vs-qemu.sh.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

 private:
  uint64_t state_;
};

// The block indexes of `count` random requests over `blocks` blocks: a partial
// Fisher-Yates shuffle (distinct blocks, repeating the sequence when count >
// blocks) when blocks <= 2^24, plain random draws otherwise.
std::vector<uint64_t> random_blocks(uint64_t blocks, uint64_t count, uint64_t seed);

}  // namespace qimg
