// rebase: qemu-img rebase's two steps (see include/qcow/rebase.hpp).
#include "qcow/rebase.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <vector>

#include "chain/unit_ranges.hpp"
#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "format/header.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {
namespace {

constexpr uint64_t kWindow = 1 << 20;  // bytes compared at a time (at least one write unit)

Status with_prefix(const char* what, const Status& s) { return Status::error(s.code(), what + s.message(), s.saved_errno()); }

// Reads [offset, offset+buf.size()) of `image`, zeros past its end.
Status read_or_zeros(Image& image, uint64_t offset, std::span<uint8_t> buf) {
  const uint64_t size = image.size();
  const uint64_t n = offset >= size ? 0 : std::min<uint64_t>(buf.size(), size - offset);
  if (n) QCOW_TRY(image.read(offset, buf.first(n)));
  std::memset(buf.data() + n, 0, buf.size() - n);
  return Status::ok();
}

class Rebase {
 public:
  Rebase(Image& image, Image* new_backing, const RebaseOptions& o) : image_(image), new_(new_backing), o_(o) {}

  Result<RebaseStats> run() {
    if (image_.format() != Format::kQcow2) return stats_;
    const ImageInfo info = image_.info();
    unit_ = info.extended_l2 ? info.cluster_size / kSubclustersPerCluster : info.cluster_size;
    write_unit_ = o_.compress == Compress::kYes ? info.cluster_size : unit_;
    size_ = image_.size();
    QCOW_ASSIGN_OR_RETURN(std::vector<ByteRange> candidates, find_candidates());
    const std::vector<ByteRange> units = align_to_units(std::move(candidates), unit_, size_);
    const uint64_t window = std::max<uint64_t>(kWindow, write_unit_);
    QCOW_TRY(for_each_window(units, window, size_, [&](const std::vector<ByteRange>& w) { return process_window(w); },
                             [&](uint64_t done) {
                               if (o_.progress) o_.progress(done, size_);
                             }));
    if (o_.progress) o_.progress(size_, size_);
    return stats_;
  }

 private:
  // Ranges the image does not allocate where the two views may differ.
  Result<std::vector<ByteRange>> find_candidates() {
    std::vector<ByteRange> out;
    Status inner;
    Status s = image_.block_status(0, size_, [&](const Extent& e) {
      if (e.depth == 0 && e.present) {  // the image's own data (or zeros) wins either way
        own_.push_back({e.offset, e.length});
        return true;
      }
      if (o_.new_backing_layer && size_t(e.depth) >= *o_.new_backing_layer) return true;  // same layers answer
      if (!e.zero) {
        out.push_back({e.offset, e.length});
        return true;
      }
      // The old view reads zeros here: only where the new one does not.
      if (!new_ || e.offset >= new_->size()) return true;
      inner = new_->block_status(e.offset, std::min(e.length, new_->size() - e.offset), [&](const Extent& n) {
        if (!n.zero) out.push_back({n.offset, n.length});
        return true;
      });
      return inner.is_ok();
    });
    if (s.is_ok()) s = inner;
    if (!s.is_ok()) return with_prefix("error while reading image metadata: ", s);
    return out;
  }

