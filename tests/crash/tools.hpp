// Small helpers of the crash harness that must work from several threads at
// once (so no doctest macros): files, running qemu-img, scratch directories.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

namespace crash {

std::vector<uint8_t> read_file(const std::string& path);
void write_file(const std::string& path, const std::vector<uint8_t>& data);

// Runs argv (PATH lookup) with stdout and stderr captured into *output; returns
// the exit status (-1 when it could not run or was killed).
int run_tool(const std::vector<std::string>& argv, std::string* output);
// Held while a child is spawned. A child holds copies of every open descriptor
// until it execs (O_CLOEXEC closes them only then), OFD locks included, so code
// that opens and reopens a locked image in this process holds it too.
std::mutex& spawn_mutex();
std::string first_line(const std::string& text);

struct QemuCheck {
  int rc = -1;
  long corruptions = 0, leaks = 0, check_errors = 0;
  std::string output;
  // Exit 0 (clean) or 3 (leaks only), and no corruptions reported.
  bool consistent() const { return (rc == 0 || rc == 3) && corruptions == 0 && check_errors == 0; }
};
QemuCheck qemu_check(const std::string& path);

// The cluster size a qcow2 header declares.
uint64_t image_cluster_size(const std::vector<uint8_t>& file);

// A fresh directory (in /dev/shm when it exists: states are many and small),
// removed with its contents on destruction.
struct ScratchDir {
  std::string path;
  explicit ScratchDir(const std::string& prefix);
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
};

}  // namespace crash
