#include "commands/resize.hpp"

#include <cstdio>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/image_open.hpp"
#include "cli/options.hpp"
#include "cli/output.hpp"
#include "cli/secrets.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_resize(CLI::App& app, std::shared_ptr<ResizeOptions> o) {
  add_secret_options(app);
  const auto last = CLI::MultiOptionPolicy::TakeLast;  // getopt: a repeated option's last value counts
  app.add_option("-f", o->format, "Image format (qcow2 or raw; default: probe)")->multi_option_policy(last);
  app.add_option("--preallocation", o->preallocation, "Preallocation of the grown part: off, metadata, falloc, full")
      ->multi_option_policy(last);
  app.add_flag("-q", o->quiet, "Quiet: no \"Image resized.\" line");
  app.add_flag("--shrink", o->shrink, "Allow the size to go down (data past the new end is lost)");
  // The size may start with '-': CLI11 takes "-1G" as an argument, not an option.
  app.add_option("filename", o->filename, "Image file");
  app.add_option("size", o->size, "New size, or +SIZE / -SIZE relative to the current one");
  app.add_option("extra", o->extra)->group("");
}

namespace {

// The size argument as qemu-img reads it: an optional sign (relative to the current
// size), then a size with suffix (QEMU's option parser and its messages).
struct SizeArg {
  int relative = 0;  // +1, -1, or 0 for an absolute size
  uint64_t value = 0;
};

qcow::Result<SizeArg> parse_size_argument(std::string text) {
  SizeArg a;
  if (!text.empty() && (text[0] == '+' || text[0] == '-')) {
    a.relative = text[0] == '+' ? 1 : -1;
    text.erase(0, 1);
  }
  switch (parse_size(text, &a.value)) {
    case SizeParse::kOk: return a;
    case SizeParse::kRange: return qcow::Status::invalid(fmt::format("Value '{}' is out of range for parameter 'size'", text));
    case SizeParse::kInvalid: break;
  }
  return qcow::Status::invalid(
      "Parameter 'size' expects a non-negative number below 2^64 Optional suffix k, M, G, T, P or E means kilo-, "
      "mega-, giga-, tera-, peta- and exabytes, respectively.");
}

}  // namespace

int run_resize(const ResizeOptions& o) {
  if (o.size.empty()) return fail("Not enough arguments");
  if (!o.extra.empty()) return fail("Expecting image file name and size");
  qcow::ResizeOptions resize;
  if (!o.preallocation.empty()) {
    auto mode = parse_preallocation(o.preallocation);
    if (!mode) return fail(fmt::format("Invalid preallocation mode '{}'", o.preallocation));
    resize.preallocation = *mode;
  }
  auto size = parse_size_argument(o.size);
  if (!size) return fail(size.status());

  qcow::OpenOptions open;
  open.writable = true;
  auto image = open_source_image(o.filename, o.format, open);
  if (!image) return fail(image.status());
  // qemu-img computes in int64_t: sizes of 2^63 and more count as negative.
  const uint64_t current = image->size();
  const uint64_t n = size->value;
  const int64_t total = size->relative == 0  ? int64_t(n)
                        : size->relative > 0 ? int64_t(current + n)
                                             : int64_t(current - n);
  if (total <= 0) return fail("New image size must be positive");
  const uint64_t new_size = uint64_t(total);
  if (new_size <= current && resize.preallocation != qcow::Preallocation::kOff)
    return fail("Preallocation can only be used for growing images");
  if (new_size < current && !o.shrink) {
    fail("Use the --shrink option to perform a shrink operation.");
    std::fprintf(stderr, "qimg: warning: Shrinking an image will delete all data beyond the shrunken image's end. "
                         "Before performing such an operation, make sure there is no important data there.\n");
    return 1;
  }
  resize.shrink = new_size < current ? qcow::Shrink::kYes : qcow::Shrink::kNo;
  if (auto s = image->resize(new_size, resize); !s.is_ok()) return fail(s);
  if (auto s = image->close(); !s.is_ok()) return fail(s);
  if (!o.quiet) std::printf("Image resized.\n");
  return 0;
}

}  // namespace qimg
