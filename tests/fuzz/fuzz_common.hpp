// Shared by the libFuzzer targets: open fuzzer bytes as an in-memory qcow2 image.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "driver.hpp"
#include "qcow/file.hpp"

namespace qcow_fuzz {

inline qcow::Result<std::unique_ptr<qcow::Driver>> open_bytes(const uint8_t* data, size_t size, bool writable) {
  auto file = qcow::make_memory_file("fuzz.qcow2", std::string(reinterpret_cast<const char*>(data), size));
  qcow::OpenOptions o;
  o.format = qcow::Format::kQcow2;
  o.writable = writable;
  o.open_backing = false;  // the fuzzer must not reach the file system
  o.l2_cache_size = 1 << 20;
  return qcow::open_qcow2(std::move(file), o, 0);
}

// Fuzzer images may declare huge virtual sizes: only touch a bounded window.
constexpr uint64_t kWindow = 8ull << 20;

}  // namespace qcow_fuzz
