// qimg commit: see man/qimg.1. qemu-img 7.2's command line, messages and exit
// codes. The work is qcow::commit_into_base() and qcow::make_image_empty()
// (qcow/commit.hpp).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct CommitOptions {
  std::string format;                 // -f (empty: probe)
  std::optional<std::string> base;    // -b: commit into this image of the chain (implies -d)
  bool drop = false;                  // -d: leave the image as it is (do not empty it)
  std::string rate_limit;             // -r: bytes per second (empty: unlimited)
  bool progress = false;              // -p
  bool quiet = false;                 // -q
  std::string cache = "writeback";    // -t
  std::vector<std::string> files;     // FILE
};

void register_commit(CLI::App& app, std::shared_ptr<CommitOptions> options);
int run_commit(const CommitOptions& options);

}  // namespace qimg
