#include "commands/convert.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/output.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_convert(CLI::App& app, std::shared_ptr<ConvertOptions> o) {
  app.add_option("-f", o->source_format, "Source image format (default: probe)");
  app.add_option("-O", o->output_format, "Output image format (default raw)");
  app.add_option("-o", o->options, "Output format options key=value[,...]; '-o help' lists them")
      ->allow_extra_args(false);
  app.add_flag("-c", o->compress, "Compress the output (qcow2)");
  app.add_flag("-p", o->progress, "Show progress");
  app.add_flag("-q", o->quiet, "Quiet");
  app.add_flag("-n", o->no_create, "Write into an existing image instead of creating one");
  app.add_option("-S", o->sparse_size, "Minimum run of zero bytes to leave unwritten (default 4k; 0: none)");
  app.add_flag("-U,--force-share", o->force_share, "Open sources without taking the lock");
  app.add_flag("--target-is-zero", o->target_is_zero, "The existing target reads as zeros (needs -n)");
  app.add_option("-B", o->backing_file, "Backing file of the output (not supported yet)");
  app.add_option("-F", o->backing_format, "Format of the -B backing file (not supported yet)");
  app.add_option("-l", o->snapshot_l, "Snapshot to convert (not supported yet)");
  app.add_option("-s", o->snapshot_s, "Snapshot to convert (not supported yet)");
  app.add_option("-m", o->coroutines, "Parallel requests (accepted, ignored)");
  app.add_flag("-W", o->out_of_order, "Out-of-order writes (accepted, ignored)");
  app.add_option("files", o->files, "Source image(s) followed by the destination")->required();
}

namespace {

constexpr uint64_t kMaxChunk = 2 << 20;
constexpr uint64_t kMaxSparse = 16 << 20;  // qemu's MAX_BUF_SECTORS * 512

struct Source {
  qcow::Image image;
  uint64_t base;  // offset of this source in the concatenated space
};

// The sources seen as one disk.
class Sources {
 public:
  qcow::Status open(const std::vector<std::string>& files, const qcow::OpenOptions& options) {
    for (const std::string& f : files) {
      auto image = qcow::Image::open(f, options);
      if (!image) return image.status();
      uint64_t size = image->size();
      sources_.push_back({std::move(image).value(), total_});
      total_ += size;
    }
    return qcow::Status::ok();
  }
  uint64_t total() const { return total_; }

  // Length of the run starting at t (capped at max) whose bytes are all
  // zero (*zero) or all possibly data (!*zero), from block status.
  qcow::Status next_run(uint64_t t, uint64_t max, uint64_t* run, bool* zero) {
    *run = 0;
    std::optional<bool> kind;
    for (size_t i = find(t); i < sources_.size() && *run < max; ++i) {
      Source& s = sources_[i];
      const uint64_t from = t + *run - s.base;
      const uint64_t len = std::min(s.image.size() - from, max - *run);
      if (len == 0) continue;
      uint64_t covered = 0;
      bool stopped = false;
      QCOW_TRY(s.image.block_status(from, len, [&](const qcow::Extent& e) {
        if (!kind) kind = e.zero;
        if (e.zero != *kind) {
          stopped = true;
          return false;
        }
        covered = std::min(e.offset + e.length - from, len);
        return covered < len;
      }));
      *run += covered;
      if (stopped || covered < len) break;
    }
    *run = std::min(*run, max);
    *zero = kind.value_or(true);
    return qcow::Status::ok();
  }

  qcow::Status read(uint64_t t, std::span<uint8_t> buf) {
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

 private:
  // The source containing guest offset t.
  size_t find(uint64_t t) const {
    size_t i = 0;
    while (i + 1 < sources_.size() && sources_[i + 1].base <= t) ++i;
    while (i < sources_.size() && sources_[i].image.size() == 0) ++i;
    return i;
  }
  std::vector<Source> sources_;
  uint64_t total_ = 0;
};

bool all_zero(const uint8_t* p, size_t n) {
  return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0);
}

struct Copier {
  Sources& src;
  qcow::Image& dst;
  bool target_zero;  // the target already reads as zeros: skip zero ranges
  bool compress;
  uint64_t sparse;   // -S; 0 writes everything
  uint64_t align;    // target cluster size
  uint64_t alignment;  // sectors; qemu's s->alignment: pow2floor(-S in sectors)
  Progress& progress;

