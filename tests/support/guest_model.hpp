// A sparse reference model of a guest disk (64 KiB chunks, missing chunks read as
// zeros), and helpers to compare an Image with it and to write it out as a raw file.
#pragma once

#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "support/test_util.hpp"

namespace qtest {

class GuestModel {
 public:
  static constexpr uint64_t kChunk = 64 * 1024;

  explicit GuestModel(uint64_t size = 0) : size_(size) {}
  uint64_t size() const { return size_; }
  void resize(uint64_t n) {
    if (n < size_) zero(n, size_ - n);
    size_ = n;
  }

  void write(uint64_t off, std::span<const uint8_t> data) {
    REQUIRE(off + data.size() <= size_);
    for (uint64_t done = 0; done < data.size();) {
      uint64_t pos = off + done, ci = pos / kChunk, in = pos % kChunk;
      uint64_t n = std::min<uint64_t>(kChunk - in, data.size() - done);
      Bytes& c = chunks_[ci];
      if (c.empty()) c.assign(kChunk, 0);
      std::memcpy(c.data() + in, data.data() + done, n);
      done += n;
    }
  }
  void zero(uint64_t off, uint64_t len) {
    for (uint64_t done = 0; done < len;) {
      uint64_t pos = off + done, ci = pos / kChunk, in = pos % kChunk;
      uint64_t n = std::min<uint64_t>(kChunk - in, len - done);
      auto it = chunks_.find(ci);
      if (it != chunks_.end()) {
        if (n == kChunk) chunks_.erase(it);
        else std::memset(it->second.data() + in, 0, n);
      }
      done += n;
    }
  }
  Bytes read(uint64_t off, uint64_t len) const {
    Bytes out(len, 0);
    for (uint64_t done = 0; done < len;) {
      uint64_t pos = off + done, ci = pos / kChunk, in = pos % kChunk;
      uint64_t n = std::min<uint64_t>(kChunk - in, len - done);
      auto it = chunks_.find(ci);
      if (it != chunks_.end() && pos < size_) std::memcpy(out.data() + done, it->second.data() + in, n);
      done += n;
    }
    return out;
  }
  const std::map<uint64_t, Bytes>& chunks() const { return chunks_; }

  // Writes the model as a sparse raw file of the model's size.
  void write_raw(const std::string& path) const {
    int fd = ::open(path.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, off_t(size_)) == 0);
    for (const auto& [ci, c] : chunks_) {
      uint64_t off = ci * kChunk;
      if (off >= size_) continue;
      uint64_t n = std::min<uint64_t>(kChunk, size_ - off);
      REQUIRE(::pwrite(fd, c.data(), n, off_t(off)) == ssize_t(n));
    }
    ::close(fd);
  }

 private:
  uint64_t size_;
  std::map<uint64_t, Bytes> chunks_;
};

// First differing offset in [off, off+len) between image and model, or -1.
inline int64_t first_mismatch(qcow::Image& img, const GuestModel& m, uint64_t off, uint64_t len) {
  const uint64_t step = 4 << 20;
  for (uint64_t done = 0; done < len; done += step) {
    uint64_t n = std::min(step, len - done);
    Bytes got(n);
    qcow::Status s = img.read(off + done, got);
    INFO(s.message());
    REQUIRE(s.is_ok());
    Bytes want = m.read(off + done, n);
    if (got != want) {
      for (uint64_t i = 0; i < n; ++i)
        if (got[i] != want[i]) return int64_t(off + done + i);
    }
  }
  return -1;
}

}  // namespace qtest
