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
#include "qcow/bitmaps.hpp"
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
  app.add_flag("-C", o->copy_offload, "Copy offloading (accepted and checked as qemu-img does; the data still goes through qimg's buffers)");
  app.add_flag("--salvage", o->salvage, "Turn read errors into zeros (with a warning) and go on");
  app.add_flag("--bitmaps", o->bitmaps, "Copy persistent dirty bitmaps (qcow2 to qcow2, one source)");
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

namespace {

// What the command line asks for, parsed and checked in qemu-img's order.
struct ConvertPlan {
  int workers = 1;
  uint64_t sparse = 0;
  std::optional<uint64_t> rate;
  CacheChoice dst_cache, src_cache;
  std::optional<qcow::Format> src_format, dst_format;
  OptionList list;
  std::vector<std::string> inputs;
  std::string dest;
  SnapshotSpec snapshot;
};

qcow::Status parse_plan(const ConvertOptions& o, ConvertPlan* p) {
  p->workers = o.workers == -1 ? hardware_workers() : o.workers;
  if (p->workers < 1 || p->workers > kMaxWorkers)
    return qcow::Status::invalid("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16");
  std::string error;
  auto sparse = parse_size_arg("buffer size for sparse output", o.sparse_size, 0, kInt64Max, &error);
  if (!sparse || *sparse % 512 != 0 || *sparse > kMaxSparse)
    return qcow::Status::invalid(fmt::format("Invalid buffer size for sparse output specified. Valid sizes are "
                                             "multiples of 512 up to {}. Select 0 to disable sparse detection (fully "
                                             "allocates output).", kMaxSparse));
  p->sparse = *sparse;
  if (!o.rate_limit.empty()) {
    p->rate = parse_size_arg("rate limit", o.rate_limit, 0, kInt64Max, &error);
    if (!p->rate) return qcow::Status::invalid(error);
  }
  if (o.copy_offload && o.compress) return qcow::Status::invalid("Cannot enable copy offloading when -c is used");
  if (o.copy_offload && o.salvage) return qcow::Status::invalid("Cannot use copy offloading in salvaging mode");
  if (o.skip_broken_bitmaps && !o.bitmaps) return qcow::Status::invalid("Use of --skip-broken-bitmaps requires --bitmaps");
  if (!parse_cache(o.cache, &p->dst_cache)) return qcow::Status::invalid(fmt::format("Invalid cache option: {}", o.cache));
  if (!parse_cache(o.source_cache, &p->src_cache))
    return qcow::Status::invalid(fmt::format("Invalid source cache option: {}", o.source_cache));
  QCOW_TRY(parse_format_option(o.source_format, &p->src_format));
  QCOW_TRY(parse_format_option(o.output_format, &p->dst_format));
  if (!p->dst_format && !o.no_create) p->dst_format = qcow::Format::kRaw;
  return parse_option_list(o.options, &p->list);
}

// The checks of the file arguments and of combinations (after -o help had its chance).
qcow::Status check_files(const ConvertOptions& o, ConvertPlan* p) {
  if (o.files.size() < 2) return qcow::Status::invalid("Must specify image file name");
  p->inputs.assign(o.files.begin(), o.files.end() - 1);
  p->dest = o.files.back();
  auto refuse = [](const char* why) { return qcow::Status::invalid(why); };
  if (o.target_is_zero && !o.no_create) return refuse("--target-is-zero requires use of -n flag");
  if (o.no_create && !p->list.items.empty()) return refuse("-o has no effect when skipping image creation");
  if (o.no_create && !o.backing_file.empty()) return refuse("-B has no effect when skipping image creation (-n)");
  if (!o.backing_format.empty() && o.backing_file.empty()) return refuse("-F requires -B (a backing file)");
  if (!o.backing_file.empty() && p->inputs.size() > 1)
    return refuse("-B makes no sense when concatenating multiple input images");
  if (!o.backing_file.empty() && p->dst_format == qcow::Format::kRaw)
    return refuse("raw images cannot have a backing file (-B)");
  if (o.compress && p->dst_format == qcow::Format::kRaw) return refuse("Compression not supported for this file format");
  QCOW_TRY(parse_snapshot_param(o.snapshot_l, o.snapshot_s, &p->snapshot));
  if (p->snapshot.given() && p->inputs.size() > 1) return refuse("No support for concatenating multiple snapshot");
  return qcow::Status::ok();
}

qcow::Status open_sources(const ConvertOptions& o, ConvertPlan* p, SourceSet* sources) {
  qcow::OpenOptions src_options;
  for (std::string& input : p->inputs) {
    std::string fmt_name = o.source_format;
    QCOW_TRY(apply_secret_options(&input, &fmt_name, &src_options));
    if (fmt_name != o.source_format) QCOW_TRY(parse_format_option(fmt_name, &p->src_format));
  }
  src_options.format = p->src_format;
  src_options.force_share = o.force_share;
  // Read in guest order: a 1 MiB L2 cache unless --image-opts set one (on a 4 TiB image
  // with 4 KiB clusters, 32 MiB less peak memory than the default).
  src_options.sequential = true;
  // -T none: O_DIRECT reads that leave the page cache alone (so no mappings either).
  if (p->src_cache.direct) src_options.cache = qcow::CacheMode::kNone;
  if (p->snapshot.given()) {
    if (qcow::Status s = resolve_snapshot(p->inputs[0], src_options, &p->snapshot); !s)
      return qcow::Status::error(s.code(), "Failed to load snapshot: " + s.message());
    src_options.snapshot = p->snapshot.id_or_name;
  }
  qcow::Status s = sources->open(p->inputs, src_options);
  if (!s && p->snapshot.given() && s.code() == qcow::ErrorCode::kNotFound)
    return qcow::Status::error(s.code(), "Failed to load snapshot: " + s.message());
  return s;
}

// qemu-img's --bitmaps checks, in its order.
qcow::Status check_bitmaps(const ConvertPlan& p, const SourceSet& sources) {
  if (sources.count() > 1) return qcow::Status::invalid("Copying bitmaps only possible with single source");
  for (const qcow::ImageInfo& i : sources.info())
    if (i.format != qcow::Format::kQcow2) return qcow::Status::unsupported("Source lacks bitmap support");
  if (p.dst_format && *p.dst_format != qcow::Format::kQcow2)
    return qcow::Status::unsupported(fmt::format("Format driver '{}' does not support bitmaps",
                                                 qcow::format_name(*p.dst_format)));
  return qcow::Status::ok();
}

// The source's bitmaps to copy: an inconsistent one stops the convert before anything is
// created, or with --skip-broken-bitmaps is left out with a warning (qemu-img's words).
qcow::Result<std::vector<qcow::DirtyBitmap>> bitmaps_to_copy(const ConvertOptions& o, SourceSet& sources) {
  QCOW_ASSIGN_OR_RETURN(std::vector<qcow::DirtyBitmap> all, qcow::read_bitmaps(sources.image(0)));
  std::vector<qcow::DirtyBitmap> out;
  for (qcow::DirtyBitmap& b : all) {
    if (!b.in_use) {
      out.push_back(std::move(b));
    } else if (o.skip_broken_bitmaps) {
      fmt::print(stderr, "qimg: warning: Skipping inconsistent bitmap '{}'\n", b.name);
    } else {
      return qcow::Status::invalid(fmt::format("Cannot copy inconsistent bitmap '{}'\nTry --skip-broken-bitmaps, or use "
                                               "'qemu-img bitmap --remove' to delete it", b.name));
    }
  }
  return out;
}

// The target's creation options (errors as "DEST: error while converting FMT: ..."),
// with the key of an encrypted target in *key.
qcow::Result<qcow::CreateOptions> target_options(const ConvertOptions& o, const ConvertPlan& p, uint64_t size,
                                                 std::optional<std::string>* key) {
  auto in_context = [&](const qcow::Status& s) {
    return qcow::Status::error(s.code(), fmt::format("{}: error while converting {}: {}", p.dest,
                                                     qcow::format_name(*p.dst_format), s.message()));
  };
  CreateSpec spec;
  if (qcow::Status s = parse_create_options(p.list, *p.dst_format, &spec); !s) return in_context(s);
  if (!o.backing_file.empty()) {
    set_create_option(&spec, "backing_file", o.backing_file);
    if (!o.backing_format.empty()) set_create_option(&spec, "backing_fmt", o.backing_format);
  }
  spec.size = size;
  if (qcow::Status s = validate_create_options(&spec); !s) return in_context(s);
  if (!spec.options.encrypt.format.empty()) {
    if (o.compress) return qcow::Status::invalid("Compression and encryption not supported at the same time");
    auto secret = secret_by_id(spec.given["encrypt.key-secret"]);
    if (!secret) return in_context(secret.status());
    spec.options.key_secret = std::move(secret).value();
    *key = spec.options.key_secret;
  }
  return spec.options;
}

// -t: unsafe (qemu-img convert's default) never syncs; writeback syncs when the target
// is closed; writethrough after every write; none/directsync use O_DIRECT (directsync is
// O_DIRECT with the writes left to the device, as the library's kNone).
qcow::Result<qcow::Image> open_target(const ConvertOptions& o, const ConvertPlan& p, std::optional<std::string> key,
                                      uint64_t needed) {
  qcow::OpenOptions dst_options;
  dst_options.format = p.dst_format;
  dst_options.writable = true;
  dst_options.key_secret = std::move(key);
  dst_options.cache = p.dst_cache.mode;
  if (!p.dst_cache.flush) {
    dst_options.wrap_file = [](std::unique_ptr<qcow::File> f) -> std::unique_ptr<qcow::File> {
      return std::make_unique<NoSyncFile>(std::move(f));
    };
  }
  QCOW_ASSIGN_OR_RETURN(qcow::Image target, qcow::Image::open(p.dest, dst_options));
  if (o.bitmaps && (target.format() == qcow::Format::kRaw || target.info().version < 3))  // (v2 cannot store them)
    return qcow::Status::unsupported(fmt::format("Format driver '{}' does not support bitmaps",
                                                 qcow::format_name(target.format())));
  if (o.compress && target.format() == qcow::Format::kRaw)
    return qcow::Status::unsupported("Compression not supported for this file format");
  if (target.size() < needed)
    return qcow::Status::invalid(fmt::format("{}: output file is smaller than input file ({} < {} bytes)", p.dest,
                                             target.size(), needed));
  return target;
}

// -B: the new overlay's backing file, what the copy compares with.
qcow::Result<std::optional<qcow::Image>> open_base(const qcow::ImageInfo& info) {
  if (info.backing_filename.empty()) return std::optional<qcow::Image>();
  qcow::OpenOptions base_options;
  base_options.force_share = true;
  if (!info.backing_format.empty()) base_options.format = qcow::parse_format(info.backing_format);
  QCOW_ASSIGN_OR_RETURN(qcow::Image b, qcow::Image::open(info.full_backing_filename, base_options));
  return std::optional<qcow::Image>(std::move(b));
}

CopyConfig copy_config(const ConvertOptions& o, const ConvertPlan& p, const qcow::Image& target, bool target_zero) {
  const qcow::ImageInfo info = target.info();
  CopyConfig config;
  config.sparse = p.sparse;
  config.compress = o.compress;
  config.cluster_size = info.cluster_size ? info.cluster_size : 65536;
  config.compression_type = info.compression_type;
  config.unit = target.format() == qcow::Format::kQcow2 ? info.subcluster_size
                                                        : p.sparse ? sparse_alignment(p.sparse) : 65536;
  config.target_zero = target_zero;
  config.workers = p.workers;
  config.out_of_order = o.out_of_order;
  config.salvage = o.salvage;
  config.rate_limit = p.rate.value_or(0);
  return config;
}

}  // namespace

