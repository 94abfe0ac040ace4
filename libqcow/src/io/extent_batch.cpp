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

std::optional<ExtentBatch::Answer> ExtentBatch::lookup(int fd, uint64_t offset) {
  if (!enabled_) return std::nullopt;
  if (offset < from_ || offset >= to_) {
    // Batches refilled more often than used: the walk jumps around; lseek is cheaper.
    if (refills_ >= 16 && hits_ < 4 * refills_) enabled_ = false;
    if (!enabled_ || !refill(fd, offset)) {
      enabled_ = false;
      return std::nullopt;
    }
    ++refills_;
    checked_ = false;
  } else {
    ++hits_;
  }
  return answer(offset);
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

std::optional<ExtentBatch::Answer> ExtentBatch::answer(uint64_t offset) const {
  if (offset >= file_size_)  // SEEK_HOLE's ENXIO: an endless hole (callers clamp)
    return Answer{false, std::numeric_limits<uint64_t>::max(), true};
  auto it = std::upper_bound(extents_.begin(), extents_.end(), offset,
                             [](uint64_t o, const Extent& e) { return o < e.end; });
  if (it != extents_.end() && it->start <= offset) {
    if (!it->plain) return std::nullopt;
    auto n = it + 1;
    uint64_t end = it->end;
    for (; n != extents_.end() && n->start == end && n->plain; ++n) end = n->end;
    // Exact when a hole follows (or the file ends); not at the batch's end or before
    // an adjacent extent lseek may count as data too. (A shorter run only costs
    // another probe: callers merge adjacent runs.)
    const bool gap_follows = n == extents_.end() ? to_ == std::numeric_limits<uint64_t>::max() : n->start > end;
    if (end >= file_size_) return Answer{true, file_size_, true};
    return Answer{true, std::min(end, to_), gap_follows && end < to_};
  }
  // A gap: a hole up to the next extent, the batch's end or the end of the file.
  if (it == extents_.end()) {
    if (to_ == std::numeric_limits<uint64_t>::max() || to_ >= file_size_) return Answer{false, file_size_, true};
    return Answer{false, to_, false};
  }
  if (it->start >= file_size_) return Answer{false, file_size_, true};
  return Answer{false, it->start, it->plain};  // lseek may see an unwritten extent as a hole too
}

}  // namespace qcow
