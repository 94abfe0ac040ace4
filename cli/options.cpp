#include "cli/options.hpp"

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

#include "cli/output.hpp"

namespace qimg {
namespace {

enum class OptType { kStr, kBool, kSize, kNum };

struct OptDesc {
  const char* name;
  OptType type;
  const char* help;
  const char* def;  // default shown in the "Formatting" line, or nullptr
};

// Alphabetical, as `-o help` lists them.
const OptDesc kQcow2Opts[] = {
    {"backing_file", OptType::kStr, "File name of a base image", nullptr},
    {"backing_fmt", OptType::kStr, "Image format of the base image", nullptr},
    {"cluster_size", OptType::kSize, "qcow2 cluster size", "65536"},
    {"compat", OptType::kStr, "Compatibility level (v2 [0.10] or v3 [1.1])", nullptr},
    {"compression_type", OptType::kStr, "Compression method used for image cluster compression", "zlib"},
    {"data_file", OptType::kStr, "File name of an external data file", nullptr},
    {"data_file_raw", OptType::kBool, "The external data file must stay valid as a raw image", nullptr},
    {"encrypt.cipher-alg", OptType::kStr, "Name of encryption cipher algorithm", nullptr},
    {"encrypt.cipher-mode", OptType::kStr, "Name of encryption cipher mode", nullptr},
    {"encrypt.format", OptType::kStr, "Encrypt the image, format choices: 'aes', 'luks'", nullptr},
    {"encrypt.hash-alg", OptType::kStr, "Name of encryption hash algorithm", nullptr},
    {"encrypt.iter-time", OptType::kNum, "Time to spend in PBKDF in milliseconds", nullptr},
    {"encrypt.ivgen-alg", OptType::kStr, "Name of IV generator algorithm", nullptr},
    {"encrypt.ivgen-hash-alg", OptType::kStr, "Name of IV generator hash algorithm", nullptr},
    {"encrypt.key-secret", OptType::kStr, "ID of secret providing qcow AES key or LUKS passphrase", nullptr},
    {"encryption", OptType::kBool,
     "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)", nullptr},
    {"extended_l2", OptType::kBool, "Extended L2 tables", "off"},
    {"lazy_refcounts", OptType::kBool, "Postpone refcount updates", "off"},
    {"preallocation", OptType::kStr, "Preallocation mode (allowed values: off, metadata, falloc, full)", nullptr},
    {"refcount_bits", OptType::kNum, "Width of a reference count entry in bits", "16"},
    {"size", OptType::kSize, "Virtual disk size", nullptr},
};

const OptDesc kRawOpts[] = {
    {"preallocation", OptType::kStr, "Preallocation mode (allowed values: off, falloc, full)", nullptr},
    {"size", OptType::kSize, "Virtual disk size", nullptr},
};

// qemu's file driver (file-posix) creation options, beyond size and preallocation.
const OptDesc kHostFileOpts[] = {
    {"nocow", OptType::kBool, "Turn off copy-on-write (valid only on btrfs)", nullptr},
    {"extent_size_hint", OptType::kSize, "Extent size hint for the image file, 0 to disable", nullptr},
};

// The order qemu-img prints options in its "Formatting" line.
const char* const kQcow2PrintOrder[] = {
    "encryption", "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode",
    "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "encrypt.iter-time",
    "cluster_size", "extended_l2", "preallocation", "compression_type", "size", "compat",
    "backing_file", "backing_fmt", "data_file", "data_file_raw", "lazy_refcounts", "refcount_bits",
};
const char* const kRawPrintOrder[] = {"size", "preallocation"};

std::span<const OptDesc> descs_for(qcow::Format format) {
  if (format == qcow::Format::kRaw) return kRawOpts;
  return kQcow2Opts;
}

const OptDesc* find_desc(qcow::Format format, const std::string& key) {
  for (const auto& d : descs_for(format)) {
    if (key == d.name) return &d;
  }
  return nullptr;
}

// qemu's parse_option_number(): base 0 (decimal, 0x hex, 0 octal), whole string.
std::optional<uint64_t> parse_number(const std::string& text) {
  if (text.empty() || text.find('-') != std::string::npos) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(text.c_str(), &end, 0);
  if (errno != 0 || end == text.c_str() || *end != '\0') return std::nullopt;
  return v;
}

// Returns the normalised display value, or an error.
qcow::Status check_type(const OptDesc& d, const std::string& value, std::string* shown) {
  switch (d.type) {
    case OptType::kStr:
      *shown = value;
      return qcow::Status::ok();
    case OptType::kBool:
      if (!parse_bool(value)) {
        return qcow::Status::invalid(fmt::format("Parameter '{}' expects 'on' or 'off'", d.name));
      }
      *shown = value;
      return qcow::Status::ok();
    case OptType::kNum: {
      auto n = parse_number(value);
      if (!n) return qcow::Status::invalid(fmt::format("Parameter '{}' expects a number", d.name));
      *shown = std::to_string(*n);
      return qcow::Status::ok();
    }
    case OptType::kSize: {
      uint64_t v = 0;
      SizeParse r = parse_size(value, &v);
      if (r == SizeParse::kRange) {
        return qcow::Status::invalid(fmt::format("Value '{}' is out of range for parameter '{}'", value, d.name));
      }
      if (r != SizeParse::kOk) {
        return qcow::Status::invalid(fmt::format(
            "Parameter '{}' expects a non-negative number below 2^64\n"
            "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
            "and exabytes, respectively.",
            d.name));
      }
      *shown = std::to_string(v);
      return qcow::Status::ok();
    }
  }
  return qcow::Status::internal("bad option type");
}

const std::string* get(const CreateSpec& spec, const char* key) {
  auto it = spec.given.find(key);
  return it == spec.given.end() ? nullptr : &it->second;
}

bool get_bool(const CreateSpec& spec, const char* key) {
  const std::string* v = get(spec, key);
  return v && parse_bool(*v).value_or(false);
}


const char* type_tag(OptType t) {
  switch (t) {
    case OptType::kStr: return "<str>";
    case OptType::kBool: return "<bool (on/off)>";
    case OptType::kSize: return "<size>";
    case OptType::kNum: return "<num>";
  }
  return "";
}

}  // namespace

std::optional<bool> parse_bool(std::string_view text) {
  if (text == "on" || text == "yes" || text == "true" || text == "y") return true;
  if (text == "off" || text == "no" || text == "false" || text == "n") return false;
  return std::nullopt;
}

std::optional<qcow::Preallocation> parse_preallocation(std::string_view text) {
  if (text == "off") return qcow::Preallocation::kOff;
  if (text == "metadata") return qcow::Preallocation::kMetadata;
  if (text == "falloc") return qcow::Preallocation::kFalloc;
  if (text == "full") return qcow::Preallocation::kFull;
  return std::nullopt;
}

qcow::Status parse_option_list(const std::vector<std::string>& args, OptionList* out) {
  for (const std::string& arg : args) {
    std::string item;
    auto finish = [&]() {
      if (item == "help" || item == "?") {
        if (!out->help) {
          out->help_item = item;
          out->help_index = out->items.size();
        }
        out->help = true;
      } else if (!item.empty()) {
        size_t eq = item.find('=');
        if (eq == std::string::npos) {
          out->items.push_back({item, "on"});
        } else {
          out->items.push_back({item.substr(0, eq), item.substr(eq + 1)});
        }
      }
      item.clear();
    };
    for (size_t i = 0; i < arg.size(); ++i) {
      if (arg[i] == ',') {
        if (i + 1 < arg.size() && arg[i + 1] == ',') {
          item += ',';
          ++i;
        } else {
          finish();
        }
      } else {
        item += arg[i];
      }
    }
    finish();
  }
  return qcow::Status::ok();
}

qcow::Status parse_create_options(const OptionList& list, qcow::Format format, CreateSpec* spec,
                                  HostFileOptions host_file) {
  spec->format = format;
  for (const OptionItem& item : list.items) {
    const OptDesc* d = find_desc(format, item.key);
    if (!d && host_file == HostFileOptions::kAccept) {
      for (const auto& h : kHostFileOpts) {
        if (item.key == h.name) d = &h;
      }
    }
    if (!d) return qcow::Status::invalid(fmt::format("Invalid parameter '{}'", item.key));
    std::string shown;
    QCOW_TRY(check_type(*d, item.value, &shown));
    spec->given[item.key] = shown;
    if (item.key == "size") spec->size = std::stoull(shown);
  }
  return qcow::Status::ok();
}

void set_create_option(CreateSpec* spec, const std::string& key, const std::string& value) {
  spec->given[key] = value;
}

qcow::Status validate_create_options(CreateSpec* spec) {
  qcow::CreateOptions& o = spec->options;
  o.format = spec->format;
  o.size = spec->size.value_or(0);
  // Sizes are rounded up to whole sectors, as qemu-img does.
  if (o.size % 512) o.size += 512 - o.size % 512;

  if (const std::string* v = get(*spec, "preallocation")) {
    auto mode = parse_preallocation(*v);
    if (!mode) return qcow::Status::invalid(fmt::format("Parameter 'preallocation' does not accept value '{}'", *v));
    o.preallocation = *mode;
  }
  if (spec->format == qcow::Format::kRaw) return qcow::validate_create_options(o);

  if (const std::string* v = get(*spec, "compat")) {
    if (*v == "0.10" || *v == "v2") o.version = 2;
    else if (*v == "1.1" || *v == "v3") o.version = 3;
    else return qcow::Status::invalid(fmt::format("Parameter 'version' does not accept value '{}'", *v));
  }
  if (const std::string* v = get(*spec, "compression_type")) {
    if (*v == "zlib") o.compression_type = qcow::CompressionType::kZlib;
    else if (*v == "zstd") o.compression_type = qcow::CompressionType::kZstd;
    else return qcow::Status::invalid(fmt::format("Parameter 'compression-type' does not accept value '{}'", *v));
  }
  if (get_bool(*spec, "encryption")) o.encrypt.format = "aes";
  if (const std::string* v = get(*spec, "encrypt.format")) o.encrypt.format = *v;
  if (o.encrypt.format == "luks") {
    if (!get(*spec, "encrypt.key-secret")) return qcow::Status::invalid("Parameter 'encrypt.key-secret' is required for cipher");
    if (const std::string* v = get(*spec, "encrypt.cipher-alg")) o.encrypt.cipher_alg = *v;
    if (const std::string* v = get(*spec, "encrypt.cipher-mode")) o.encrypt.cipher_mode = *v;
    if (const std::string* v = get(*spec, "encrypt.ivgen-alg")) o.encrypt.ivgen_alg = *v;
    if (const std::string* v = get(*spec, "encrypt.ivgen-hash-alg")) o.encrypt.ivgen_hash_alg = *v;
    if (const std::string* v = get(*spec, "encrypt.hash-alg")) o.encrypt.hash_alg = *v;
    if (const std::string* v = get(*spec, "encrypt.iter-time")) o.encrypt.iter_time_ms = std::stoull(*v);
  } else if (o.encrypt.format.empty()) {
    for (const auto& [key, value] : spec->given)
      if (key.starts_with("encrypt.") && key != "encrypt.key-secret")
        return qcow::Status::invalid(fmt::format("Parameter '{}' requires encrypt.format", key));
  }
  if (const std::string* v = get(*spec, "data_file")) o.data_file = *v;
  o.data_file_raw = get_bool(*spec, "data_file_raw");
  o.extended_l2 = get_bool(*spec, "extended_l2");
  if (const std::string* v = get(*spec, "cluster_size")) o.cluster_size = static_cast<uint32_t>(std::min<uint64_t>(std::stoull(*v), UINT32_MAX));
  if (const std::string* v = get(*spec, "backing_file")) o.backing_file = *v;
  if (const std::string* v = get(*spec, "backing_fmt")) o.backing_format = *v;
  o.lazy_refcounts = get_bool(*spec, "lazy_refcounts");
  if (const std::string* v = get(*spec, "refcount_bits")) o.refcount_bits = static_cast<int>(std::min<uint64_t>(std::stoull(*v), 1024));
  return qcow::validate_create_options(o);
}

std::string formatting_line(const std::string& filename, const CreateSpec& spec) {
  std::string line = fmt::format("Formatting '{}', fmt={}", filename, qcow::format_name(spec.format));
  auto emit = [&](const char* key) {
    const std::string* v = get(spec, key);
    const OptDesc* d = find_desc(spec.format, key);
    if (v) {
      line += fmt::format(" {}={}", key, *v);
    } else if (key == std::string_view("size") && spec.size) {
      line += fmt::format(" size={}", *spec.size);
    } else if (d && d->def) {
      line += fmt::format(" {}={}", key, d->def);
    }
  };
  if (spec.format == qcow::Format::kRaw) {
    for (const char* key : kRawPrintOrder) emit(key);
  } else {
    for (const char* key : kQcow2PrintOrder) emit(key);
  }
  return line;
}

void print_create_help(qcow::Format format) {
  std::printf("Supported %s options:\n", qcow::format_name(format));
  for (const auto& d : descs_for(format)) {
    std::string name = fmt::format("{}={}", d.name, type_tag(d.type));
    std::printf("  %-22s - %s\n", name.c_str(), d.help);
  }
  std::printf("\nThe protocol level may support further options.\n"
              "Specify the target filename to include those options.\n");
}

std::vector<std::string> create_option_names(qcow::Format format) {
  std::vector<std::string> names;
  for (const auto& d : descs_for(format)) names.emplace_back(d.name);
  return names;
}

}  // namespace qimg

