// qimg compare: see man/qimg.1. Exit codes are qemu-img's: 0 identical,
// 1 different, 2 an image could not be opened, 3 block status failed, 4 a read
// failed. The walk itself is qcow::compare_images() (qcow/compare.hpp).
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct CompareOptions {
  std::string format1;                    // -f (empty: probe)
  std::string format2;                    // -F (empty: probe)
  bool strict = false;                    // -s
  bool progress = false;                  // -p
  bool quiet = false;                     // -q
  bool force_share = false;               // -U
  std::string source_cache = "writeback"; // -T
  std::vector<std::string> files;         // FILE1 FILE2
};

void register_compare(CLI::App& app, std::shared_ptr<CompareOptions> options);
int run_compare(const CompareOptions& options);

}  // namespace qimg
