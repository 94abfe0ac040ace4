#include "commands/measure.hpp"

#include <cstdio>
#include <optional>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/image_open.hpp"
#include "cli/options.hpp"
#include "cli/output.hpp"
#include "cli/secrets.hpp"
#include "cli/snapshot_param.hpp"
#include "qcow/measure.hpp"

namespace qimg {

void register_measure(CLI::App& app, std::shared_ptr<MeasureOptions> o) {
  add_secret_options(app);
  const auto last = CLI::MultiOptionPolicy::TakeLast;  // qemu-img's getopt: a repeated option's last value counts
  app.add_option("--output", o->output, "Output format: human or json")->multi_option_policy(last);
  app.add_option("-O", o->output_format, "Format of the image to measure for: raw (default) or qcow2")
      ->multi_option_policy(last);
  app.add_option("-o", o->options, "Creation options key=value[,...] of that image")->allow_extra_args(false);
  app.add_option("-f", o->format, "Format of FILE (default: probe)")->multi_option_policy(last);
  app.add_option("-l", o->snapshot, "Measure an internal snapshot of FILE: snapshot.id=ID[,snapshot.name=NAME] or NAME")
      ->multi_option_policy(last);
  app.add_option("--size", o->size, "Virtual size of an empty image (instead of FILE)")->multi_option_policy(last);
  app.add_flag("-U,--force-share", o->force_share, "Open FILE without taking the lock");
  app.add_option("file", o->files, "Image whose data the new image would hold");
}

namespace {

const std::string* given(const CreateSpec& spec, const char* key) {
  auto it = spec.given.find(key);
  return it == spec.given.end() ? nullptr : &it->second;
}

// qemu's qcow2_measure() option handling, in its order and with its messages.
// Numbers and booleans were type-checked by parse_create_options().
qcow::Status qcow2_options(const CreateSpec& spec, qcow::MeasureOptions* m) {
  if (const std::string* v = given(spec, "extended_l2")) m->extended_l2 = parse_bool(*v).value_or(false);
  const auto entries = m->extended_l2 ? qcow::L2Entries::kExtended : qcow::L2Entries::kStandard;
  uint64_t cluster_size = 65536;
  if (const std::string* v = given(spec, "cluster_size")) cluster_size = std::stoull(*v);
  QCOW_TRY(qcow::check_cluster_size(cluster_size, entries));
  m->cluster_size = static_cast<uint32_t>(cluster_size);
  if (const std::string* v = given(spec, "compat")) {
    if (*v == "0.10") m->version = 2;
    else if (*v == "1.1") m->version = 3;
    else return qcow::Status::invalid(fmt::format("Invalid compatibility level: '{}'", *v));
  }
  uint64_t refcount_bits = 16;
  if (const std::string* v = given(spec, "refcount_bits")) refcount_bits = std::stoull(*v);
  QCOW_TRY(qcow::check_refcount_bits(refcount_bits, m->version));
  m->refcount_bits = static_cast<int>(refcount_bits);
  if (const std::string* v = given(spec, "preallocation")) {
    auto mode = parse_preallocation(*v);
    if (!mode) return qcow::Status::invalid(fmt::format("invalid parameter value: {}", *v));
    m->preallocation = *mode;
  }
  m->has_backing_file = given(spec, "backing_file") != nullptr;
  const std::string* encrypt_format = given(spec, "encrypt.format");
  if (encrypt_format && *encrypt_format == "luks") {
    // QEMU sizes the LUKS header by creating one, so it wants the secret too.
    qcow::EncryptOptions& e = m->encrypt;
    e.format = "luks";
    if (const std::string* v = given(spec, "encrypt.cipher-alg")) e.cipher_alg = *v;
    if (const std::string* v = given(spec, "encrypt.cipher-mode")) e.cipher_mode = *v;
    if (const std::string* v = given(spec, "encrypt.ivgen-alg")) e.ivgen_alg = *v;
    if (const std::string* v = given(spec, "encrypt.ivgen-hash-alg")) e.ivgen_hash_alg = *v;
    if (const std::string* v = given(spec, "encrypt.hash-alg")) e.hash_alg = *v;
    if (auto header = qcow::luks_header_bytes(e); !header) return header.status();
    const std::string* secret_id = given(spec, "encrypt.key-secret");
    if (!secret_id) return qcow::Status::invalid("Parameter 'encrypt.key-secret' is required for cipher");
    if (auto secret = secret_by_id(*secret_id); !secret) return secret.status();
  }
  return qcow::Status::ok();
}

// Opens FILE, then the -l snapshot in it (qemu-img opens the image, then loads the snapshot).
qcow::Result<qcow::Image> open_source(const MeasureOptions& o, const SnapshotSpec& snapshot_arg) {
  qcow::OpenOptions options;
  options.force_share = o.force_share;
  auto image = open_source_image(o.files[0], o.format, options);
  if (!image || !snapshot_arg.given()) return image;
  SnapshotSpec snapshot = snapshot_arg;
  std::string filename = o.files[0], format = o.format;
  QCOW_TRY(apply_secret_options(&filename, &format, &options));
  options.format = image->format();
  auto not_found = qcow::Status::invalid("Failed to load snapshot: Can't find snapshot");
  if (image->format() != qcow::Format::kQcow2)
    return qcow::Status::unsupported(fmt::format("Failed to load snapshot: Block format '{}' used by device '' does not "
                                                 "support temporarily loading internal snapshots",
                                                 qcow::format_name(image->format())));
  if (!resolve_snapshot(filename, options, &snapshot).is_ok()) return not_found;
  options.snapshot = snapshot.id_or_name;
  auto at_snapshot = qcow::Image::open(filename, options);
  if (!at_snapshot) return at_snapshot.status().code() == qcow::ErrorCode::kNotFound ? not_found : at_snapshot.status();
  return at_snapshot;
}

void print_measurement(const qcow::Measurement& m, OutputFormat output) {
  std::string text;
  if (output == OutputFormat::kHuman) {
    text = fmt::format("required size: {}\nfully allocated size: {}\n", m.required, m.fully_allocated);
    if (m.bitmaps) text += fmt::format("bitmaps size: {}\n", *m.bitmaps);
  } else {
    Json j = Json::object();
    // QAPI's BlockMeasureInfo fields are int64: qemu-img prints 2^63 as -2^63.
    j["required"] = static_cast<int64_t>(m.required);
    j["fully-allocated"] = static_cast<int64_t>(m.fully_allocated);
    if (m.bitmaps) j["bitmaps"] = static_cast<int64_t>(*m.bitmaps);
    text = json_pretty(qemu_key_order(j)) + "\n";
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

int run_measure(const MeasureOptions& o) {
  // qemu-img's checks, in its order.
  OutputFormat output;
  if (qcow::Status s = parse_output_option(o.output, &output); !s) return fail(s);
  std::optional<uint64_t> size;
  if (o.size) {
    std::string error;
    size = parse_size_arg("image size", *o.size, 0, kInt64Max, &error);
    if (!size) return fail(error);
  }
  SnapshotSpec snapshot;
  if (qcow::Status s = parse_snapshot_param(o.snapshot, "", &snapshot); !s) return fail(s);
  if (qcow::Status s = check_secret_objects(); !s) return fail(s);
  if (o.files.size() > 1) return fail("At most one filename argument is allowed.");
  const bool has_file = o.files.size() == 1;
  if (!has_file && (!o.format.empty() || snapshot.given() || image_opts_given()))
    return fail("--image-opts, -f, and -l require a filename argument.");
  if (has_file && size) return fail("--size N cannot be used together with a filename.");
  if (!has_file && !size) return fail("Either --size N or one filename must be specified.");

  std::optional<qcow::Image> source;
  if (has_file) {
    auto image = open_source(o, snapshot);
    if (!image) return fail(image.status());
    source.emplace(std::move(image).value());
  }

  auto format = qcow::parse_format(o.output_format);
  if (!format) return fail(fmt::format("Unknown file format '{}'", o.output_format));
  OptionList list;
  CreateSpec spec;
  qcow::Status parsed = parse_option_list(o.options, &list);
  if (parsed && list.help) {
    // measure has no -o help: the word is an unknown option, reported in its place.
    list.items.resize(list.help_index);
    parsed = parse_create_options(list, *format, &spec, HostFileOptions::kAccept);
    if (parsed) parsed = qcow::Status::invalid(fmt::format("Invalid parameter '{}'", list.help_item));
  }
  if (parsed) parsed = parse_create_options(list, *format, &spec, HostFileOptions::kAccept);
  if (!parsed) {
    fail(parsed);
    return fail(fmt::format("Invalid options for file format '{}'", o.output_format));
  }

  qcow::MeasureOptions m;
  m.format = *format;
  m.size = size ? *size : spec.size.value_or(0);
  if (*format == qcow::Format::kQcow2) {
    if (qcow::Status s = qcow2_options(spec, &m); !s) return fail(s);
  }
  auto result = qcow::measure(m, source ? &*source : nullptr);
  if (!result) return fail(result.status());
  print_measurement(*result, output);
  return 0;
}

}  // namespace qimg
