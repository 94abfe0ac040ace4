// qimg check: see man/qimg.1. Exit codes are qemu-img's: 0 no errors, 1 the
// check could not complete, 2 corruptions, 3 leaks only, 63 no checks for the format.
#pragma once

#include <memory>
#include <string>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct CheckOptions {
  std::string format;             // -f (empty: probe)
  std::string output = "human";   // --output
  std::string repair;             // -r leaks|all (empty: check only)
  bool quiet = false;             // -q
  bool force_share = false;       // -U
  std::string filename;
};

void register_check(CLI::App& app, std::shared_ptr<CheckOptions> options);
int run_check(const CheckOptions& options);

}  // namespace qimg
