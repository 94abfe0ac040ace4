// libFuzzer target: qimg check, and check -r all, of fuzzer bytes, with an oracle:
// a repair that reports the image clean leaves an image that a fresh check finds
// clean, that opens for writing and takes a write, and that still checks clean
// after it. check works on paths, so the input goes to /dev/shm (memory-backed).
// scripts/fuzz.sh also hands the saved corpus to qemu-img check after a repair
// (tests/fuzz/repair_corpus.py): qemu-img must agree with "clean".
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "fuzz_common.hpp"
#include "qcow/check.hpp"
#include "qcow/image.hpp"

namespace {

using qcow_fuzz::no_internal;
using qcow_fuzz::oracle_failed;

bool clean(const qcow::CheckReport& r) { return r.corruptions == 0 && r.check_errors == 0 && r.leaks == 0; }

qcow::Result<qcow::CheckReport> check(const std::string& path, qcow::Repair repair) {
  qcow::CheckOptions o;
  o.format = qcow::Format::kQcow2;
  o.repair = repair;
  return no_internal(qcow::check_image(path, o));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = "/dev/shm/qimg-fuzz-check-" + std::to_string(getpid()) + ".qcow2";
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  (void)check(path, qcow::Repair::kNone);
  auto repaired = check(path, qcow::Repair::kAll);
  if (repaired.is_ok() && repaired->supported && clean(*repaired)) {
    auto again = check(path, qcow::Repair::kNone);
    if (!again.is_ok() || !clean(*again)) oracle_failed("a repair reported clean, a fresh check does not");
    qcow::OpenOptions o;
    o.format = qcow::Format::kQcow2;
    o.writable = true;
    o.open_backing = false;
    auto img = no_internal(qcow::Image::open(path, o));
    if (img.is_ok() && img->size() && img->info().encrypt_format == qcow::EncryptionFormat::kNone) {
      std::vector<uint8_t> buf(std::min<uint64_t>(img->size(), 4096), 0x5a);
      qcow::Status w = no_internal(img->write(0, buf));
      qcow::Status c = no_internal(img->close());
      if (w.is_ok() && c.is_ok()) {
        auto after = check(path, qcow::Repair::kNone);
        if (!after.is_ok())
          oracle_failed("a write into a repaired image left it unreadable: " + after.status().message());
        if (after->corruptions || after->check_errors)
          oracle_failed("a write into a repaired image left it corrupt: " + std::to_string(after->corruptions) +
                        " corruptions, " + std::to_string(after->check_errors) + " check errors");
      }
    }
  }
  unlink(path.c_str());
  return 0;
}
