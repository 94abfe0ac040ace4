// libFuzzer target: what `qimg map`, `qimg info` and convert --bitmaps' reader do with an image, through the
// public Image API (chain merging, subcluster runs, snapshot opens). Image::open
// works on paths, so each input is written to /dev/shm (memory-backed) first.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

#include "fuzz_common.hpp"
#include "qcow/bitmaps.hpp"
#include "qcow/image.hpp"

namespace {

// Walks the whole disk as map does, but stops after a bounded number of runs:
// a legitimate image with a huge virtual size and alternating runs would
// otherwise turn one input into a multi-second unit (map itself has no limit).
void walk(qcow::Image& img) {
  uint64_t runs = 0, next = 0;
  (void)img.block_status(0, img.size(), [&](const qcow::Extent& e) {
    if (e.offset != next || e.length == 0) __builtin_trap();  // runs must tile the range
    next = e.offset + e.length;
    return ++runs < 100000;
  });
  (void)img.info();
  (void)img.chain_info();
  // convert --bitmaps' reader: directory, tables and data clusters of persistent bitmaps
  // (on disks up to 1 GiB: a bitmap's bits are read into memory, up to QEMU's 512 MiB).
  if (img.size() <= (1ull << 30)) (void)qcow_fuzz::no_internal(qcow::read_bitmaps(img));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string path = qcow_fuzz::scratch_path("fuzz-map");
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(data, 1, size, f);
  std::fclose(f);
  qcow::OpenOptions o;
  o.open_backing = false;  // the fuzzer must not reach other files
  o.open_data_file = false;
  o.force_share = true;
  o.l2_cache_size = 1 << 20;
  auto img = qcow::Image::open(path, o);
  if (img.is_ok()) {
    walk(*img);
    // Every internal snapshot is mapped too (qimg map has no -l, but convert -l and
    // info walk the same tables through the same open path).
    int opened = 0;
    for (const auto& s : img->info().snapshots) {
      if (++opened > 16) break;  // a table may list 65536 snapshots; 16 exercise the path
      qcow::OpenOptions so = o;
      so.snapshot = s.id;
      auto snap = qcow::Image::open(path, so);
      if (snap.is_ok()) walk(*snap);
    }
  }
  unlink(path.c_str());
  return 0;
}
