// qimg amend: see man/qimg.1.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct AmendOptions {
  std::string format;                  // -f (qcow2 only; empty: probe)
  std::vector<std::string> options;    // -o, accumulated
  bool progress = false;               // -p
  bool quiet = false;                  // -q
  bool force = false;                  // --force
  std::string filename;
};

void register_amend(CLI::App& app, std::shared_ptr<AmendOptions> options);
int run_amend(const AmendOptions& options);

}  // namespace qimg
