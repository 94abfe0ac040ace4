#include "commands/map.hpp"

#include <algorithm>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_map(CLI::App& app, std::shared_ptr<MapOptions> o) {
  add_secret_options(app);
  app.add_option("-f", o->format, "Image format (default: probe)");
  app.add_option("--output", o->output, "Output format: human or json");
  app.add_option("--start-offset", o->start_offset, "First guest offset to map");
  app.add_option("--max-length", o->max_length, "Number of bytes to map");
  app.add_flag("-U,--force-share", o->force_share, "Open read-only without taking the lock");
  app.add_option("filename", o->filename, "Image file")->required();
}

namespace {


class MapPrinter {
 public:
  explicit MapPrinter(OutputFormat format) : format_(format) {
    out_.append(format_ == OutputFormat::kHuman
                    ? fmt::format("{:<16}{:<16}{:<16}{}\n", "Offset", "Length", "Mapped to", "File")
                    : "[");
  }

  // qemu-img's dump_map_entry(); `next` may be modified (human format coalescing).
  bool dump(const qcow::Extent& e, qcow::Extent* next) {
    if (format_ == OutputFormat::kHuman) {
      if (e.data && !e.host_offset) {
        error_ = "File contains external, encrypted or compressed clusters.";
        return false;
      }
      if (e.data && !e.zero) {
        out_.append(fmt::format("{:<16}{:<16}{:<16}{}\n", hex_alt(e.offset), hex_alt(e.length),
                                hex_alt(e.host_offset.value_or(0)), e.file));
      }
      if (next && (!next->data || next->zero)) {
        next->data = false;
        next->zero = true;
      }
    } else {
      std::string line = fmt::format(
          "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}", e.offset,
          e.length, e.depth, e.present, e.zero, e.data);
      if (e.host_offset) line += fmt::format(", \"offset\": {}", *e.host_offset);
      line += '}';
      if (next) line += ",\n";
      out_.append(line);
    }
    return true;
  }

  void finish() {
    if (format_ == OutputFormat::kJson) out_.append("]\n");
    out_.flush();
  }
  void flush() { out_.flush(); }
  const std::string& error() const { return error_; }

 private:
  OutputFormat format_;
  OutBuffer out_{stdout, 256 << 10};  // 4 MiB cost map 4 MB of peak memory over qemu-img, and no time
  std::string error_;
};

}  // namespace

int run_map(const MapOptions& o_arg) {
  MapOptions o = o_arg;  // --image-opts rewrites filename and format
  OutputFormat output;
  if (qcow::Status s = parse_output_option(o.output, &output); !s) return fail(s);
  std::string error;
  uint64_t start = 0;
  std::optional<uint64_t> max_length;
  if (!o.start_offset.empty()) {
    auto v = parse_size_arg("start offset", o.start_offset, 0, kInt64Max, &error);
    if (!v) return fail(error);
    start = *v;
  }
  if (!o.max_length.empty()) {
    max_length = parse_size_arg("max length", o.max_length, 0, kInt64Max, &error);
    if (!max_length) return fail(error);
  }
  qcow::OpenOptions open_options;
  if (qcow::Status s = apply_secret_options(&o.filename, &o.format, &open_options); !s) return fail(s);
  if (qcow::Status s = parse_format_option(o.format, &open_options.format); !s) return fail(s);
  open_options.force_share = o.force_share;
  open_options.sequential = true;  // the map walks the image in guest order
  auto image = qcow::Image::open(o.filename, open_options);
  if (!image) return fail(image.status());

  uint64_t end = image->size();
  if (max_length) end = std::min(end, start + *max_length);

  MapPrinter printer(output);
  qcow::Extent curr;
  curr.offset = start;
  bool failed = false;
  if (start < end) {
    qcow::Status s = image->block_status(start, end - start, [&](const qcow::Extent& next) {
      if (qcow::map_mergeable(curr, next)) {
        curr.length += next.length;
        return true;
      }
      qcow::Extent shown = next;  // the human format may coalesce it with what follows
      if (curr.length > 0 && !printer.dump(curr, &shown)) {
        failed = true;
        return false;
      }
      curr = std::move(shown);
      return true;
    });
    if (failed) {
      printer.flush();
      return fail(printer.error());
    }
    if (!s) {
      printer.finish();
      return fail(s);
    }
  }
  if (!printer.dump(curr, nullptr)) {
    printer.flush();
    return fail(printer.error());
  }
  printer.finish();
  return 0;
}

}  // namespace qimg
