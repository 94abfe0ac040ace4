// libFuzzer target: open + read + block status of an image held in memory, then
// (crosvm style) a write at a fuzzer-chosen place and a flush on a writable open.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "fuzz_common.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    auto d = qcow_fuzz::open_bytes(data, size, false);
    if (d.is_ok()) {
      qcow::Driver& drv = **d;
      uint64_t end = std::min<uint64_t>(drv.size(), qcow_fuzz::kWindow);
      std::vector<uint8_t> buf(64 << 10);
      for (uint64_t off = 0; off < end; off += buf.size()) {
        uint64_t n = std::min<uint64_t>(buf.size(), end - off);
        if (!drv.read(off, std::span<uint8_t>(buf.data(), n)).is_ok()) break;
      }
      for (uint64_t off = 0; off < end;) {
        auto r = drv.map_status(off, end - off);
        if (!r.is_ok() || r->length == 0) break;
        off += r->length;
      }
      drv.info();
    }
  }
  if (size >= 8) {
    auto d = qcow_fuzz::open_bytes(data, size, true);
    if (d.is_ok() && (*d)->size()) {
      qcow::Driver& drv = **d;
      uint64_t off = (uint64_t(data[0]) << 16 | uint64_t(data[1]) << 8 | data[2]) * 512 % drv.size();
      uint64_t len = std::min<uint64_t>(drv.size() - off, uint64_t(data[3]) * 512 + 1);
      std::vector<uint8_t> buf(len, data[4]);
      (void)drv.write(off, buf, data[5] & 1 ? qcow::Compress::kYes : qcow::Compress::kNo).is_ok();
      (void)drv.write_zeroes(off, std::min<uint64_t>(len, 4096), data[6] & 1 ? qcow::Unmap::kYes : qcow::Unmap::kNo).is_ok();
      (void)drv.discard(off, len).is_ok();
      (void)drv.flush().is_ok();
      std::vector<uint8_t> back(len);
      (void)drv.read(off, back).is_ok();
      (void)drv.close().is_ok();
    }
  }
  return 0;
}
