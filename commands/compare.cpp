#include "commands/compare.hpp"

#include <cstdio>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/image_open.hpp"
#include "cli/options.hpp"
#include "cli/output.hpp"
#include "cli/secrets.hpp"
#include "qcow/compare.hpp"

namespace qimg {

void register_compare(CLI::App& app, std::shared_ptr<CompareOptions> o) {
  add_secret_options(app);
  const auto last = CLI::MultiOptionPolicy::TakeLast;  // qemu-img's getopt: a repeated option's last value counts
  app.add_option("-f", o->format1, "Format of FILE1 (default: probe)")->multi_option_policy(last);
  app.add_option("-F", o->format2, "Format of FILE2 (default: probe)")->multi_option_policy(last);
  app.add_flag("-s", o->strict, "Strict: images of different sizes, or with different allocation, differ");
  app.add_flag("-p", o->progress, "Show progress on a terminal");
  app.add_flag("-q", o->quiet, "Quiet: print nothing, only the exit status tells");
  app.add_flag("-U,--force-share", o->force_share, "Open the images without taking the lock");
  app.add_option("-T", o->source_cache, "Cache mode for reading: writeback (default), writethrough, unsafe, none, directsync")
      ->multi_option_policy(last);
  app.add_option("files", o->files, "FILE1 FILE2");
}

namespace {

// qemu-img compare's exit codes.
constexpr int kIdentical = 0, kDifferent = 1, kOpenFailed = 2, kStatusFailed = 3, kReadFailed = 4;

void say(const CompareOptions& o, const std::string& line) {
  if (o.quiet) return;
  std::printf("%s\n", line.c_str());
  std::fflush(stdout);
}

}  // namespace

int run_compare(const CompareOptions& o) {
  if (o.files.size() != 2) return fail("Expecting two image file names");
  CacheChoice cache;
  if (!parse_cache(o.source_cache, &cache)) {
    fail(fmt::format("Invalid source cache option: {}", o.source_cache));
    return kOpenFailed;
  }
  qcow::OpenOptions options;
  options.force_share = o.force_share;
  if (cache.direct) options.cache = qcow::CacheMode::kNone;
  auto a = open_source_image(o.files[0], o.format1, options);
  if (!a) {
    fail(a.status());
    return kOpenFailed;
  }
  auto b = open_source_image(o.files[1], o.format2, options);
  if (!b) {
    fail(b.status());
    return kOpenFailed;
  }

  Progress progress(o.progress && !o.quiet, std::max(a->size(), b->size()));
  const auto mode = o.strict ? qcow::CompareMode::kStrict : qcow::CompareMode::kNormal;
  auto report = qcow::compare_images(*a, *b, mode, [&](uint64_t done, uint64_t) { progress.update(done); });
  progress.finish();
  if (!report) {
    fail(report.status());
    return kOpenFailed;
  }
  const qcow::CompareReport& r = *report;
  if (r.sizes_differ) say(o, "Warning: Image size mismatch!");
  using Outcome = qcow::CompareReport::Outcome;
  const std::string& failed_file = o.files[r.failed_image];
  switch (r.outcome) {
    case Outcome::kIdentical:
      say(o, "Images are identical.");
      return kIdentical;
    case Outcome::kContentMismatch:
      say(o, fmt::format("Content mismatch at offset {}!", r.offset));
      return kDifferent;
    case Outcome::kStatusMismatch:
      say(o, fmt::format("Strict mode: Offset {} block status mismatch!", r.offset));
      return kDifferent;
    case Outcome::kSizeMismatch:
      say(o, "Strict mode: Image size mismatch!");
      return kDifferent;
    case Outcome::kBlockStatusError:
      fail(r.error);
      fail(fmt::format("Sector allocation test failed for {}", failed_file));
      return kStatusFailed;
    case Outcome::kReadError:
      fail(fmt::format("Error while reading offset {} of {}: {}", r.offset, failed_file, r.error.message()));
      return kReadFailed;
  }
  return kOpenFailed;
}

}  // namespace qimg
