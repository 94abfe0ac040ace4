// libFuzzer target: qimg check (and repair) of fuzzer bytes. check works on paths,
// so each input is written to a file in /dev/shm (memory-backed) first.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "qcow/check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/qimg-fuzz-check-" + std::to_string(getpid()) + ".qcow2";
  for (int repair = 0; repair < 2; ++repair) {
    FILE* f = std::fopen(path.c_str(), "wb");
    if (!f) return 0;
    std::fwrite(data, 1, size, f);
    std::fclose(f);
    qcow::CheckOptions o;
    o.format = qcow::Format::kQcow2;
    o.repair = repair ? qcow::Repair::kAll : qcow::Repair::kNone;
    (void)qcow::check_image(path, o);
  }
  unlink(path.c_str());
  return 0;
}