namespace qimg {

qcow::Status parse_format_option(const std::string& name, std::optional<qcow::Format>* out) {
  if (name.empty()) {
    out->reset();
    return qcow::Status::ok();
  }
  auto f = qcow::parse_format(name);
  if (!f) return qcow::Status::invalid(fmt::format("Unknown file format '{}'", name));
  *out = *f;
  return qcow::Status::ok();
}

qcow::Status parse_output_option(const std::string& name, OutputFormat* out) {
  if (name == "human") {
    *out = OutputFormat::kHuman;
  } else if (name == "json") {
    *out = OutputFormat::kJson;
  } else {
    return qcow::Status::invalid("--output must be used with human or json as argument.");
  }
  return qcow::Status::ok();
}

// qemu's bdrv_parse_cache_mode().
bool parse_cache(const std::string& text, CacheChoice* c) {
  if (text.empty()) return true;
  c->name = text;
  if (text == "writeback") return true;
  if (text == "none" || text == "off") {
    c->mode = qcow::CacheMode::kNone;
    c->direct = true;
  } else if (text == "writethrough") {
    c->mode = qcow::CacheMode::kWritethrough;
  } else if (text == "directsync") {
    c->mode = qcow::CacheMode::kNone;
    c->sync_each_write = c->direct = true;
  } else if (text == "unsafe") {
    c->flush = false;
  } else {
    return false;
  }
  return true;
}

}  // namespace qimg
