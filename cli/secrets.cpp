#include "cli/secrets.hpp"

#include <cstdio>
#include <fstream>
#include <iterator>
#include <map>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/output.hpp"

namespace qimg {
namespace {

struct SecretState {
  std::vector<std::string> objects;  // raw --object arguments
  bool image_opts = false;
  std::string key_secret;  // --key-secret
};

SecretState& state() {
  static SecretState s;
  return s;
}

// "a=b,c=d" with ",," as a literal comma; a bare first item is returned as "" key.
std::vector<std::pair<std::string, std::string>> split_list(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string cur;
  auto push = [&] {
    size_t eq = cur.find('=');
    if (eq == std::string::npos) out.emplace_back("", cur);
    else out.emplace_back(cur.substr(0, eq), cur.substr(eq + 1));
    cur.clear();
  };
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] == ',') {
      if (i + 1 < text.size() && text[i + 1] == ',') {
        cur += ',';
        ++i;
        continue;
      }
      push();
    } else {
      cur += text[i];
    }
  }
  push();
  return out;
}

qcow::Result<std::string> base64_decode(const std::string& in) {
  auto val = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=' || c == '\n' || c == '\r') continue;
    int v = val(c);
    if (v < 0) return qcow::Status::invalid("Secret data is not valid base64");
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += char((acc >> bits) & 0xff);
    }
  }
  return out;
}

// Parses every --object; id -> secret bytes.
qcow::Status load_secrets(std::map<std::string, std::string>* out) {
  for (const std::string& obj : state().objects) {
    auto items = split_list(obj);
    std::string type, id, data, file, format = "raw";
    bool has_data = false, has_file = false;
    for (const auto& [k, v] : items) {
      if (k.empty() || k == "qom-type") type = v;
      else if (k == "id") id = v;
      else if (k == "data") { data = v; has_data = true; }
      else if (k == "file") { file = v; has_file = true; }
      else if (k == "format") format = v;
      else if (k == "keyid" || k == "iv") return qcow::Status::unsupported("encrypted secret objects (keyid, iv) are not supported");
      else return qcow::Status::invalid(fmt::format("Invalid parameter '{}'", k));
    }
    if (type != "secret") return qcow::Status::invalid(fmt::format("invalid object type: {}", type));
    if (id.empty()) return qcow::Status::invalid("Parameter 'id' is missing");
    if (has_data == has_file) return qcow::Status::invalid("Either 'data' or 'file' must be provided, but not both");
    if (has_file) {
      std::ifstream f(file, std::ios::binary);
      if (!f) return qcow::Status::invalid(fmt::format("Unable to read {}", file));
      data.assign(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
    }
    if (format == "base64") {
      QCOW_ASSIGN_OR_RETURN(data, base64_decode(data));
    } else if (format != "raw") {
      return qcow::Status::invalid(fmt::format("Parameter 'format' does not accept value '{}'", format));
    }
    if (out->count(id)) return qcow::Status::invalid(fmt::format("attempt to add duplicate property '{}'", id));
    (*out)[id] = std::move(data);
  }
  return qcow::Status::ok();
}

}  // namespace

void add_secret_options(CLI::App& app) {
  app.add_option("--object", state().objects, "secret,id=ID,data=PASSPHRASE or secret,id=ID,file=PATH")
      ->allow_extra_args(false);
  app.add_flag("--image-opts", state().image_opts,
               "The filename is an option list: driver=qcow2,file.filename=IMG,encrypt.key-secret=ID");
  app.add_option("--key-secret", state().key_secret, "ID of the --object secret that unlocks the image");
}

qcow::Status check_secret_objects() {
  std::map<std::string, std::string> secrets;
  return load_secrets(&secrets);
}

bool image_opts_given() { return state().image_opts; }

qcow::Result<std::string> secret_by_id(const std::string& id) {
  std::map<std::string, std::string> secrets;
  QCOW_TRY(load_secrets(&secrets));
  auto it = secrets.find(id);
  if (it == secrets.end()) return qcow::Status::invalid(fmt::format("No secret with id '{}'", id));
  return it->second;
}

qcow::Status apply_secret_options(std::string* filename, std::string* format, qcow::OpenOptions* options) {
  std::string key_id = state().key_secret;
  if (state().image_opts) {
    std::string file;
    for (const auto& [k, v] : split_list(*filename)) {
      if (k == "driver") {
        if (format) *format = v;
      } else if (k == "file.filename" || k == "file") {
        file = v;
      } else if (k == "encrypt.key-secret") {
        key_id = v;
      } else if (k == "file.driver" || k == "encrypt.format") {
        // file.driver=file is the only host driver; encrypt.format is read from the image
      } else if (k == "overlap-check" || k == "overlap-check.template") {
        auto level = qcow::parse_overlap_check(v);
        if (!level)
          return qcow::Status::invalid(fmt::format("Unsupported value '{}' for qcow2 option '{}'. Allowed are any of the "
                                                   "following: none, constant, cached, all", v, k));
        options->overlap_check = *level;
      } else if (k == "l2-cache-size" || k == "l2-cache-entry-size" || k == "refcount-cache-size") {
        uint64_t bytes = 0;
        if (parse_size(v, &bytes) != SizeParse::kOk)
          return qcow::Status::invalid(fmt::format("Parameter '{}' expects a non-negative number below 2^64", k));
        (k == "l2-cache-size" ? options->l2_cache_size
                              : k == "l2-cache-entry-size" ? options->l2_cache_entry_size : options->refcount_cache_size) = bytes;
      } else {
        return qcow::Status::invalid(fmt::format("Invalid --image-opts parameter '{}'", k));
      }
    }
    if (file.empty()) return qcow::Status::invalid("--image-opts needs file.filename=IMAGE");
    *filename = file;
  }
  if (!key_id.empty()) {
    QCOW_ASSIGN_OR_RETURN(std::string secret, secret_by_id(key_id));
    options->key_secret = std::move(secret);
  } else {
    // Syntax errors in --object are reported even when no image uses them.
    QCOW_TRY(check_secret_objects());
  }
  return qcow::Status::ok();
}

void warn_if_legacy_aes(const qcow::Image& image) {
  if (image.info().encrypt_format == qcow::EncryptionFormat::kAes)
    std::fprintf(stderr,
                 "qimg: warning: %s: legacy qcow2 AES encryption is insecure and deprecated; convert the image to "
                 "encrypt.format=luks\n",
                 image.path().c_str());
}

}  // namespace qimg
