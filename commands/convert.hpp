// qimg convert: see man/qimg.1.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct ConvertOptions {
  std::string source_format;              // -f (empty: probe)
  std::string output_format;              // -O (empty: raw, or probe with -n)
  std::vector<std::string> options;       // -o, accumulated
  bool compress = false;                  // -c
  bool progress = false;                  // -p
  bool quiet = false;                     // -q
  bool no_create = false;                 // -n: write into an existing image
  std::string sparse_size = "4k";         // -S
  bool force_share = false;               // -U
  bool target_is_zero = false;            // --target-is-zero (needs -n)
  std::string backing_file;               // -B (not supported yet)
  std::string backing_format;             // -F (not supported yet)
  std::string snapshot_l;                 // -l (not supported yet)
  std::string snapshot_s;                 // -s (not supported yet)
  int coroutines = 8;                     // -m (accepted, ignored)
  bool out_of_order = false;              // -W (accepted, ignored)
  std::vector<std::string> files;         // SRC... DEST
};

void register_convert(CLI::App& app, std::shared_ptr<ConvertOptions> options);
int run_convert(const ConvertOptions& options);

}  // namespace qimg