  qcow::Status zeroes(uint64_t t, uint64_t len) {
    if (target_zero || len == 0) return qcow::Status::ok();
    return dst.write_zeroes(t, len, sparse ? qcow::Unmap::kYes : qcow::Unmap::kNo);
  }

  // qemu-img's is_allocated_sectors(): the run of equal zero-ness starting
  // at sector 0 of p[0, n sectors), with the end of data runs aligned up (and
  // of zero runs aligned down) to `alignment` sectors. Returns "is data".
  bool allocated_sectors(const uint8_t* p, size_t n, size_t bytes, uint64_t sector, size_t* num) const {
    auto sector_zero = [&](size_t i) {
      return all_zero(p + i * 512, std::min<size_t>(512, bytes - i * 512));
    };
    if (n == 0) {
      *num = 0;
      return false;
    }
    bool zero = sector_zero(0);
    size_t i = 1;
    while (i < n && sector_zero(i) == zero) ++i;
    if (i < n) {
      const uint64_t tail = (sector + i) & (alignment - 1);
      if (tail) {
        if (zero && i <= tail) zero = false;
        if (!zero) {
          i = std::min<size_t>(i + alignment - tail, n);
        } else {
          i -= tail;
        }
      }
    }
    *num = i;
    return !zero;
  }

  // qemu-img's is_allocated_sectors_min(): zero runs shorter than `min`
  // sectors inside data are written as data.
  bool allocated_sectors_min(const uint8_t* p, size_t n, size_t bytes, uint64_t sector, size_t min,
                             size_t* num) const {
    min = std::min(min, n);
    if (!allocated_sectors(p, n, bytes, sector, num)) return false;
    size_t used = *num, checked = *num;
    while (checked < n) {
      size_t k = 0;
      bool data = allocated_sectors(p + checked * 512, n - checked, bytes - checked * 512, sector + checked, &k);
      checked += k;
      if (data) {
        used = checked;
      } else if (k >= min) {
        break;
      }
    }
    *num = used;
    return true;
  }

  // Writes buf (at target offset t), leaving runs of at least -S zero bytes unwritten.
  qcow::Status write_sparse(uint64_t t, const std::vector<uint8_t>& buf, size_t n) {
    if (sparse == 0) return dst.write(t, std::span(buf.data(), n));
    const size_t sectors = (n + 511) / 512;
    size_t done = 0;  // sectors
    while (done < sectors) {
      size_t num = 0;
      const bool data = allocated_sectors_min(buf.data() + done * 512, sectors - done, n - done * 512,
                                              t / 512 + done, sparse / 512, &num);
      const size_t from = done * 512, to = std::min(n, (done + num) * 512);
      if (data) {
        QCOW_TRY(dst.write(t + from, std::span(buf.data() + from, to - from)));
      } else {
        QCOW_TRY(zeroes(t + from, to - from));
      }
      done += num;
    }
    return qcow::Status::ok();
  }

  qcow::Status write_compressed(uint64_t t, const std::vector<uint8_t>& buf, size_t n) {
    for (size_t pos = 0; pos < n; pos += align) {
      const size_t len = std::min<size_t>(align, n - pos);
      if (all_zero(buf.data() + pos, len)) {
        QCOW_TRY(zeroes(t + pos, len));
      } else {
        QCOW_TRY(dst.write(t + pos, std::span(buf.data() + pos, len), qcow::Compress::kYes));
      }
    }
    return qcow::Status::ok();
  }

  qcow::Status run() {
    const uint64_t total = src.total();
    const uint64_t chunk = std::max(align, kMaxChunk / align * align);
    std::vector<uint8_t> buf(chunk);
    uint64_t t = 0;
    while (t < total) {
      uint64_t run = 0;
      bool zero = false;
      QCOW_TRY(src.next_run(t, total - t, &run, &zero));
      if (zero && run > 0 && sparse == 0 && !compress) zero = false;  // -S 0: allocate everything
      if (zero && run > 0) {
        QCOW_TRY(zeroes(t, run));
        if (t + run >= total) break;
        const uint64_t data = t + run;
        if (!compress || data % align == 0) {
          t = data;
          continue;
        }
        // Compressed writes need whole clusters: start the data window at the
        // cluster boundary (the zeros before the data are rewritten harmlessly).
        QCOW_TRY(src.next_run(data, total - data, &run, &zero));
        run += data - std::max(t, data / align * align);
        t = std::max(t, data / align * align);
      }
      // A data run, in chunks aligned to the target cluster size.
      uint64_t end = std::min(t / chunk * chunk + chunk, total);
      uint64_t run_end = t + std::max<uint64_t>(run, 1);
      if (compress) run_end = (run_end + align - 1) / align * align;
      end = std::min(end, run_end);
      const size_t n = end - t;
      QCOW_TRY(src.read(t, std::span(buf.data(), n)));
      QCOW_TRY(compress ? write_compressed(t, buf, n) : write_sparse(t, buf, n));
      t = end;
      progress.update(t);
    }
    return qcow::Status::ok();
  }
};

}  // namespace

