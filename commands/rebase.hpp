// qimg rebase: see man/qimg.1. qemu-img 7.2's command line, messages and exit
// codes, plus qemu 8.2's -c. The work is qcow::rebase_copy_differences() and
// qcow::set_backing_file() (qcow/rebase.hpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct RebaseOptions {
  std::string format;                      // -f (empty: probe)
  std::optional<std::string> backing;      // -b ("" removes the backing file, flattening the image)
  std::optional<std::string> backing_format;  // -F
  bool unsafe = false;                     // -u: only rewrite the backing link
  bool compress = false;                   // -c: write compressed clusters
  bool progress = false;                   // -p
  bool quiet = false;                      // -q
  bool force_share = false;                // -U: open the new backing file without a lock
  std::string cache = "writeback";         // -t: cache mode of the image
  std::string source_cache = "writeback";  // -T: cache mode of the backing files read
  std::vector<std::string> files;          // FILE
};

void register_rebase(CLI::App& app, std::shared_ptr<RebaseOptions> options);
int run_rebase(const RebaseOptions& options);

}  // namespace qimg
