// qimg io: see man/qimg.1.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct IoOptions {
  std::string format;                     // -f (empty: probe)
  bool force_share = false;               // -U
  bool read_only = false;                 // -r
  std::string cache = "writeback";        // -t
  std::vector<std::string> commands;      // -c, run in order
  std::string filename;
};

void register_io(CLI::App& app, std::shared_ptr<IoOptions> options);
int run_io(const IoOptions& options);

}  // namespace qimg
