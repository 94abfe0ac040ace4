// qimg bench: qemu-img bench compatible mode and copy-on-write scenarios
// (SPEC section 8); see man/qimg.1.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct BenchOptions {
  // qemu-img bench options.
  std::string count;                   // -c, --count (default 75000; scenarios: see man page)
  std::string depth = "64";            // -d
  std::string format;                  // -f (empty: probe)
  std::string flush_interval;          // --flush-interval
  bool native_aio = false;             // -n (accepted; I/O is synchronous)
  std::string aio;                     // -i threads|native|io_uring
  bool no_drain = false;               // --no-drain
  std::vector<std::string> o;          // -o: start offset, or create options in scenario mode
  std::optional<std::string> pattern;  // --pattern
  bool quiet = false;                  // -q (qemu-img bench prints its lines anyway)
  std::string buffer_size;             // -s
  std::string step;                    // -S
  std::string cache;                   // -t
  bool write = false;                  // -w
  bool force_share = false;            // -U
  std::string filename;

  // Scenario mode.
  std::string scenario;                // --scenario interleave|cow-backing|alloc|partial|rewrite
  std::string matrix;                  // --matrix 'key=v1,v2;key2=...'
  std::string dir;                     // --dir (default: a fresh directory under $TMPDIR)
  bool keep = false;                   // --keep
  std::string size;                    // --size (virtual disk size)
  std::string block_size;              // --block-size
  std::string seed;                    // --seed
  std::string baseline;                // --baseline raw
  std::string alloc;                   // --alloc reserve|default
  std::string output = "human";        // --output human|json|csv
  std::string plot;                    // --plot FILE.svg
};

void register_bench(CLI::App& app, std::shared_ptr<BenchOptions> options);
int run_bench(const BenchOptions& options);

}  // namespace qimg
