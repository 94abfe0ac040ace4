// qimg convert: option checks, opening the sources, creating and opening the
// target; the copy itself is convert_copy.cpp.
#include "commands/convert.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/secrets.hpp"
#include "cli/snapshot_param.hpp"
#include "cli/output.hpp"
#include "commands/convert_copy.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_convert(CLI::App& app, std::shared_ptr<ConvertOptions> o) {
  add_secret_options(app);
  app.add_option("-f", o->source_format, "Source image format (default: probe)");
  app.add_option("-O", o->output_format, "Output image format (default raw)");
  app.add_option("-o", o->options, "Output format options key=value[,...]; '-o help' lists them")
      ->allow_extra_args(false);
  app.add_flag("-c", o->compress, "Compress the output (qcow2; zlib or zstd per compression_type)");
  app.add_flag("-p", o->progress, "Show progress on a terminal");
  app.add_flag("-q", o->quiet, "Quiet");
  app.add_flag("-n", o->no_create, "Write into an existing image instead of creating one");
  app.add_option("-S", o->sparse_size, "Minimum run of zero bytes to leave unwritten (default 4k; 0: allocate all)");
  app.add_flag("-U,--force-share", o->force_share, "Open sources without taking the lock");
  app.add_flag("--target-is-zero", o->target_is_zero, "The existing target reads as zeros (needs -n)");
  app.add_option("-B", o->backing_file, "Make the output an overlay of this backing file; copy only what differs");
  app.add_option("-F", o->backing_format, "Format of the -B backing file (default: probe)");
  app.add_option("-l", o->snapshot_l, "Convert an internal snapshot: snapshot.id=ID[,snapshot.name=NAME] or NAME");
  app.add_option("-s", o->snapshot_s, "Convert an internal snapshot, by id or name (old style)");
  app.add_option("-m", o->workers, "Parallel workers, 1 to 16 (default: hardware threads)");
  app.add_flag("-W", o->out_of_order, "Allow out-of-order writes (faster, not byte-for-byte deterministic)");
  app.add_option("-t", o->cache, "Destination cache mode: unsafe (default), writeback, writethrough, none, directsync");
  app.add_option("-T", o->source_cache, "Source cache mode: writeback (default), writethrough, unsafe, none, directsync");
  app.add_option("-r", o->rate_limit, "Rate limit in bytes per second (k, M, G suffixes)");
  app.add_flag("-C", o->copy_offload, "Copy offloading (accepted; data is already copied once, from a mapping)");
  app.add_flag("--salvage", o->salvage, "Turn read errors into zeros (with a warning) and go on");
  app.add_flag("--bitmaps", o->bitmaps, "Copy persistent bitmaps (only sources without bitmaps are supported)");
  app.add_flag("--skip-broken-bitmaps", o->skip_broken_bitmaps, "With --bitmaps: skip inconsistent bitmaps");
  app.add_option("files", o->files, "Source image(s) followed by the destination")->required();
}

namespace {

constexpr uint64_t kMaxSparse = 16 << 20;  // qemu's MAX_BUF_SECTORS * 512
constexpr int kMaxWorkers = 16;

// qemu-img convert's default target cache mode is "unsafe": no flushes. The
// metadata write order stays the same; only the fdatasync calls are skipped.
class NoSyncFile : public qcow::FileWrapper {
 public:
  using FileWrapper::FileWrapper;
  qcow::Status flush() override { return qcow::Status::ok(); }
};

int hardware_workers() {
  const unsigned n = std::thread::hardware_concurrency();
  return std::clamp<int>(n ? int(n) : 1, 1, kMaxWorkers);
}

// pow2floor(bytes), at least one sector: the -S alignment of a raw target.
uint64_t sparse_alignment(uint64_t sparse) {
  uint64_t a = 512;
  while (a * 2 <= sparse) a *= 2;
  return a;
}

}  // namespace

