// qimg create: see man/qimg.1.
#pragma once

#include <memory>
#include <string>
#include <vector>

namespace CLI {
class App;
}  // namespace CLI

namespace qimg {

struct CreateOptions {
  std::string format = "raw";             // -f
  std::vector<std::string> options;       // -o, accumulated
  std::string backing_file;               // -b
  std::string backing_format;             // -F
  bool unsafe = false;                    // -u: do not open the backing file
  bool quiet = false;                     // -q
  std::string filename;
  std::string size;                       // optional with a backing file
};

void register_create(CLI::App& app, std::shared_ptr<CreateOptions> options);
int run_create(const CreateOptions& options);

}  // namespace qimg
