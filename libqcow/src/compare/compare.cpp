// compare_images: qemu-img 7.2's img_compare() walk (qemu-img.c).
#include "qcow/compare.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <optional>
#include <vector>

#include "compare/qemu_block_status.hpp"
#include "driver.hpp"

namespace qcow {
namespace {

constexpr uint64_t kIoBufSize = 2 << 20;  // qemu-img's IO_BUF_SIZE: the largest piece read at once
constexpr uint64_t kSector = 512;         // differences are reported per sector

using Outcome = CompareReport::Outcome;

// Index of the first sector of `a` that differs from `b` (or, without `b`, that is
// not all zeros), counted from the start of the buffers; nullopt when none does.
std::optional<uint64_t> first_different_sector(std::span<const uint8_t> a, const uint8_t* b) {
  static const uint8_t kZeros[kSector] = {};
  for (uint64_t i = 0; i < a.size(); i += kSector) {
    const uint64_t n = std::min<uint64_t>(kSector, a.size() - i);
    if (std::memcmp(a.data() + i, b ? b + i : kZeros, n) != 0) return i;
  }
  return std::nullopt;
}

class Walk {
 public:
  Walk(Image& a, Image& b, CompareMode mode, const CompareProgressFn& progress)
      : images_{&a, &b}, mode_(mode), progress_(progress), total_(std::max(a.size(), b.size())) {}

  CompareReport run() {
    const uint64_t size_a = images_[0]->size(), size_b = images_[1]->size();
    report_progress(0);
    if (mode_ == CompareMode::kStrict && size_a != size_b) return finish(Outcome::kSizeMismatch, 0);
    const uint64_t common = std::min(size_a, size_b);
    uint64_t offset = 0;
    while (offset < common) {
      QemuBlockStatus s[2];
      for (int i = 0; i < 2; ++i) {
        auto st = qemu_block_status_above(Image::Internals::driver(*images_[i]), offset, images_[i]->size() - offset);
        if (!st) return fail(Outcome::kBlockStatusError, i, offset, st.status());
        s[i] = *st;
      }
      uint64_t chunk = std::min(s[0].length, s[1].length);
      if (mode_ == CompareMode::kStrict && s[0].flags != s[1].flags) return finish(Outcome::kStatusMismatch, offset);
      const bool zero[2] = {(s[0].flags & kBlockZero) != 0, (s[1].flags & kBlockZero) != 0};
      const bool allocated[2] = {(s[0].flags & kBlockAllocated) != 0, (s[1].flags & kBlockAllocated) != 0};
      if (!(zero[0] && zero[1]) && (allocated[0] || allocated[1])) {
        chunk = std::min(chunk, kIoBufSize);
        std::optional<CompareReport> r;
        if (allocated[0] && allocated[1] && !zero[0] && !zero[1]) {
          r = compare_data(offset, chunk);
        } else {
          // One side reads as zeros (unallocated, or a zero run): only the other is read.
          const int data_side = allocated[0] && !zero[0] ? 0 : 1;
          r = check_zeros(data_side, offset, chunk);
        }
        if (r) return *r;
      }
      offset += chunk;
      report_progress(offset);
    }
    if (size_a == size_b) return finish(Outcome::kIdentical, 0);
    sizes_differ_ = true;
    const int larger = size_a > size_b ? 0 : 1;
    while (offset < total_) {
      auto st = qemu_block_status_above(Image::Internals::driver(*images_[larger]), offset, total_ - offset);
      if (!st) return fail(Outcome::kBlockStatusError, larger, offset, st.status());
      uint64_t chunk = st->length;
      if ((st->flags & kBlockAllocated) && !(st->flags & kBlockZero)) {
        chunk = std::min(chunk, kIoBufSize);
        if (auto r = check_zeros(larger, offset, chunk)) return *r;
      }
      offset += chunk;
      report_progress(offset);
    }
    return finish(Outcome::kIdentical, 0);
  }

 private:
  CompareReport finish(Outcome outcome, uint64_t offset) const {
    CompareReport r;
    r.outcome = outcome;
    r.offset = offset;
    r.sizes_differ = sizes_differ_;
    return r;
  }

  CompareReport fail(Outcome outcome, int image, uint64_t offset, Status error) const {
    CompareReport r = finish(outcome, offset);
    r.failed_image = image;
    r.error = std::move(error);
    return r;
  }

  std::optional<CompareReport> read(int image, uint64_t offset, uint64_t length) {
    buf_[image].resize(length);
    Status s = images_[image]->read(offset, buf_[image]);
    if (!s.is_ok()) return fail(Outcome::kReadError, image, offset, s);
    return std::nullopt;
  }

  std::optional<CompareReport> compare_data(uint64_t offset, uint64_t length) {
    for (int i = 0; i < 2; ++i) {
      if (auto r = read(i, offset, length)) return r;
    }
    if (auto sector = first_different_sector(buf_[0], buf_[1].data()))
      return finish(Outcome::kContentMismatch, offset + *sector);
    return std::nullopt;
  }

  std::optional<CompareReport> check_zeros(int image, uint64_t offset, uint64_t length) {
    if (auto r = read(image, offset, length)) return r;
    if (auto sector = first_different_sector(buf_[image], nullptr))
      return finish(Outcome::kContentMismatch, offset + *sector);
    return std::nullopt;
  }

  void report_progress(uint64_t done) const {
    if (progress_) progress_(done, total_);
  }

  Image* images_[2];
  CompareMode mode_;
  const CompareProgressFn& progress_;
  uint64_t total_;
  bool sizes_differ_ = false;
  std::vector<uint8_t> buf_[2];
};

}  // namespace

Result<CompareReport> compare_images(Image& a, Image& b, CompareMode mode, const CompareProgressFn& progress) {
  try {
    return Walk(a, b, mode, progress).run();
  } catch (const std::bad_alloc&) {
    return Status::limit("out of memory while comparing images");
  } catch (const std::exception& e) {
    return Status::internal(std::string("comparing images: ") + e.what());
  }
}

}  // namespace qcow