int run_convert(const ConvertOptions& o) {
  const int workers = o.workers == -1 ? hardware_workers() : o.workers;
  if (workers < 1 || workers > kMaxWorkers) {
    return fail("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
  }
  std::string error;
  auto sparse = parse_size_arg("buffer size for sparse output", o.sparse_size, 0, kInt64Max, &error);
  if (!sparse || *sparse % 512 != 0 || *sparse > kMaxSparse) {
    return fail(fmt::format("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up "
                            "to {}. Select 0 to disable sparse detection (fully allocates output).",
                            kMaxSparse));
  }
  std::optional<uint64_t> rate;
  if (!o.rate_limit.empty()) {
    rate = parse_size_arg("rate limit", o.rate_limit, 0, kInt64Max, &error);
    if (!rate) return fail(error);
  }
  if (o.copy_offload && o.compress) return fail("Cannot enable copy offloading when -c is used");
  if (o.copy_offload && o.salvage) return fail("Cannot use copy offloading in salvaging mode");
  if (o.skip_broken_bitmaps && !o.bitmaps) return fail("Use of --skip-broken-bitmaps requires --bitmaps");
  CacheChoice dst_cache, src_cache;
  if (!parse_cache(o.cache, &dst_cache)) return fail(fmt::format("Invalid cache option: {}", o.cache));
  if (!parse_cache(o.source_cache, &src_cache)) return fail(fmt::format("Invalid source cache option: {}", o.source_cache));
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
  std::vector<std::string> inputs(o.files.begin(), o.files.end() - 1);
  const std::string& dest = o.files.back();
  if (o.target_is_zero && !o.no_create) return fail("--target-is-zero requires use of -n flag");
  if (o.no_create && !list.items.empty()) return fail("-o has no effect when skipping image creation");
  if (o.no_create && !o.backing_file.empty()) return fail("-B has no effect when skipping image creation (-n)");
  if (!o.backing_format.empty() && o.backing_file.empty()) return fail("-F requires -B (a backing file)");
  if (!o.backing_file.empty() && inputs.size() > 1) return fail("-B makes no sense when concatenating multiple input images");
  if (!o.backing_file.empty() && dst_format == qcow::Format::kRaw) return fail("raw images cannot have a backing file (-B)");
  if (o.compress && dst_format == qcow::Format::kRaw) return fail("Compression not supported for this file format");
  SnapshotSpec snapshot;
  if (qcow::Status s = parse_snapshot_param(o.snapshot_l, o.snapshot_s, &snapshot); !s) return fail(s);
  if (snapshot.given() && inputs.size() > 1) return fail("No support for concatenating multiple snapshot");

  qcow::OpenOptions src_options;
  for (std::string& input : inputs) {
    std::string fmt_name = o.source_format;
    if (qcow::Status s = apply_secret_options(&input, &fmt_name, &src_options); !s) return fail(s);
    if (fmt_name != o.source_format) {
      if (qcow::Status s = parse_format_option(fmt_name, &src_format); !s) return fail(s);
    }
  }
  src_options.format = src_format;
  src_options.force_share = o.force_share;
  // -T none: O_DIRECT reads that leave the page cache alone (so no mappings either).
  if (src_cache.direct) src_options.cache = qcow::CacheMode::kNone;
  if (snapshot.given()) {
    if (qcow::Status s = resolve_snapshot(inputs[0], src_options, &snapshot); !s)
      return fail("Failed to load snapshot: " + s.message());
    src_options.snapshot = snapshot.id_or_name;
  }
  SourceSet sources;
  if (qcow::Status s = sources.open(inputs, src_options); !s) {
    return fail(snapshot.given() && s.code() == qcow::ErrorCode::kNotFound ? "Failed to load snapshot: " + s.message()
                                                                           : s.message());
  }
  if (o.bitmaps) {
    // qemu-img's checks, in its order. Copying bitmaps is not implemented: refuse
    // rather than silently drop them.
    for (const qcow::ImageInfo& i : sources.info()) {
      if (i.format != qcow::Format::kQcow2) return fail("Source lacks bitmap support");
    }
    if (dst_format && *dst_format != qcow::Format::kQcow2)
      return fail(fmt::format("Format driver '{}' does not support bitmaps", qcow::format_name(*dst_format)));
    for (const qcow::ImageInfo& i : sources.info()) {
      if (!i.bitmaps.empty())
        return fail(fmt::format("{}: copying persistent bitmaps (--bitmaps) is not supported yet", i.filename));
    }
  }

  bool created = false;
  std::optional<qcow::Image> target, base;
  auto cleanup_fail = [&](qcow::Status s) {
    base.reset();
    if (target) (void)target->close();
    target.reset();
    if (created) std::remove(dest.c_str());
    return fail(s);
  };

  std::optional<std::string> dst_key;
  if (!o.no_create) {
    CreateSpec spec;
    auto convert_error = [&](const qcow::Status& s) {
      return fail(fmt::format("{}: error while converting {}: {}", dest, qcow::format_name(*dst_format),
                              s.message()));
    };
    if (qcow::Status s = parse_create_options(list, *dst_format, &spec); !s) return convert_error(s);
    if (!o.backing_file.empty()) {
      set_create_option(&spec, "backing_file", o.backing_file);
      if (!o.backing_format.empty()) set_create_option(&spec, "backing_fmt", o.backing_format);
    }
    spec.size = sources.total();
    if (qcow::Status s = validate_create_options(&spec); !s) return convert_error(s);
    if (!spec.options.encrypt.format.empty()) {
      if (o.compress) return fail("Compression and encryption not supported at the same time");
      auto secret = secret_by_id(spec.given["encrypt.key-secret"]);
      if (!secret) return convert_error(secret.status());
      spec.options.key_secret = std::move(secret).value();
      dst_key = spec.options.key_secret;
    }
    created = true;  // from here on a failure removes the (possibly partial) file
    if (qcow::Status s = qcow::Image::create(dest, spec.options); !s) return cleanup_fail(s);
  }
  qcow::OpenOptions dst_options;
  dst_options.format = dst_format;
  dst_options.writable = true;
  dst_options.key_secret = dst_key;
  // -t: unsafe (qemu-img convert's default) never syncs; writeback syncs when the
  // target is closed; writethrough after every write; none/directsync use O_DIRECT.
  // (directsync is O_DIRECT with the writes left to the device, as the library's kNone.)
  dst_options.cache = dst_cache.mode;
  if (!dst_cache.flush) {
    dst_options.wrap_file = [](std::unique_ptr<qcow::File> f) -> std::unique_ptr<qcow::File> {
      return std::make_unique<NoSyncFile>(std::move(f));
    };
  }
  {
    auto t = qcow::Image::open(dest, dst_options);
    if (!t) return cleanup_fail(t.status());
    target.emplace(std::move(t).value());
  }
  if (o.bitmaps && target->format() == qcow::Format::kRaw) {
    return cleanup_fail(qcow::Status::unsupported("Format driver 'raw' does not support bitmaps"));
  }
  if (o.compress && target->format() == qcow::Format::kRaw) {
    return cleanup_fail(qcow::Status::unsupported("Compression not supported for this file format"));
  }
  if (target->size() < sources.total()) {
    return cleanup_fail(qcow::Status::invalid(fmt::format("{}: output file is smaller than input file ({} < {} bytes)",
                                                          dest, target->size(), sources.total())));
  }
  const qcow::ImageInfo info = target->info();
  if (created && !info.backing_filename.empty()) {
    // -B: compare with what the new overlay already reads through its backing chain.
    qcow::OpenOptions base_options;
    base_options.force_share = true;
    if (!info.backing_format.empty()) base_options.format = qcow::parse_format(info.backing_format);
    auto b = qcow::Image::open(info.full_backing_filename, base_options);
    if (!b) return cleanup_fail(b.status());
    base.emplace(std::move(b).value());
  }

  CopyConfig config;
  config.sparse = *sparse;
  config.compress = o.compress;
  config.cluster_size = info.cluster_size ? info.cluster_size : 65536;
  config.compression_type = info.compression_type;
  if (target->format() == qcow::Format::kQcow2) {
    config.unit = info.subcluster_size;
  } else {
    config.unit = *sparse ? sparse_alignment(*sparse) : 65536;
  }
  config.target_zero = (created && !base) || o.target_is_zero;
  config.workers = workers;
  config.out_of_order = o.out_of_order;
  config.map_sources = !src_cache.direct;
  config.salvage = o.salvage;
  config.rate_limit = rate.value_or(0);

  Progress progress(o.progress && !o.quiet, sources.total());
  qcow::Status s = copy_image(sources, base ? &*base : nullptr, *target, config, progress);
  if (s) s = target->close();
  if (!s) return cleanup_fail(s);
  progress.finish();
  return 0;
}

}  // namespace qimg
