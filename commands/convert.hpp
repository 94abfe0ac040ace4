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
  std::string backing_file;               // -B: the target becomes an overlay of this file
  std::string backing_format;             // -F: format of the -B file (empty: probe)
  std::string snapshot_l;                 // -l snapshot.id=ID[,snapshot.name=NAME] or ID-or-NAME
  std::string snapshot_s;                 // -s ID-or-NAME (old style)
  int workers = -1;                       // -m: parallel workers (-1: hardware threads)
  bool out_of_order = false;              // -W: write chunks in completion order
  std::string cache = "unsafe";           // -t: target cache mode
  std::string source_cache = "writeback"; // -T: source cache mode
  std::string rate_limit;                 // -r: bytes per second (empty: unlimited)
  bool copy_offload = false;              // -C
  bool salvage = false;                   // --salvage: read errors become zeros
  bool bitmaps = false;                   // --bitmaps
  bool skip_broken_bitmaps = false;       // --skip-broken-bitmaps
  std::vector<std::string> files;         // SRC... DEST
};

void register_convert(CLI::App& app, std::shared_ptr<ConvertOptions> options);
int run_convert(const ConvertOptions& options);

}  // namespace qimg
