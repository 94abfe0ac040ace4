// The sources of qimg convert; see convert_source.hpp.
#include "commands/convert_source.hpp"

#include <algorithm>
#include <optional>

#include <fmt/format.h>

#include "cli/secrets.hpp"

namespace qimg {

qcow::Status SourceSet::open(const std::vector<std::string>& files, const qcow::OpenOptions& options) {
  for (const std::string& f : files) {
    auto image = qcow::Image::open(f, options);
    if (!image) return image.status();
    if (options.key_secret) warn_if_legacy_aes(*image);
    const uint64_t size = image->size();
    sources_.push_back({std::move(image).value(), total_});
    total_ += size;
  }
  return qcow::Status::ok();
}

std::vector<qcow::ImageInfo> SourceSet::info() const {
  std::vector<qcow::ImageInfo> out;
  for (const Source& s : sources_) out.push_back(s.image.info());
  return out;
}

size_t SourceSet::find(uint64_t t) const {
  size_t i = 0;
  while (i + 1 < sources_.size() && sources_[i + 1].base <= t) ++i;
  while (i < sources_.size() && sources_[i].image.size() == 0) ++i;
  return i;
}

qcow::Status SourceSet::next_run(uint64_t t, uint64_t max, Run* run) {
  *run = Run{};
  std::optional<bool> kind;
  bool first = true;
  for (size_t i = find(t); i < sources_.size() && run->length < max; ++i) {
    Source& s = sources_[i];
    const uint64_t from = t + run->length - s.base;
    const uint64_t len = std::min(s.image.size() - from, max - run->length);
    if (len == 0) continue;
    uint64_t covered = 0;
    bool stopped = false;
    QCOW_TRY(s.image.block_status(from, len, [&](const qcow::Extent& e) {
      if (first) {
        kind = e.zero;
        first = false;
      } else if (e.zero != *kind) {
        stopped = true;
        return false;
      }
      covered = std::min(e.offset + e.length - from, len);
      return covered < len;
    }));
    run->length += covered;
    if (stopped || covered < len) break;
  }
  run->length = std::min(run->length, max);
  run->zero = kind.value_or(true);
  return qcow::Status::ok();
}

qcow::Status SourceSet::read(uint64_t t, std::span<uint8_t> buf) {
  size_t done = 0;
  for (size_t i = find(t); i < sources_.size() && done < buf.size(); ++i) {
    Source& s = sources_[i];
    const uint64_t from = t + done - s.base;
    const uint64_t n = std::min<uint64_t>(s.image.size() - from, buf.size() - done);
    QCOW_TRY(s.image.read(from, buf.subspan(done, n)));
    done += n;
  }
  return qcow::Status::ok();
}

}  // namespace qimg
