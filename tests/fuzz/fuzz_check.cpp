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

// The one finding a write may leave in a repaired image: OFLAG_COPIED clear on a cluster whose
// refcount is 1. It is the safe direction (the next write copies instead of overwriting) and
// QEMU leaves exactly the same: when a repaired image references one cluster both as an L2
// table and as guest data (refcount 2, which QEMU's check accepts), copying that L2 table on
// write drops the refcount to 1 and leaves the data entry's flag clear. qemu-io, given the
// same repaired inputs, leaves the same finding (checked on the inputs in testdata/fuzz-seeds
// named regress-shared-l2-data-*).
bool only_copied_flag_clear(const qcow::CheckReport& r) {
  if (r.check_errors || r.corruptions == 0) return false;
  uint64_t tolerated = 0;
  for (const std::string& m : r.messages)
    if ((m.starts_with("ERROR OFLAG_COPIED data cluster: l2_entry=") ||
         m.starts_with("ERROR OFLAG_COPIED L2 cluster: ")) && m.ends_with(" refcount=1"))
      ++tolerated;  // reported only when the flag disagrees, so with refcount 1 the flag is clear
  return tolerated == r.corruptions;
}

qcow::Result<qcow::CheckReport> check(const std::string& path, qcow::Repair repair) {
  qcow::CheckOptions o;
  o.format = qcow::Format::kQcow2;
  o.repair = repair;
  o.open_data_file = false;  // an input must not name a file to open
  return no_internal(qcow::check_image(path, o));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = qcow_fuzz::scratch_path("fuzz-check");
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
    o.open_data_file = false;
    auto img = no_internal(qcow::Image::open(path, o));
    if (img.is_ok() && img->size() && img->info().encrypt_format == qcow::EncryptionFormat::kNone) {
      std::vector<uint8_t> buf(std::min<uint64_t>(img->size(), 4096), 0x5a);
      qcow::Status w = no_internal(img->write(0, buf));
      qcow::Status c = no_internal(img->close());
      if (w.is_ok() && c.is_ok()) {
        auto after = check(path, qcow::Repair::kNone);
        if (!after.is_ok())
          oracle_failed("a write into a repaired image left it unreadable: " + after.status().message());
        if ((after->corruptions || after->check_errors) && !only_copied_flag_clear(*after))
          oracle_failed("a write into a repaired image left it corrupt: " + std::to_string(after->corruptions) +
                        " corruptions, " + std::to_string(after->check_errors) + " check errors");
      }
    }
  }
  unlink(path.c_str());
  return 0;
}
