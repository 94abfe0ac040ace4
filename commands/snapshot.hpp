// qimg snapshot: see man/qimg.1. qemu-img snapshot's syntax, messages and exit
// codes (0 done, 1 error); the work is qcow/snapshot.hpp.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct SnapshotOptions {
  int list = 0;                          // -l (counted: repeating it is mixing actions too)
  std::vector<std::string> apply;        // -a SNAPSHOT
  std::vector<std::string> create;       // -c SNAPSHOT
  std::vector<std::string> remove;       // -d SNAPSHOT
  bool force_share = false;              // -U
  bool quiet = false;                    // -q
  std::vector<std::string> files;        // FILE
};

void register_snapshot(CLI::App& app, std::shared_ptr<SnapshotOptions> options);
int run_snapshot(const SnapshotOptions& options);

}  // namespace qimg
