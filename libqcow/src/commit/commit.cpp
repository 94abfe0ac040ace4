// commit_into_base: qemu-img commit's copy (see include/qcow/commit.hpp).
#include "qcow/commit.hpp"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>
#include <vector>

#include "chain/unit_ranges.hpp"
#include "codec/bytes.hpp"
#include "format/constants.hpp"

namespace qcow {
namespace {

constexpr uint64_t kWindow = 1 << 20;  // bytes assembled at a time (at least one unit)

// A range some layer above BASE answers, and whether it reads as zeros there.
struct Piece {
  ByteRange range;
  bool zero = false;
};

class Commit {
 public:
  Commit(Image& top, Image& base, size_t base_layer, const CommitOptions& o)
      : top_(top), base_(base), layer_(base_layer), o_(o), start_(std::chrono::steady_clock::now()) {}

  Result<CommitStats> run() {
    size_ = top_.size();
    if (base_.size() < size_) QCOW_TRY(base_.resize(size_));
    const ImageInfo info = base_.info();
    unit_ = base_.format() == Format::kRaw ? 512
            : info.extended_l2            ? info.cluster_size / kSubclustersPerCluster
                                          : info.cluster_size;
    QCOW_TRY(find_pieces());
    std::vector<ByteRange> ranges;
    for (const Piece& p : pieces_) ranges.push_back(p.range);
    const std::vector<ByteRange> units = align_to_units(std::move(ranges), unit_, size_);
    const uint64_t window = std::max(kWindow, unit_);
    QCOW_TRY(for_each_window(units, window, size_, [&](const std::vector<ByteRange>& w) { return process_window(w); },
                             [&](uint64_t done) {
                               if (o_.progress) o_.progress(done, size_);
                             }));
    QCOW_TRY(base_.flush());
    if (o_.progress) o_.progress(size_, size_);
    return stats_;
  }

 private:
  Status find_pieces() {
    Status inner;
    Status s = top_.block_status(0, size_, [&](const Extent& e) {
      if (size_t(e.depth) >= layer_) return true;  // BASE (or below) answers: nothing to copy
      // Layers above BASE answer: with data, or with zeros (or the end of a short layer),
      // which matter only where BASE does not read zeros already.
      if (!e.zero) {
        pieces_.push_back({{e.offset, e.length}, false});
        return true;
      }
      inner = base_.block_status(e.offset, e.length, [&](const Extent& b) {
        if (!b.zero) pieces_.push_back({{b.offset, b.length}, true});
        return true;
      });
      return inner.is_ok();
    });
    return s.is_ok() ? inner : s;
  }

  Status process_window(const std::vector<ByteRange>& units) {
    if (units.empty()) return Status::ok();
    const uint64_t start = units.front().offset, n = units.back().end() - start;
    before_.resize(n);
    after_.resize(n);
    QCOW_TRY(base_.read(start, before_));  // BASE's view fills what no layer above answers
    std::memcpy(after_.data(), before_.data(), n);
    auto it = std::lower_bound(pieces_.begin(), pieces_.end(), start,
                               [](const Piece& p, uint64_t off) { return p.range.end() <= off; });
    for (; it != pieces_.end() && it->range.offset < start + n; ++it) {
      const uint64_t s = std::max(it->range.offset, start), e = std::min(it->range.end(), start + n);
      std::span<uint8_t> dst(after_.data() + (s - start), e - s);
      if (it->zero) std::fill(dst.begin(), dst.end(), 0);
      else QCOW_TRY(top_.read(s, dst));
    }
    for (const ByteRange& u : units) {
      const uint64_t rel = u.offset - start;
      // Units BASE already reads the same need no write.
      for (ByteRange d : differing_units(std::span(before_).subspan(rel, u.length), std::span(after_).subspan(rel, u.length), unit_))
        QCOW_TRY(write_range(u.offset + d.offset, std::span<const uint8_t>(after_).subspan(rel + d.offset, d.length)));
    }
    return Status::ok();
  }

  Status write_range(uint64_t offset, std::span<const uint8_t> data) {
    for (const UnitRun& r : zero_unit_runs(data, unit_)) {
      const uint64_t off = offset + r.range.offset;
      if (r.zero) {
        QCOW_TRY(base_.write_zeroes(off, r.range.length, Unmap::kYes));
        stats_.bytes_zeroed += r.range.length;
      } else {
        QCOW_TRY(base_.write(off, data.subspan(r.range.offset, r.range.length)));
        stats_.bytes_written += r.range.length;
      }
      throttle(r.range.length);
    }
    return Status::ok();
  }

  // Sleeps while the bytes written so far are ahead of the rate limit.
  void throttle(uint64_t bytes) {
    if (!o_.rate_limit) return;
    throttled_ += bytes;
    const auto due = start_ + std::chrono::duration<double>(double(throttled_) / double(o_.rate_limit));
    std::this_thread::sleep_until(due);
  }

  Image& top_;
  Image& base_;
  const size_t layer_;
  const CommitOptions& o_;
  const std::chrono::steady_clock::time_point start_;
  uint64_t size_ = 0, unit_ = 0, throttled_ = 0;
  std::vector<Piece> pieces_;
  std::vector<uint8_t> before_, after_;
  CommitStats stats_;
};

}  // namespace

Result<CommitStats> commit_into_base(Image& top, Image& base, size_t base_layer, const CommitOptions& options) {
  if (base_layer < 1) return Status::invalid(top.path() + ": cannot commit an image into itself");
  try {
    return Commit(top, base, base_layer, options).run();
  } catch (const std::bad_alloc&) {
    return Status::limit(base.path() + ": out of memory");
  }
}

}  // namespace qcow
