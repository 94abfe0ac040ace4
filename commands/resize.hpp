// qimg resize: see man/qimg.1. qemu-img resize's syntax, checks, messages and
// exit codes (0 resized, 1 error); the work is qcow::Image::resize().
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct ResizeOptions {
  std::string format;              // -f (empty: probe)
  std::string preallocation;       // --preallocation (empty: off)
  bool quiet = false;              // -q
  bool shrink = false;             // --shrink
  std::string filename;            // FILE
  std::string size;                // [+|-]SIZE
  std::vector<std::string> extra;  // anything after them (an error)
};

void register_resize(CLI::App& app, std::shared_ptr<ResizeOptions> options);
int run_resize(const ResizeOptions& options);

}  // namespace qimg