  // `units` (sorted, unit-aligned, inside one window): compares and writes.
  Status process_window(const std::vector<ByteRange>& units) {
    if (units.empty()) return Status::ok();
    // Read the hull, rounded to write units so that compressed clusters can be filled.
    const uint64_t start = align_down(units.front().offset, write_unit_);
    const uint64_t end = std::min(size_, align_up(units.back().end(), write_unit_));
    const uint64_t n = end - start;
    old_.resize(n);
    new_buf_.resize(n);
    // The image's own view: its backing chain where it allocates nothing (all of `units`).
    if (Status s = image_.read(start, old_); !s.is_ok()) return with_prefix("error while reading from old backing file: ", s);
    if (new_) {
      if (Status s = read_or_zeros(*new_, start, new_buf_); !s.is_ok())
        return with_prefix("error while reading from new backing file: ", s);
    } else {
      std::fill(new_buf_.begin(), new_buf_.end(), 0);
    }
    std::vector<ByteRange> diffs;
    for (const ByteRange& u : units) {
      const uint64_t rel = u.offset - start;
      stats_.bytes_compared += u.length;
      for (ByteRange d : differing_units(std::span(old_).subspan(rel, u.length), std::span(new_buf_).subspan(rel, u.length), unit_))
        diffs.push_back({d.offset + u.offset, d.length});
    }
    auto data = [&](const ByteRange& r) { return std::span<const uint8_t>(old_).subspan(r.offset - start, r.length); };
    if (o_.compress != Compress::kYes) {
      for (const ByteRange& d : diffs) QCOW_TRY(write_range(d, data(d), unit_, Compress::kNo));
      return Status::ok();
    }
    // Compressed: whole clusters the image allocates nothing of are written compressed;
    // in a cluster it partly allocates (extended L2), the differing units as they are.
    for (const ByteRange& c : align_to_units(diffs, write_unit_, size_)) {
      for (uint64_t pos = c.offset; pos < c.end(); pos += write_unit_) {
        const ByteRange cluster{pos, std::min(write_unit_, size_ - pos)};
        if (clip_ranges(own_, cluster.offset, cluster.length).empty()) {
          QCOW_TRY(write_range(cluster, data(cluster), write_unit_, Compress::kYes));
        } else {
          for (const ByteRange& d : clip_ranges(diffs, cluster.offset, cluster.length))
            QCOW_TRY(write_range(d, data(d), unit_, Compress::kNo));
        }
      }
    }
    return Status::ok();
  }

  // Writes what the old view holds over d: units of zeros as zeros, the rest as data.
  Status write_range(const ByteRange& d, std::span<const uint8_t> data, uint64_t unit, Compress compress) {
    for (const UnitRun& r : zero_unit_runs(data, unit)) {
      const uint64_t off = d.offset + r.range.offset;
      Status s;
      if (r.zero) {
        s = image_.write_zeroes(off, r.range.length, Unmap::kNo);
        stats_.bytes_zeroed += r.range.length;
      } else {
        s = image_.write(off, data.subspan(r.range.offset, r.range.length), compress);
        stats_.bytes_written += r.range.length;
      }
      if (!s.is_ok()) return with_prefix("Error while writing to COW image: ", s);
    }
    return Status::ok();
  }

  Image& image_;
  Image* new_;
  const RebaseOptions& o_;
  uint64_t unit_ = 0, write_unit_ = 0, size_ = 0;
  std::vector<uint8_t> old_, new_buf_;
  std::vector<ByteRange> own_;  // what the image allocates itself (sorted)
  RebaseStats stats_;
};

}  // namespace

Result<RebaseStats> rebase_copy_differences(Image& image, Image* new_backing, const RebaseOptions& options) {
  try {
    return Rebase(image, new_backing, options).run();
  } catch (const std::bad_alloc&) {
    return Status::limit(image.path() + ": out of memory");
  }
}

Status set_backing_file(Image& image, const std::string& backing_file, const std::optional<std::string>& backing_format) {
  if (image.format() != Format::kQcow2) return Status::unsupported("Operation not supported");
  if (backing_format && backing_file.empty()) return Status::invalid("Invalid argument");
  if (!backing_file.empty() && !backing_format) return Status::invalid("backing format must be specified");
  auto& d = static_cast<Qcow2Driver&>(Image::Internals::driver(image));
  Header h = d.header();
  if (!backing_file.empty() && (backing_file.size() > kMaxBackingFileNameLength ||
                                (h.data_file && (h.autoclear_features & kAutoclearDataFileRaw))))
    return Status::invalid("Invalid argument");
  h.backing_file = backing_file;
  h.backing_format = backing_format;
  if (!encode_header(h)) return Status::error(ErrorCode::kNoSpace, "No space left in the file header");
  // Everything written so far (rebase's copies) is durable before the header points elsewhere.
  QCOW_TRY(image.flush());
  QCOW_TRY(d.commit_header_atomic(h));
  return d.image_file().flush();
}

}  // namespace qcow
