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

// qemu-img's MapEntry.
struct MapEntry {
  uint64_t start = 0;
  uint64_t length = 0;
  bool data = false, zero = false, present = false;
  int depth = 0;
  std::optional<uint64_t> offset;
  std::string filename;  // only with an offset
};

// qemu-img's entry_mergeable().
bool mergeable(const MapEntry& curr, const MapEntry& next) {
  if (curr.length == 0) return false;
  if (curr.zero != next.zero || curr.data != next.data || curr.depth != next.depth ||
      curr.present != next.present) {
    return false;
  }
  if (curr.offset.has_value() != next.offset.has_value()) return false;
  if (curr.offset && (curr.filename != next.filename || *curr.offset + curr.length != *next.offset)) return false;
  return true;
}

class MapPrinter {
 public:
  explicit MapPrinter(OutputFormat format) : format_(format) {
    out_.append(format_ == OutputFormat::kHuman
                    ? fmt::format("{:<16}{:<16}{:<16}{}\n", "Offset", "Length", "Mapped to", "File")
                    : "[");
  }

  // qemu-img's dump_map_entry(); `next` may be modified (human format coalescing).
  bool dump(const MapEntry& e, MapEntry* next) {
    if (format_ == OutputFormat::kHuman) {
      if (e.data && !e.offset) {
        error_ = "File contains external, encrypted or compressed clusters.";
        return false;
      }
      if (e.data && !e.zero) {
        out_.append(fmt::format("{:<16}{:<16}{:<16}{}\n", hex_alt(e.start), hex_alt(e.length),
                                hex_alt(e.offset.value_or(0)), e.filename));
      }
      if (next && (!next->data || next->zero)) {
        next->data = false;
        next->zero = true;
      }
    } else {
      std::string line = fmt::format(
          "{{ \"start\": {}, \"length\": {}, \"depth\": {}, \"present\": {}, \"zero\": {}, \"data\": {}", e.start,
          e.length, e.depth, e.present, e.zero, e.data);
      if (e.offset) line += fmt::format(", \"offset\": {}", *e.offset);
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
  OutBuffer out_{stdout, 4 << 20};
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
  auto image = qcow::Image::open(o.filename, open_options);
  if (!image) return fail(image.status());

  uint64_t end = image->size();
  if (max_length) end = std::min(end, start + *max_length);

  MapPrinter printer(output);
  MapEntry curr;
  curr.start = start;
  bool failed = false;
  if (start < end) {
    qcow::Status s = image->block_status(start, end - start, [&](const qcow::Extent& x) {
      MapEntry next;
      next.start = x.offset;
      next.length = x.length;
      next.data = x.data;
      next.zero = x.zero;
      next.present = x.present;
      next.depth = x.depth;
      next.offset = x.host_offset;
      if (x.host_offset) next.filename = x.file;
      if (curr.length > 0 && mergeable(curr, next)) {
        curr.length += next.length;
        return true;
      }
      if (curr.length > 0 && !printer.dump(curr, &next)) {
        failed = true;
        return false;
      }
      curr = std::move(next);
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
