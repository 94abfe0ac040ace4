#include "crash/content.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

namespace crash {

std::vector<uint8_t>& Content::writable_chunk(uint64_t c) {
  auto& slot = chunks_[c];
  if (!slot) slot = std::make_shared<const std::vector<uint8_t>>(kChunk, 0);
  else if (slot.use_count() > 1) slot = std::make_shared<const std::vector<uint8_t>>(*slot);
  return const_cast<std::vector<uint8_t>&>(*slot);  // ours alone now
}

void Content::write(uint64_t off, std::span<const uint8_t> data) {
  for (uint64_t done = 0; done < data.size();) {
    const uint64_t pos = off + done, c = pos / kChunk, in = pos % kChunk;
    const uint64_t n = std::min<uint64_t>(kChunk - in, data.size() - done);
    std::memcpy(writable_chunk(c).data() + in, data.data() + done, n);
    done += n;
  }
}

void Content::zero(uint64_t off, uint64_t len) {
  for (uint64_t done = 0; done < len;) {
    const uint64_t pos = off + done, c = pos / kChunk, in = pos % kChunk;
    const uint64_t n = std::min<uint64_t>(kChunk - in, len - done);
    if (chunks_.count(c)) {
      if (n == kChunk) chunks_.erase(c);
      else std::memset(writable_chunk(c).data() + in, 0, n);
    }
    done += n;
  }
}

void Content::resize(uint64_t size, uint64_t keep) {
  const uint64_t from = std::max(size, keep);
  if (from < size_) zero(from, size_ - from);
  size_ = size;
}

const std::vector<uint8_t>* Content::chunk(uint64_t c) const {
  auto it = chunks_.find(c);
  return it == chunks_.end() ? nullptr : it->second.get();
}

bool Content::operator==(const Content& o) const {
  if (size_ != o.size_) return false;
  std::set<uint64_t> keys;
  for (const auto& [c, p] : chunks_) keys.insert(c);
  for (const auto& [c, p] : o.chunks_) keys.insert(c);
  static const std::vector<uint8_t> zeros(kChunk, 0);
  for (uint64_t c : keys) {
    if (c * kChunk >= size_) continue;  // bytes a shrink hid (see resize)
    const auto* a = chunk(c);
    const auto* b = o.chunk(c);
    const size_t n = size_t(std::min<uint64_t>(kChunk, size_ - c * kChunk));
    if (!std::equal((a ? a : &zeros)->begin(), (a ? a : &zeros)->begin() + long(n), (b ? b : &zeros)->begin())) return false;
  }
  return true;
}

Content Content::load_raw(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error("cannot open " + path);
  Content out;
  off_t end = ::lseek(fd, 0, SEEK_END);
  out.size_ = uint64_t(std::max<off_t>(end, 0));
  std::vector<uint8_t> buf(kChunk);
  off_t pos = 0;
  while (pos < end) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;  // only a hole is left
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = end;
    for (uint64_t c = uint64_t(data) / kChunk; c * kChunk < uint64_t(hole); ++c) {
      std::fill(buf.begin(), buf.end(), 0);
      const uint64_t n = std::min<uint64_t>(kChunk, out.size_ - c * kChunk);
      if (::pread(fd, buf.data(), n, off_t(c * kChunk)) != ssize_t(n)) {
        ::close(fd);
        throw std::runtime_error("short read of " + path);
      }
      if (std::any_of(buf.begin(), buf.begin() + long(n), [](uint8_t b) { return b != 0; }))
        out.chunks_[c] = std::make_shared<const std::vector<uint8_t>>(buf);
    }
    pos = hole;
  }
  ::close(fd);
  return out;
}

bool matches_any(const Content& got, const std::vector<Content>& states, size_t first, size_t last, std::string* why) {
  bool size_ok = false;
  for (size_t s = first; s <= last; ++s) size_ok |= states[s].size() == got.size();
  if (!size_ok) {
    *why = fmt::format("virtual size {} matches no state {}..{} (state {}: {} bytes)", got.size(), first, last, first,
                       states[first].size());
    return false;
  }
  std::set<uint64_t> keys;
  for (const auto& [c, p] : got.chunks()) keys.insert(c);
  for (size_t s = first; s <= last; ++s)
    for (const auto& [c, p] : states[s].chunks()) keys.insert(c);
  static const std::vector<uint8_t> zeros(Content::kChunk, 0);
  auto bytes = [&](const Content& x, uint64_t c) { const auto* p = x.chunk(c); return p ? p : &zeros; };
  for (uint64_t c : keys) {
    const std::vector<uint8_t>& g = *bytes(got, c);
    if (g == *bytes(states[first], c)) continue;
    const uint64_t limit = std::min<uint64_t>(Content::kChunk, got.size() > c * Content::kChunk ? got.size() - c * Content::kChunk : 0);
    for (uint64_t i = 0; i < limit; ++i) {
      bool ok = false;
      for (size_t s = first; s <= last && !ok; ++s) ok = (*bytes(states[s], c))[i] == g[i];
      if (!ok) {
        *why = fmt::format("guest byte {:#x} reads {:#04x}; acknowledged state {} has {:#04x} (states {}..{} allowed)",
                           c * Content::kChunk + i, g[i], first, (*bytes(states[first], c))[i], first, last);
        return false;
      }
    }
  }
  return true;
}

}  // namespace crash
