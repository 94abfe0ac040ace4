// libFuzzer target: the header and extension parser on raw bytes, plus re-encoding.
#include <cstddef>
#include <cstdint>
#include <span>

#include "format/header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto h = qcow::parse_header(std::span<const uint8_t>(data, size));
  if (h.is_ok()) {
    auto enc = qcow::encode_header(*h);
    if (enc.is_ok()) {
      auto again = qcow::parse_header(*enc);
      if (!again.is_ok()) __builtin_trap();  // what we write we must read
    }
  }
  return 0;
}
