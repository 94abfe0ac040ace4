// Host-side measurements for qimg bench: file size, allocated bytes, and the
// number of host extents (FIEMAP), plus the request generator.
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <numeric>
#include <vector>

#include "commands/bench_scenarios.hpp"

namespace qimg {
namespace {

constexpr uint32_t kFiemapBatch = 512;

// Counts extents, merging neighbours that are contiguous both in the file and
// on the device (ext4 splits long or partly unwritten runs). nullopt: FIEMAP
// is not supported by the file system.
std::optional<uint64_t> count_extents(int fd) {
  std::vector<uint8_t> buf(sizeof(fiemap) + kFiemapBatch * sizeof(fiemap_extent));
  auto* fm = reinterpret_cast<fiemap*>(buf.data());
  uint64_t start = 0, count = 0, last_logical_end = 0, last_physical_end = 0;
  bool first_call = true;
  for (;;) {
    std::fill(buf.begin(), buf.end(), 0);
    fm->fm_start = start;
    fm->fm_length = FIEMAP_MAX_OFFSET - start;
    fm->fm_flags = first_call ? FIEMAP_FLAG_SYNC : 0;
    fm->fm_extent_count = kFiemapBatch;
    first_call = false;
    if (ioctl(fd, FS_IOC_FIEMAP, fm) != 0) return std::nullopt;
    if (fm->fm_mapped_extents == 0) break;
    bool last = false;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
      const fiemap_extent& e = fm->fm_extents[i];
      bool merges = count > 0 && e.fe_logical == last_logical_end && e.fe_physical == last_physical_end;
      if (!merges) ++count;
      last_logical_end = e.fe_logical + e.fe_length;
      last_physical_end = e.fe_physical + e.fe_length;
      if (e.fe_flags & FIEMAP_EXTENT_LAST) last = true;
    }
    if (last) break;
    start = last_logical_end;
  }
  return count;
}

}  // namespace

HostFileStats host_file_stats(const std::string& path) {
  HostFileStats s;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return s;
  struct stat st {};
  if (fstat(fd, &st) == 0) {
    s.size = uint64_t(st.st_size);
    s.allocated_bytes = uint64_t(st.st_blocks) * 512;
  }
  if (auto n = count_extents(fd)) {
    s.extents = *n;
  } else {
    s.extents_supported = false;
  }
  ::close(fd);
  return s;
}

void drop_page_cache(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)fdatasync(fd);
  (void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  ::close(fd);
}

std::vector<uint64_t> random_blocks(uint64_t blocks, uint64_t count, uint64_t seed) {
  std::vector<uint64_t> out;
  out.reserve(count);
  SplitMix64 rng(seed);
  if (blocks == 0) return out;
  if (blocks > (uint64_t(1) << 24)) {
    for (uint64_t i = 0; i < count; ++i) out.push_back(rng.next() % blocks);
    return out;
  }
  std::vector<uint64_t> perm(blocks);
  std::iota(perm.begin(), perm.end(), uint64_t(0));
  const uint64_t shuffled = std::min(count, blocks);
  for (uint64_t i = 0; i < shuffled; ++i) {
    uint64_t j = i + rng.next() % (blocks - i);
    std::swap(perm[i], perm[j]);
  }
  for (uint64_t i = 0; i < count; ++i) out.push_back(perm[i % shuffled]);
  return out;
}

}  // namespace qimg
