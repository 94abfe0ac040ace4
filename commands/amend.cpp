#include "commands/amend.hpp"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>

#include "cli/options.hpp"
#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "qcow/amend.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_amend(CLI::App& app, std::shared_ptr<AmendOptions> o) {
  add_secret_options(app);
  app.add_option("-f", o->format, "Image format (qcow2; default: probe)");
  app.add_option("-o", o->options, "Options to change: compat, refcount_bits, lazy_refcounts, backing_file, "
                                    "backing_fmt, size, extended_l2, data_file, data_file_raw (-o help lists them)")->allow_extra_args(false);
  app.add_flag("-p", o->progress, "Show progress");
  app.add_flag("-q", o->quiet, "Quiet");
  app.add_flag("--force", o->force, "Allow changes qemu-img asks to force");
  app.add_option("filename", o->filename, "Image file")->required();
}

namespace {

void print_amend_help() {
  std::printf(
      "Amend options for 'qcow2':\n"
      "  backing_file=<str>     - File name of a base image\n"
      "  backing_fmt=<str>      - Image format of the base image\n"
      "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
      "  data_file=<str>        - File name of an external data file\n"
      "  data_file_raw=<bool (on/off)> - The external data file must stay valid as a raw image (off only)\n"
      "  extended_l2=<bool (on/off)> - Extended L2 tables (converted in place, without copying guest data)\n"
      "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n"
      "  refcount_bits=<num>    - Width of a reference count entry in bits\n"
      "  size=<size>            - Virtual disk size (grow only)\n");
}

}  // namespace

int run_amend(const AmendOptions& o) {
  OptionList list;
  if (auto s = parse_option_list(o.options, &list); !s.is_ok()) return fail(s);
  if (list.help) {
    print_amend_help();
    return 0;
  }
  if (o.options.empty()) return fail("Must specify options (-o)");
  std::string filename = o.filename, format = o.format;
  qcow::OpenOptions open_options;  // --object/--image-opts/--key-secret for encrypted images
  if (auto s = apply_secret_options(&filename, &format, &open_options); !s.is_ok()) return fail(s);
  if (!format.empty() && format != "qcow2")
    return fail(fmt::format("Format driver '{}' does not support option amendment", format));
  qcow::AmendOptions a;
  a.key_secret = open_options.key_secret;
  a.overlap_check = open_options.overlap_check;
  std::optional<uint64_t> new_size;
  for (const auto& item : list.items) {
    const std::string& k = item.key;
    const std::string& v = item.value;
    auto boolean = [&]() -> std::optional<bool> {
      auto b = parse_bool(v);
      if (!b) fail(fmt::format("Parameter '{}' expects 'on' or 'off'", k));
      return b;
    };
    if (k == "compat") {
      if (v == "0.10" || v == "v2") a.version = 2;
      else if (v == "1.1" || v == "v3") a.version = 3;
      else return fail(fmt::format("Invalid compatibility level: '{}'", v));
    } else if (k == "refcount_bits") {
      char* end = nullptr;
      unsigned long b = std::strtoul(v.c_str(), &end, 10);
      if (v.empty() || *end) return fail(fmt::format("Parameter 'refcount_bits' expects a number"));
      a.refcount_bits = int(b);
    } else if (k == "lazy_refcounts") {
      auto b = boolean();
      if (!b) return 1;
      a.lazy_refcounts = *b;
    } else if (k == "extended_l2") {
      auto b = boolean();
      if (!b) return 1;
      a.extended_l2 = *b;
    } else if (k == "backing_file") {
      a.backing_file = v;
    } else if (k == "backing_fmt") {
      a.backing_format = v;
    } else if (k == "size") {
      std::string err;
      auto n = parse_size_arg("image size", v, 0, UINT64_MAX >> 1, &err);
      if (!n) return fail(err);
      new_size = *n;
    } else if (k == "cluster_size" || k == "preallocation" || k == "compression_type" || k == "encryption") {
      return fail(fmt::format("Invalid parameter '{}'\nThis option is only supported for image creation", k));
    } else if (k == "data_file") {
      a.data_file = v;
    } else if (k == "data_file_raw") {
      auto b = boolean();
      if (!b) return 1;
      a.data_file_raw = *b;
    } else if (k.rfind("encrypt.", 0) == 0) {
      return fail(fmt::format("Changing '{}' is not supported yet", k));
    } else {
      return fail(fmt::format("Invalid parameter '{}'", k));
    }
  }
  a.force = o.force;
  Progress progress(o.progress && !o.quiet, 1000);
  if (o.progress && !o.quiet) a.progress = [&](double f) { progress.update(uint64_t(f * 1000)); };
  if (auto s = qcow::amend_image(filename, a); !s.is_ok()) return fail(s);
  if (new_size) {
    qcow::OpenOptions oo = open_options;
    oo.writable = true;
    auto img = qcow::Image::open(filename, oo);
    if (!img) return fail(img.status());
    if (auto s = img->resize(*new_size); !s.is_ok()) return fail(s);
    if (auto s = img->close(); !s.is_ok()) return fail(s);
  }
  if (o.progress && !o.quiet) progress.finish();
  return 0;
}

}  // namespace qimg