int run_convert(const ConvertOptions& o) {
  if (!o.backing_file.empty()) return fail("option -B is not supported yet");
  if (!o.backing_format.empty()) return fail("option -F is not supported yet");
  if (!o.snapshot_l.empty()) return fail("option -l is not supported yet");
  if (!o.snapshot_s.empty()) return fail("option -s is not supported yet");
  if (o.coroutines < 1 || o.coroutines > 16) {
    return fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
  }
  std::string error;
  auto sparse = parse_size_arg("buffer size for sparse output", o.sparse_size, 0, kInt64Max, &error);
  if (!sparse || *sparse % 512 != 0 || *sparse > kMaxSparse) {
    return fail(fmt::format("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up "
                            "to {}. Select 0 to disable sparse detection (fully allocates output).",
                            kMaxSparse));
  }
  std::optional<qcow::Format> src_format, dst_format;
  if (qcow::Status s = parse_format_option(o.source_format, &src_format); !s) return fail(s);
  if (qcow::Status s = parse_format_option(o.output_format, &dst_format); !s) return fail(s);
  if (!dst_format && !o.no_create) dst_format = qcow::Format::kRaw;

  OptionList list;
  if (qcow::Status s = parse_option_list(o.options, &list); !s) return fail(s);
  if (list.help) {
    print_create_help(dst_format.value_or(qcow::Format::kRaw));
    return 0;
  }
  if (o.files.size() < 2) return fail("Must specify image file name");
  if (o.target_is_zero && !o.no_create) return fail("--target-is-zero requires use of -n flag");
  if (o.no_create && !list.items.empty()) return fail("-o has no effect when skipping image creation");
  if (o.compress && dst_format == qcow::Format::kRaw) return fail("Compression not supported for this file format");
  const std::string& dest = o.files.back();

  Sources sources;
  qcow::OpenOptions src_options;
  src_options.format = src_format;
  src_options.force_share = o.force_share;
  if (qcow::Status s = sources.open({o.files.begin(), o.files.end() - 1}, src_options); !s) return fail(s);

  bool created = false;
  auto cleanup_fail = [&](const qcow::Status& s) {
    if (created) std::remove(dest.c_str());
    return fail(s);
  };

  if (!o.no_create) {
    CreateSpec spec;
    auto convert_error = [&](const qcow::Status& s) {
      return fail(fmt::format("{}: error while converting {}: {}", dest, qcow::format_name(*dst_format),
                              s.message()));
    };
    if (qcow::Status s = parse_create_options(list, *dst_format, &spec); !s) return convert_error(s);
    spec.size = sources.total();
    if (qcow::Status s = validate_create_options(&spec); !s) return convert_error(s);
    if (qcow::Status s = qcow::Image::create(dest, spec.options); !s) return fail(s);
    created = true;
  }
  qcow::OpenOptions dst_options;
  dst_options.format = dst_format;
  dst_options.writable = true;
  auto target = qcow::Image::open(dest, dst_options);
  if (!target) return cleanup_fail(target.status());
  if (o.compress && target->format() == qcow::Format::kRaw) {
    return cleanup_fail(qcow::Status::unsupported("Compression not supported for this file format"));
  }
  if (target->size() < sources.total()) {
    return cleanup_fail(qcow::Status::invalid("output file is smaller than input file"));
  }

  const uint32_t cluster = target->info().cluster_size;
  Progress progress(o.progress && !o.quiet, sources.total());
  uint64_t alignment = 1;
  while (alignment * 2 <= *sparse / 512) alignment *= 2;
  Copier copier{sources, *target, created || o.target_is_zero, o.compress, *sparse,
                cluster ? cluster : 65536, alignment, progress};
  qcow::Status s = copier.run();
  if (s) s = target->close();
  if (!s) {
    (void)target->close();
    return cleanup_fail(s);
  }
  progress.finish();
  return 0;
}

}  // namespace qimg
