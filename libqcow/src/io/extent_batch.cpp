#include "io/extent_batch.hpp"

#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include <algorithm>
#include <limits>

namespace qcow {
namespace {

constexpr uint32_t kBatchExtents = 256;
constexpr uint32_t kPlainFlags = FIEMAP_EXTENT_LAST | FIEMAP_EXTENT_MERGED | FIEMAP_EXTENT_SHARED;

}  // namespace

std::optional<bool> ExtentBatch::lookup(int fd, uint64_t offset, uint64_t* run_end, bool* fresh) {
  *fresh = false;
  if (!enabled_) return std::nullopt;
  if (offset < from_ || offset >= to_) {
    // Batches refilled more often than used: the walk jumps around; lseek is cheaper.
    if (refills_ >= 16 && hits_ < 4 * refills_) enabled_ = false;
    if (!enabled_ || !refill(fd, offset)) {
      enabled_ = false;
      return std::nullopt;
    }
    ++refills_;
    *fresh = true;
  } else {
    ++hits_;
  }
  return answer(offset, run_end);
}

bool ExtentBatch::refill(int fd, uint64_t offset) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return false;
  std::vector<uint8_t> buf(sizeof(struct fiemap) + kBatchExtents * sizeof(struct fiemap_extent));
  auto* fm = reinterpret_cast<struct fiemap*>(buf.data());
  fm->fm_start = offset;
  fm->fm_length = FIEMAP_MAX_OFFSET - offset;
  fm->fm_flags = FIEMAP_FLAG_SYNC;
  fm->fm_extent_count = kBatchExtents;
  if (::ioctl(fd, FS_IOC_FIEMAP, fm) != 0 || fm->fm_mapped_extents > kBatchExtents) return false;
  extents_.clear();
  bool last = fm->fm_mapped_extents < kBatchExtents;
  for (uint32_t i = 0; i < fm->fm_mapped_extents; ++i) {
    const struct fiemap_extent& e = fm->fm_extents[i];
    if (e.fe_length == 0 || e.fe_logical > std::numeric_limits<uint64_t>::max() - e.fe_length) return false;
    const Extent x{e.fe_logical, e.fe_logical + e.fe_length, (e.fe_flags & ~kPlainFlags) == 0};
    if (!extents_.empty() && x.start < extents_.back().end) return false;  // not sorted: trust nothing
    extents_.push_back(x);
    last = last || (e.fe_flags & FIEMAP_EXTENT_LAST);
  }
  if (!last && extents_.back().end <= offset) return false;
  from_ = offset;
  to_ = last ? std::numeric_limits<uint64_t>::max() : extents_.back().end;
  file_size_ = uint64_t(st.st_size);
  return true;
}

std::optional<bool> ExtentBatch::answer(uint64_t offset, uint64_t* run_end) const {
  if (offset >= file_size_) {  // SEEK_HOLE's ENXIO: an endless hole (callers clamp)
    *run_end = std::numeric_limits<uint64_t>::max();
    return false;
  }
  auto it = std::upper_bound(extents_.begin(), extents_.end(), offset,
                             [](uint64_t o, const Extent& e) { return o < e.end; });
  if (it != extents_.end() && it->start <= offset) {
    if (!it->plain) return std::nullopt;
    uint64_t end = it->end;
    for (auto n = it + 1; n != extents_.end() && n->start == end && n->plain; ++n) end = n->end;
    *run_end = std::min(std::min(end, to_), file_size_);  // (a shorter run only costs another probe)
    return true;
  }
  // A gap: a hole up to the next extent, the batch's end or the end of the file.
  const uint64_t next = it != extents_.end() ? it->start : to_;
  *run_end = std::min(next, file_size_);
  return false;
}

}  // namespace qcow
