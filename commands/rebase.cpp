// qimg rebase: qemu-img 7.2's img_rebase() order of checks and messages.
#include "commands/rebase.hpp"

#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/image_open.hpp"
#include "cli/options.hpp"
#include "cli/output.hpp"
#include "cli/secrets.hpp"
#include "cli/writable_image.hpp"
#include "qcow/chain.hpp"
#include "qcow/rebase.hpp"

namespace qimg {

void register_rebase(CLI::App& app, std::shared_ptr<RebaseOptions> o) {
  add_secret_options(app);
  const auto last = CLI::MultiOptionPolicy::TakeLast;  // getopt: a repeated option's last value counts
  app.add_option("-f", o->format, "Image format (default: probe)")->multi_option_policy(last);
  app.add_option("-b", o->backing, "New backing file ('' removes it: the image is flattened)")->multi_option_policy(last);
  app.add_option("-F", o->backing_format, "Format of the new backing file (qcow2 or raw)")->multi_option_policy(last);
  app.add_flag("-u", o->unsafe, "Unsafe: only change the backing file name; the new file must read the same as the old");
  app.add_flag("-c", o->compress, "Write the copied clusters compressed");
  app.add_flag("-p", o->progress, "Show progress on a terminal");
  app.add_flag("-q", o->quiet, "Quiet");
  app.add_flag("-U,--force-share", o->force_share, "Open the new backing file without taking the lock");
  app.add_option("-t", o->cache, "Cache mode of the image: writeback (default), writethrough, none, directsync, unsafe")
      ->multi_option_policy(last);
  app.add_option("-T", o->source_cache, "Cache mode of the backing files: writeback (default), writethrough, none, "
                                        "directsync, unsafe")->multi_option_policy(last);
  app.add_option("files", o->files, "FILE");
}

int run_rebase(const RebaseOptions& o) {
  if (o.files.size() != 1) return fail("Expecting one image file name");
  if (!o.unsafe && !o.backing) return fail("Must specify backing file (-b) or use unsafe mode (-u)");
  CacheChoice cache, src_cache;
  if (!parse_cache(o.cache, &cache)) return fail(fmt::format("Invalid cache option: {}", o.cache));
  if (!parse_cache(o.source_cache, &src_cache)) return fail(fmt::format("Invalid source cache option: {}", o.source_cache));

  // The image, writable; unsafe mode ignores its backing file (it may be missing or renamed).
  auto opened = open_writable_image(o.files[0], o.format, cache, !o.unsafe);
  if (!opened) return fail(opened.status());
  qcow::Image& image = opened->image;
  const std::string& filename = opened->filename;
  if (o.backing_format && !qcow::parse_format(*o.backing_format))
    return fail(fmt::format("Invalid format name: '{}'", *o.backing_format));
  if (o.compress && image.format() != qcow::Format::kQcow2) return fail("Compression not supported for this file format");

  // Safe mode: copy what the new backing file would read differently.
  Progress progress(o.progress && !o.quiet, image.size());
  if (!o.unsafe) {
    qcow::RebaseOptions r;
    r.compress = o.compress ? qcow::Compress::kYes : qcow::Compress::kNo;
    r.progress = [&](uint64_t done, uint64_t) { progress.update(done); };
    std::optional<qcow::Image> new_backing;
    if (!o.backing->empty()) {
      // Relative to the image's directory; an image of the current chain is reused as it is.
      const std::string path = qcow::backing_file_path(filename, *o.backing);
      const std::vector<qcow::ImageInfo> chain = image.chain_info();
      qcow::OpenOptions nb;
      nb.force_share = o.force_share;
      if (src_cache.direct) nb.cache = qcow::CacheMode::kNone;
      nb.key_secret = opened->options.key_secret;
      r.new_backing_layer = qcow::find_backing_image(chain, path);
      std::string nb_format = o.backing_format.value_or("");
      std::string nb_path = path;
      if (r.new_backing_layer) {
        nb_path = chain[*r.new_backing_layer].filename;
        nb_format = qcow::format_name(chain[*r.new_backing_layer].format);
      }
      auto opened = qcow::Image::open(nb_path, [&] {
        qcow::OpenOptions x = nb;
        if (!nb_format.empty()) x.format = qcow::parse_format(nb_format);
        return x;
      }());
      if (!opened)
        return fail(fmt::format("Could not open new backing file '{}': {}", *o.backing,
                                open_failure_reason(nb_path, opened.status())));
      new_backing.emplace(std::move(opened).value());
    }
    auto copied = qcow::rebase_copy_differences(image, new_backing ? &*new_backing : nullptr, r);
    if (!copied) return fail(copied.status());
  }

  // The new backing link (qemu-img passes no format along with no file name).
  const bool named = o.backing && !o.backing->empty();
  const std::string shown = o.backing ? *o.backing : "(null)";
  if (auto s = qcow::set_backing_file(image, named ? *o.backing : "", named ? o.backing_format : std::nullopt); !s)
    return fail(fmt::format("Could not change the backing file to '{}': {}", shown, s.message()));
  progress.finish();
  if (auto s = image.close(); !s) return fail(s);
  return 0;
}

}  // namespace qimg