int run_convert(const ConvertOptions& o) {
  ConvertPlan plan;
  if (qcow::Status s = parse_plan(o, &plan); !s) return fail(s);
  if (plan.list.help) {
    print_create_help(plan.dst_format.value_or(qcow::Format::kRaw));
    return 0;
  }
  if (qcow::Status s = check_files(o, &plan); !s) return fail(s);
  SourceSet sources;
  if (qcow::Status s = open_sources(o, &plan, &sources); !s) return fail(s);
  std::vector<qcow::DirtyBitmap> bitmaps;
  if (o.bitmaps) {
    if (qcow::Status s = check_bitmaps(plan, sources); !s) return fail(s);
    auto b = bitmaps_to_copy(o, sources);
    if (!b) return fail(b.status());
    bitmaps = std::move(b).value();
  }

  bool created = false;
  std::optional<qcow::Image> target, base;
  auto cleanup_fail = [&](qcow::Status s) {  // a target this run created goes again
    base.reset();
    if (target) (void)target->close();
    target.reset();
    if (created) std::remove(plan.dest.c_str());
    return fail(s);
  };
  std::optional<std::string> key;
  if (!o.no_create) {
    auto options = target_options(o, plan, sources.total(), &key);
    if (!options) return fail(options.status());
    created = true;  // from here on a failure removes the (possibly partial) file
    if (qcow::Status s = qcow::Image::create(plan.dest, *options); !s) return cleanup_fail(s);
  }
  auto t = open_target(o, plan, key, sources.total());
  if (!t) return cleanup_fail(t.status());
  target.emplace(std::move(t).value());
  if (created) {
    auto b = open_base(target->info());
    if (!b) return cleanup_fail(b.status());
    base = std::move(b).value();
  }
  const CopyConfig config = copy_config(o, plan, *target, (created && !base) || o.target_is_zero);
  Progress progress(o.progress && !o.quiet, sources.total());
  qcow::Status s = copy_image(sources, base ? &*base : nullptr, *target, config, progress);
  if (s) s = o.bitmaps ? qcow::store_bitmaps(*target, bitmaps) : target->close();
  if (!s) return cleanup_fail(s);
  progress.finish();
  return 0;
}

}  // namespace qimg
