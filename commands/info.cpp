#include "commands/info.hpp"

#include <ctime>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "qcow/image.hpp"
#include "qcow/info.hpp"

namespace qimg {

void register_info(CLI::App& app, std::shared_ptr<InfoOptions> o) {
  add_secret_options(app);
  app.add_option("-f", o->format, "Image format (default: probe)");
  app.add_option("--output", o->output, "Output format: human or json");
  app.add_flag("--backing-chain", o->backing_chain, "Show every image of the backing chain");
  app.add_flag("-U,--force-share", o->force_share, "Open read-only without taking the lock");
  app.add_option("filename", o->filename, "Image file")->required();
}

namespace {

Json snapshot_json(const qcow::SnapshotInfo& s) {
  Json j = Json::object();
  j["id"] = s.id;
  j["name"] = s.name;
  j["vm-state-size"] = s.vm_state_size;
  j["date-sec"] = s.date_sec;
  j["date-nsec"] = s.date_nsec;
  j["vm-clock-sec"] = s.vm_clock_nsec / 1000000000ULL;
  j["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000ULL;
  if (s.icount) j["icount"] = *s.icount;
  return j;
}

// qemu's QCryptoBlockInfo: {"format": "aes"} or the LUKS header details.
Json encrypt_json(const qcow::ImageInfo& info) {
  Json e = Json::object();
  e["format"] = qcow::encryption_format_name(info.encrypt_format);
  if (!info.luks) return e;
  const qcow::LuksInfo& l = *info.luks;
  e["cipher-alg"] = l.cipher_alg;
  e["cipher-mode"] = l.cipher_mode;
  e["ivgen-alg"] = l.ivgen_alg;
  if (!l.ivgen_hash_alg.empty()) e["ivgen-hash-alg"] = l.ivgen_hash_alg;
  e["hash-alg"] = l.hash_alg;
  e["uuid"] = l.uuid;
  e["payload-offset"] = l.payload_offset;
  e["master-key-iters"] = l.master_key_iters;
  Json slots = Json::array();
  for (const qcow::LuksSlotInfo& s : l.slots) {
    Json j = Json::object();
    j["active"] = s.active;
    if (s.active) {
      j["iters"] = s.iters;
      j["stripes"] = s.stripes;
    }
    j["key-offset"] = s.key_offset;
    slots.push_back(j);
  }
  e["slots"] = slots;
  return e;
}

// The "data" of qemu's ImageInfoSpecificQCow2.
Json qcow2_specific(const qcow::ImageInfo& info) {
  Json d = Json::object();
  d["compat"] = info.version >= 3 ? "1.1" : "0.10";
  d["compression-type"] = qcow::compression_type_name(info.compression_type);
  if (info.version >= 3) {
    d["lazy-refcounts"] = info.lazy_refcounts;
    if (!info.bitmaps.empty()) {
      Json list = Json::array();
      for (const auto& b : info.bitmaps) {
        Json flags = Json::array();
        if (b.in_use) flags.push_back("in-use");
        if (b.auto_) flags.push_back("auto");
        list.push_back({{"flags", flags}, {"name", b.name}, {"granularity", b.granularity}});
      }
      d["bitmaps"] = list;
    }
  }
  d["refcount-bits"] = info.refcount_bits;
  if (info.encrypt_format != qcow::EncryptionFormat::kNone) d["encrypt"] = encrypt_json(info);
  if (info.version >= 3) {
    d["corrupt"] = info.corrupt;
    d["extended-l2"] = info.extended_l2;
    if (!info.data_file.empty()) d["data-file"] = info.data_file;
    if (info.incompatible_features & (1u << 2)) d["data-file-raw"] = info.data_file_raw;  // external data file bit
  }
  return d;
}

// qemu's ImageInfo as JSON, keys in QDict order.
Json info_json(const qcow::ImageInfo& info) {
  const bool qcow2 = info.format == qcow::Format::kQcow2;
  Json j = Json::object();
  j["virtual-size"] = info.virtual_size;
  j["filename"] = info.filename;
  if (qcow2) j["cluster-size"] = info.cluster_size;
  j["format"] = qcow::format_name(info.format);
  j["actual-size"] = info.actual_size;
  if (info.encrypt_format != qcow::EncryptionFormat::kNone) j["encrypted"] = true;
  j["dirty-flag"] = info.dirty;
  if (!info.backing_filename.empty()) {
    j["backing-filename"] = info.backing_filename;
    if (!info.full_backing_filename.empty()) j["full-backing-filename"] = info.full_backing_filename;
    if (!info.backing_format.empty()) j["backing-filename-format"] = info.backing_format;
  }
  if (!info.snapshots.empty()) {
    Json list = Json::array();
    for (const auto& s : info.snapshots) list.push_back(snapshot_json(s));
    j["snapshots"] = list;
  }
  if (qcow2) j["format-specific"] = {{"type", "qcow2"}, {"data", qcow2_specific(info)}};
  return qemu_key_order(j);
}

// qemu's dump_qobject()/dump_qdict()/dump_qlist() for "Format specific information".
void dump_human(std::string& out, const Json& v, int indent);

void dump_entry(std::string& out, const std::string& label, const Json& v, int indent) {
  const bool composite = v.is_object() || v.is_array();
  out += fmt::format("{:{}}{}:{}", "", indent * 4, label, composite ? '\n' : ' ');
  dump_human(out, v, indent + 1);
  if (!composite) out += '\n';
}

void dump_human(std::string& out, const Json& v, int indent) {
  if (v.is_object()) {
    for (auto it = v.begin(); it != v.end(); ++it) {
      std::string key = it.key();
      for (char& c : key) {
        if (c == '-') c = ' ';
      }
      dump_entry(out, key, it.value(), indent);
    }
  } else if (v.is_array()) {
    int i = 0;
    for (const auto& e : v) dump_entry(out, fmt::format("[{}]", i++), e, indent);
  } else if (v.is_string()) {
    out += v.get<std::string>();
  } else {
    out += v.dump();
  }
}

std::string snapshot_line(const qcow::SnapshotInfo& s) {
  char date[64] = "";
  std::time_t t = s.date_sec;
  std::tm tm{};
  if (localtime_r(&t, &tm)) std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", &tm);
  const uint64_t secs = s.vm_clock_nsec / 1000000000ULL;
  std::string clock = fmt::format("{:02}:{:02}:{:02}.{:03}", secs / 3600, secs / 60 % 60, secs % 60,
                                  s.vm_clock_nsec / 1000000 % 1000);
  std::string icount = s.icount ? std::to_string(*s.icount) : "";
  return fmt::format("{:<9} {:<16} {:>8}{:>20}{:>13}{:>11}", s.id, s.name, format_size(s.vm_state_size),
                     date, clock, icount);
}

// qemu's bdrv_image_info_dump().
std::string info_human(const qcow::ImageInfo& info) {
  std::string out;
  out += fmt::format("image: {}\nfile format: {}\nvirtual size: {} ({} bytes)\ndisk size: {}\n", info.filename,
                     qcow::format_name(info.format), format_size(info.virtual_size), info.virtual_size,
                     format_size(info.actual_size));
  if (info.encrypt_format != qcow::EncryptionFormat::kNone) out += "encrypted: yes\n";
  if (info.format == qcow::Format::kQcow2) out += fmt::format("cluster_size: {}\n", info.cluster_size);
  if (info.dirty) out += "cleanly shut down: no\n";
  if (!info.backing_filename.empty()) {
    out += fmt::format("backing file: {}", info.backing_filename);
    if (info.full_backing_filename.empty()) {
      out += " (cannot determine actual path)";
    } else if (info.full_backing_filename != info.backing_filename) {
      out += fmt::format(" (actual path: {})", info.full_backing_filename);
    }
    out += '\n';
    if (!info.backing_format.empty()) out += fmt::format("backing file format: {}\n", info.backing_format);
  }
  out += snapshot_list_human(info.snapshots);
  out += format_specific_human(info);
  return out;
}

}  // namespace

std::string snapshot_list_human(const std::vector<qcow::SnapshotInfo>& snapshots) {
  if (snapshots.empty()) return "";
  std::string out = fmt::format("Snapshot list:\n{:<10}{:<17}{:>8}{:>20}{:>13}{:>11}\n", "ID", "TAG", "VM SIZE", "DATE",
                                "VM CLOCK", "ICOUNT");
  for (const auto& s : snapshots) out += snapshot_line(s) + '\n';
  return out;
}

std::string format_specific_human(const qcow::ImageInfo& info) {
  std::string out;
  if (info.format == qcow::Format::kQcow2) {
    out += "Format specific information:\n";
    dump_human(out, qemu_key_order(qcow2_specific(info)), 1);
  }
  return out;
}

int run_info(const InfoOptions& o_arg) {
  InfoOptions o = o_arg;  // --image-opts rewrites filename and format
  OutputFormat output;
  if (qcow::Status s = parse_output_option(o.output, &output); !s) return fail(s);
  qcow::OpenOptions open_options;
  if (qcow::Status s = apply_secret_options(&o.filename, &o.format, &open_options); !s) return fail(s);
  if (qcow::Status s = parse_format_option(o.format, &open_options.format); !s) return fail(s);
  open_options.force_share = o.force_share;
  open_options.open_backing = o.backing_chain;
  open_options.open_data_file = false;  // metadata only, as qemu-img info
  auto image = qcow::Image::open(o.filename, open_options);
  if (!image) return fail(image.status());

  // chain_info() lists this image, then each backing file (only opened with --backing-chain).
  std::vector<qcow::ImageInfo> chain = image->chain_info();

  std::string out;
  if (output == OutputFormat::kJson) {
    if (o.backing_chain) {
      Json list = Json::array();
      for (const auto& info : chain) list.push_back(info_json(info));
      out = json_pretty(list);
    } else {
      out = json_pretty(info_json(chain[0]));
    }
    out += '\n';
  } else {
    for (size_t i = 0; i < chain.size(); ++i) {
      if (i > 0) out += '\n';
      out += info_human(chain[i]);
    }
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  return 0;
}

}  // namespace qimg
