// qimg commit: qemu-img 7.2's img_commit() order of checks and messages.
//
// Three handles: the image opened writable without its chain (it holds the
// image's lock and is emptied at the end), the image's view opened read-only
// without locks (what is copied), and BASE opened writable (its own lock).
#include "commands/commit.hpp"

#include <cstdio>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/image_open.hpp"
#include "cli/options.hpp"
#include "cli/output.hpp"
#include "cli/secrets.hpp"
#include "cli/writable_image.hpp"
#include "qcow/chain.hpp"
#include "qcow/commit.hpp"

namespace qimg {

void register_commit(CLI::App& app, std::shared_ptr<CommitOptions> o) {
  add_secret_options(app);
  const auto last = CLI::MultiOptionPolicy::TakeLast;  // getopt: a repeated option's last value counts
  app.add_option("-f", o->format, "Image format (default: probe)")->multi_option_policy(last);
  app.add_option("-b", o->base, "Commit into this image of the backing chain (default: the backing file); implies -d")
      ->multi_option_policy(last);
  app.add_flag("-d", o->drop, "Do not empty the image after the commit");
  app.add_option("-r", o->rate_limit, "Rate limit in bytes per second (k, M, G suffixes)")->multi_option_policy(last);
  app.add_flag("-p", o->progress, "Show progress on a terminal");
  app.add_flag("-q", o->quiet, "Quiet");
  app.add_option("-t", o->cache, "Cache mode: writeback (default), writethrough, none, directsync, unsafe")
      ->multi_option_policy(last);
  app.add_option("files", o->files, "FILE");
}

int run_commit(const CommitOptions& o) {
  std::optional<uint64_t> rate;
  if (!o.rate_limit.empty()) {
    std::string error;
    rate = parse_size_arg("rate limit", o.rate_limit, 0, kInt64Max, &error);
    if (!rate) return fail(error);
  }
  if (o.files.size() != 1) return fail("Expecting one image file name");
  CacheChoice cache;
  if (!parse_cache(o.cache, &cache)) return fail(fmt::format("Invalid cache option: {}", o.cache));
  const bool drop = o.drop || o.base;  // -b implies -d

  // The image, writable and locked; its chain is opened by the view below.
  auto opened = open_writable_image(o.files[0], o.format, cache, false);
  if (!opened) return fail(opened.status());
  qcow::Image& image = opened->image;
  const qcow::OpenOptions& options = opened->options;
  qcow::OpenOptions view_options = options;
  view_options.writable = false;
  view_options.open_backing = true;
  view_options.force_share = true;  // the handle above holds the image's lock
  auto view = qcow::Image::open(opened->filename, view_options);
  if (!view) return fail(could_not_open(o.files[0], view.status()));

  const std::vector<qcow::ImageInfo> chain = view->chain_info();
  size_t layer = 1;
  if (o.base) {
    auto found = qcow::find_backing_image(chain, *o.base);
    if (!found) return fail(fmt::format("Did not find '{}' in the backing chain of '{}'", *o.base, o.files[0]));
    layer = *found;
  } else if (chain.size() < 2) {
    return fail("Image does not have a backing file");
  }

  qcow::OpenOptions base_options = options;
  base_options.open_backing = true;
  base_options.format = chain[layer].format;
  auto base = qcow::Image::open(chain[layer].filename, base_options);
  if (!base) return fail(base.status());
  Progress progress(o.progress && !o.quiet, view->size());
  qcow::CommitOptions c;
  c.rate_limit = rate.value_or(0);
  c.progress = [&](uint64_t done, uint64_t) { progress.update(done); };
  auto done = qcow::commit_into_base(*view, *base, layer, c);
  if (!done) return fail(done.status());
  if (auto s = base->close(); !s) return fail(s);
  if (!drop) {
    // BASE is complete and flushed: the image may read from it again.
    if (auto s = qcow::make_image_empty(image); !s && s.code() != qcow::ErrorCode::kUnsupported) return fail(s);
  }
  if (auto s = image.close(); !s) return fail(s);
  progress.finish();
  if (!o.quiet) std::printf("Image committed.\n");
  return 0;
}

}  // namespace qimg
