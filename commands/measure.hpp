// qimg measure: see man/qimg.1. The figures come from qcow::measure()
// (qcow/measure.hpp); this file parses qemu-img's options in its order.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct MeasureOptions {
  std::string output = "human";        // --output
  std::string output_format = "raw";   // -O
  std::vector<std::string> options;    // -o, accumulated
  std::string format;                  // -f (empty: probe)
  std::string snapshot;                // -l snapshot.id=ID[,snapshot.name=NAME] or ID-or-NAME
  std::optional<std::string> size;     // --size (unset: measure FILE)
  bool force_share = false;            // -U
  std::vector<std::string> files;      // at most one FILE
};

void register_measure(CLI::App& app, std::shared_ptr<MeasureOptions> options);
int run_measure(const MeasureOptions& options);

}  // namespace qimg
