#include "chain/unit_ranges.hpp"

#include <algorithm>
#include <cstring>

#include "codec/bytes.hpp"

namespace qcow {

std::vector<ByteRange> align_to_units(std::vector<ByteRange> ranges, uint64_t unit, uint64_t limit) {
  std::vector<ByteRange> out;
  for (ByteRange& r : ranges) {
    if (!r.length || r.offset >= limit) continue;
    const uint64_t start = align_down(r.offset, unit);
    const uint64_t end = std::min(align_up(std::min(r.end(), limit), unit), limit);
    r = {start, end - start};
  }
  std::sort(ranges.begin(), ranges.end(), [](const ByteRange& x, const ByteRange& y) { return x.offset < y.offset; });
  for (const ByteRange& r : ranges) {
    if (!r.length || r.offset >= limit) continue;
    if (!out.empty() && r.offset <= out.back().end()) {
      out.back().length = std::max(out.back().end(), r.end()) - out.back().offset;
    } else {
      out.push_back(r);
    }
  }
  return out;
}

namespace {

// Merges run [offset, offset+length) into `out` when it touches the last run.
void append_run(std::vector<ByteRange>& out, uint64_t offset, uint64_t length) {
  if (!out.empty() && out.back().end() == offset) out.back().length += length;
  else out.push_back({offset, length});
}

}  // namespace

std::vector<ByteRange> differing_units(std::span<const uint8_t> a, std::span<const uint8_t> b, uint64_t unit) {
  std::vector<ByteRange> out;
  const uint64_t n = std::min(a.size(), b.size());
  for (uint64_t pos = 0; pos < n; pos += unit) {
    const uint64_t len = std::min(unit, n - pos);
    if (std::memcmp(a.data() + pos, b.data() + pos, len) != 0) append_run(out, pos, len);
  }
  return out;
}

std::vector<UnitRun> zero_unit_runs(std::span<const uint8_t> buf, uint64_t unit) {
  std::vector<UnitRun> out;
  for (uint64_t pos = 0; pos < buf.size(); pos += unit) {
    const uint64_t len = std::min<uint64_t>(unit, buf.size() - pos);
    const bool zero = buffer_is_zero(buf.data() + pos, len);
    if (!out.empty() && out.back().zero == zero) out.back().range.length += len;
    else out.push_back({{pos, len}, zero});
  }
  return out;
}

std::vector<ByteRange> clip_ranges(const std::vector<ByteRange>& ranges, uint64_t offset, uint64_t length) {
  std::vector<ByteRange> out;
  const uint64_t end = offset + length;
  auto it = std::upper_bound(ranges.begin(), ranges.end(), offset,
                             [](uint64_t off, const ByteRange& r) { return off < r.end(); });
  for (; it != ranges.end() && it->offset < end; ++it) {
    const uint64_t s = std::max(it->offset, offset), e = std::min(it->end(), end);
    if (s < e) out.push_back({s, e - s});
  }
  return out;
}

Status for_each_window(const std::vector<ByteRange>& ranges, uint64_t window, uint64_t limit,
                       const std::function<Status(const std::vector<ByteRange>&)>& fn,
                       const std::function<void(uint64_t done)>& progress) {
  size_t i = 0;
  uint64_t next = 0;  // where the last window ended
  while (i < ranges.size()) {
    const uint64_t start = align_down(std::max(ranges[i].offset, next), window);
    const uint64_t end = std::min(limit, start + window);
    next = end;
    QCOW_TRY(fn(clip_ranges(ranges, start, end - start)));
    while (i < ranges.size() && ranges[i].end() <= end) ++i;
    if (progress) progress(end);
  }
  return Status::ok();
}

}  // namespace qcow
