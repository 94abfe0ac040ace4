// qimg map: see man/qimg.1.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct MapOptions {
  std::string format;                     // -f (empty: probe)
  std::string output = "human";           // --output
  std::string start_offset;               // --start-offset
  std::string max_length;                 // --max-length
  bool force_share = false;               // -U
  std::string filename;
};

void register_map(CLI::App& app, std::shared_ptr<MapOptions> options);
int run_map(const MapOptions& options);

}  // namespace qimg
