#include "commands/create.hpp"

#include <cstdio>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/image_open.hpp"
#include "cli/options.hpp"
#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_create(CLI::App& app, std::shared_ptr<CreateOptions> o) {
  add_secret_options(app);
  app.add_option("-f", o->format, "Image format: qcow2 or raw (default raw)");
  app.add_option("-o", o->options, "Format options key=value[,...]; '-o help' lists them")
      ->allow_extra_args(false);
  app.add_option("-b", o->backing_file, "Backing file");
  app.add_option("-F", o->backing_format, "Backing file format");
  app.add_flag("-u", o->unsafe, "Do not open the backing file (size must be given)");
  app.add_flag("-q", o->quiet, "Quiet: print nothing on success");
  app.add_option("filename", o->filename, "Image to create");
  app.add_option("size", o->size, "Virtual size (suffixes k, M, G, T, P, E)");
}

namespace {

// A relative backing file name is relative to the new image's directory.
std::string backing_path(const std::string& image, const std::string& backing) {
  if (backing.empty() || backing[0] == '/') return backing;
  size_t slash = image.rfind('/');
  if (slash == std::string::npos) return backing;
  return image.substr(0, slash + 1) + backing;
}

}  // namespace

int run_create(const CreateOptions& o) {
  std::optional<qcow::Format> format;
  if (qcow::Status s = parse_format_option(o.format, &format); !s) {
    return fail(o.filename.empty() ? s.message() : fmt::format("{}: {}", o.filename, s.message()));
  }
  if (!format) format = qcow::Format::kRaw;

  OptionList list;
  if (qcow::Status s = parse_option_list(o.options, &list); !s) return fail(s);
  if (list.help) {
    print_create_help(*format);
    return 0;
  }
  if (o.filename.empty()) return fail("Expecting image file name");
  const std::string& file = o.filename;
  auto file_error = [&](const qcow::Status& s) { return fail(fmt::format("{}: {}", file, s.message())); };

  CreateSpec spec;
  if (qcow::Status s = parse_create_options(list, *format, &spec); !s) return file_error(s);
  if (!o.backing_file.empty()) set_create_option(&spec, "backing_file", o.backing_file);
  if (!o.backing_format.empty()) set_create_option(&spec, "backing_fmt", o.backing_format);
  if (!o.size.empty()) {
    std::string error;
    auto size = parse_size_arg("image size", o.size, 0, kInt64Max, &error);
    if (!size) return fail(error);
    if (spec.size) return fail(fmt::format("{}: The image size must be specified only once", file));
    spec.size = *size;
  }

  // Like qemu-img, open the backing file unless -u: it must exist, and it
  // supplies the size and format when they are not given.
  auto backing_it = spec.given.find("backing_file");
  if (backing_it != spec.given.end() && backing_it->second == file) {
    return fail(fmt::format("{}: Error: Trying to create an image with the same filename as the backing file", file));
  }
  if (backing_it != spec.given.end() && !o.unsafe && *format == qcow::Format::kQcow2) {
    qcow::OpenOptions open_options;
    open_options.force_share = true;
    auto fmt_it = spec.given.find("backing_fmt");
    if (fmt_it != spec.given.end()) {
      if (qcow::Status s = parse_format_option(fmt_it->second, &open_options.format); !s) return file_error(s);
    }
    const std::string backing_file = backing_path(file, backing_it->second);
    auto backing = qcow::Image::open(backing_file, open_options);
    if (!backing) {
      return fail(fmt::format("{}: {}\nCould not open backing image.", file,
                              open_failure_reason(backing_file, backing.status())));
    }
    if (!spec.size) spec.size = backing->size();
    if (fmt_it == spec.given.end()) set_create_option(&spec, "backing_fmt", qcow::format_name(backing->format()));
  }
  if (!spec.size) return fail(fmt::format("{}: Image creation needs a size parameter", file));

  if (!o.quiet) {
    std::printf("%s\n", formatting_line(file, spec).c_str());
    std::fflush(stdout);
  }
  if (qcow::Status s = validate_create_options(&spec); !s) return file_error(s);
  if (!spec.options.encrypt.format.empty()) {
    auto secret = secret_by_id(spec.given["encrypt.key-secret"]);
    if (!secret) return file_error(secret.status());
    spec.options.key_secret = std::move(secret).value();
  }
  if (qcow::Status s = qcow::Image::create(file, spec.options); !s) return fail(s);
  return 0;
}

}  // namespace qimg
