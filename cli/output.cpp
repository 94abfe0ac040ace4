#include "cli/output.hpp"

#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <fmt/format.h>

namespace qimg {

int fail(std::string_view message) {
  std::fflush(stdout);
  std::fprintf(stderr, "qimg: %.*s\n", static_cast<int>(message.size()), message.data());
  return 1;
}

int fail(const qcow::Status& status) { return fail(status.message()); }

// --- Sizes --------------------------------------------------------------------

namespace {

// qemu's suffix_mul() with unit 1024; 0 for "not a suffix".
uint64_t suffix_mul(char c) {
  switch (c) {
    case 'b': case 'B': return 1;
    case 'k': case 'K': return 1ULL << 10;
    case 'm': case 'M': return 1ULL << 20;
    case 'g': case 'G': return 1ULL << 30;
    case 't': case 'T': return 1ULL << 40;
    case 'p': case 'P': return 1ULL << 50;
    case 'e': case 'E': return 1ULL << 60;
    default: return 0;
  }
}

// qemu_strtou64(): strtoull with errors for "no digits" and overflow.
SizeParse strtou64(const char* s, const char** end, int base, uint64_t* out) {
  char* e = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &e, base);
  *end = e;
  if (e == s) return SizeParse::kInvalid;
  if (errno == ERANGE) return SizeParse::kRange;
  *out = v;
  return SizeParse::kOk;
}

}  // namespace

SizeParse parse_size(std::string_view text, uint64_t* out) {
  const std::string str(text);
  if (str.find('\0') != std::string::npos) return SizeParse::kInvalid;
  const char* nptr = str.c_str();
  const char* endptr = nptr;
  uint64_t val = 0;
  uint64_t valf = 0;
  SizeParse r = strtou64(nptr, &endptr, 10, &val);
  if (r != SizeParse::kOk) return r;
  if (std::memchr(nptr, '-', endptr - nptr) != nullptr) return SizeParse::kInvalid;
  if (val == 0 && (*endptr == 'x' || *endptr == 'X')) {
    // Hex: no fraction and no suffix.
    r = strtou64(nptr, &endptr, 16, &val);
    if (r != SizeParse::kOk) return r;
    if (*endptr == '.' || suffix_mul(*endptr) > 0) return SizeParse::kInvalid;
  } else if (*endptr == '.') {
    const char* f = endptr;
    char* fe = nullptr;
    errno = 0;
    double fraction = std::strtod(f, &fe);
    if (fe == f || errno != 0 || !std::isfinite(fraction)) {
      endptr = f + 1;
    } else {
      if (std::memchr(f, 'e', fe - f) || std::memchr(f, 'E', fe - f)) return SizeParse::kInvalid;
      endptr = fe;
      valf = fraction >= 1.0 ? UINT64_MAX : static_cast<uint64_t>(fraction * 0x1p64);
    }
  }
  uint64_t mul = suffix_mul(*endptr);
  if (mul > 0) {
    ++endptr;
  } else {
    mul = 1;
  }
  if (mul == 1) {
    if (valf != 0) return SizeParse::kInvalid;  // a fraction needs a scale
  } else {
    // 64.64 fixed point times mul, rounding 0.5 upward.
    unsigned __int128 whole = static_cast<unsigned __int128>(val) * mul;
    unsigned __int128 frac = static_cast<unsigned __int128>(valf) * mul;
    whole += frac >> 64;
    whole += (static_cast<uint64_t>(frac) >> 63);
    if (whole >> 64) return SizeParse::kRange;
    val = static_cast<uint64_t>(whole);
  }
  if (*endptr != '\0') return SizeParse::kInvalid;
  *out = val;
  return SizeParse::kOk;
}

std::optional<uint64_t> parse_size_arg(std::string_view what, std::string_view text, uint64_t min,
                                       uint64_t max, std::string* error) {
  uint64_t v = 0;
  SizeParse r = parse_size(text, &v);
  if (r == SizeParse::kInvalid) {
    *error = fmt::format(
        "Invalid {} specified. You may use k, M, G, T, P or E suffixes for "
        "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.",
        what);
    return std::nullopt;
  }
  if (r == SizeParse::kRange || v > max || v < min) {
    *error = fmt::format("Invalid {} specified. Must be between {} and {}.", what, min, max);
    return std::nullopt;
  }
  return v;
}

std::string format_size(uint64_t bytes) {
  static const char* const kSuffixes[] = {"", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"};
  int exp = 0;
  std::frexp(static_cast<double>(bytes) / (1000.0 / 1024.0), &exp);
  int i = (exp - 1) / 10;
  if (i < 0) i = 0;
  if (i > 6) i = 6;
  const uint64_t div = 1ULL << (i * 10);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%0.3g %sB", static_cast<double>(bytes) / static_cast<double>(div),
                kSuffixes[i]);
  return buf;
}

std::string format_cvtstr(double value) {
  static const struct {
    double scale;
    const char* suffix;
  } kUnits[] = {{0x1p60, " EiB"}, {0x1p50, " PiB"}, {0x1p40, " TiB"},
                {0x1p30, " GiB"}, {0x1p20, " MiB"}, {0x1p10, " KiB"}};
  char buf[64];
  const char* suffix = " bytes";
  bool found = false;
  for (const auto& u : kUnits) {
    if (value >= u.scale) {
      std::snprintf(buf, sizeof buf, "%.3f", value / u.scale);
      suffix = u.suffix;
      found = true;
      break;
    }
  }
  if (!found) std::snprintf(buf, sizeof buf, "%f", value);
  std::string s(buf);
  size_t pos = s.find(".000");
  if (pos != std::string::npos) s.resize(pos);
  return s + suffix;
}

std::string hex_alt(uint64_t value) { return value == 0 ? "0" : fmt::format("{:#x}", value); }

// --- JSON ---------------------------------------------------------------------

namespace {

// QEMU's tdb_hash() (qobject/qdict.c), reduced to its 512 buckets.
unsigned qdict_bucket(const std::string& key) {
  uint32_t value = 0x238F13AFu * static_cast<uint32_t>(key.size());
  for (size_t i = 0; i < key.size(); ++i) {
    value += static_cast<uint32_t>(static_cast<unsigned char>(key[i])) << (i * 5 % 24);
  }
  return (1103515243u * value + 12345u) % 512u;
}

void append_json_string(std::string& out, const std::string& s) {
  out += '"';
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    uint32_t cp = c;
    size_t len = 1;
    if (c >= 0x80) {
      // Decode UTF-8; invalid sequences become U+FFFD like QEMU's to_json().
      len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 0;
      if (len == 0 || i + len > s.size()) {
        cp = 0xFFFD;
        len = 1;
      } else {
        cp = c & (0x7F >> len);
        for (size_t k = 1; k < len; ++k) {
          unsigned char cc = static_cast<unsigned char>(s[i + k]);
          if ((cc & 0xC0) != 0x80) {
            cp = 0xFFFD;
            len = 1;
            break;
          }
          cp = (cp << 6) | (cc & 0x3F);
        }
      }
    }
    i += len;
    switch (cp) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (cp >= 0x20 && cp <= 0x7E) {
          out += static_cast<char>(cp);
        } else if (cp > 0xFFFF) {
          cp -= 0x10000;
          out += fmt::format("\\u{:04X}\\u{:04X}", 0xD800 | (cp >> 10), 0xDC00 | (cp & 0x3FF));
        } else {
          out += fmt::format("\\u{:04X}", cp);
        }
    }
  }
  out += '"';
}

void newline(std::string& out, int indent) {
  out += '\n';
  out.append(static_cast<size_t>(indent) * 4, ' ');
}

void to_json(std::string& out, const Json& v, int indent) {
  if (v.is_object()) {
    out += '{';
    const char* sep = "";
    for (auto it = v.begin(); it != v.end(); ++it) {
      out += sep;
      newline(out, indent + 1);
      append_json_string(out, it.key());
      out += ": ";
      to_json(out, it.value(), indent + 1);
      sep = ",";
    }
    newline(out, indent);
    out += '}';
  } else if (v.is_array()) {
    out += '[';
    const char* sep = "";
    for (const auto& e : v) {
      out += sep;
      newline(out, indent + 1);
      to_json(out, e, indent + 1);
      sep = ",";
    }
    newline(out, indent);
    out += ']';
  } else if (v.is_string()) {
    append_json_string(out, v.get<std::string>());
  } else {
    out += v.dump();
  }
}

}  // namespace

Json qemu_key_order(const Json& value) {
  if (value.is_array()) {
    Json out = Json::array();
    for (const auto& e : value) out.push_back(qemu_key_order(e));
    return out;
  }
  if (!value.is_object()) return value;
  struct Entry {
    unsigned bucket;
    size_t index;
    std::string key;
  };
  std::vector<Entry> entries;
  size_t index = 0;
  for (auto it = value.begin(); it != value.end(); ++it) {
    entries.push_back({qdict_bucket(it.key()), index++, it.key()});
  }
  // Buckets in order; within a bucket the newest insertion comes first.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return a.bucket != b.bucket ? a.bucket < b.bucket : a.index > b.index;
  });
  Json out = Json::object();
  for (const auto& e : entries) out[e.key] = qemu_key_order(value.at(e.key));
  return out;
}

std::string json_pretty(const Json& value) {
  std::string out;
  to_json(out, value, 0);
  return out;
}

// --- Buffered output ------------------------------------------------------------

OutBuffer::OutBuffer(std::FILE* out, size_t capacity) : out_(out), capacity_(capacity) {
  buf_.reserve(capacity_);
}

OutBuffer::~OutBuffer() { flush(); }

void OutBuffer::append(std::string_view text) {
  buf_.append(text);
  if (buf_.size() >= capacity_) flush();
}

void OutBuffer::flush() {
  if (!buf_.empty()) {
    std::fwrite(buf_.data(), 1, buf_.size(), out_);
    buf_.clear();
  }
  std::fflush(out_);
}

// --- Progress -------------------------------------------------------------------

Progress::Progress(bool enabled, uint64_t total_bytes)
    : enabled_(enabled && isatty(STDOUT_FILENO)), total_(total_bytes),
      start_(std::chrono::steady_clock::now()), last_print_(start_) {
  if (enabled_) update(0);
}

void Progress::update(uint64_t done_bytes) {
  if (!enabled_) return;
  const double percent = total_ ? 100.0 * static_cast<double>(done_bytes) / static_cast<double>(total_) : 100.0;
  const auto now = std::chrono::steady_clock::now();
  if (last_percent_ >= 0 && percent - last_percent_ < 0.01) return;
  if (last_percent_ >= 0 && percent < 100.0 && now - last_print_ < std::chrono::milliseconds(100)) return;
  last_percent_ = percent;
  last_print_ = now;
  const double secs = std::chrono::duration<double>(now - start_).count();
  std::string line = fmt::format("    ({:.2f}/100%)", percent);
  if (secs > 0.5 && done_bytes > 0) {
    const double rate = static_cast<double>(done_bytes) / secs;
    line += fmt::format(" {}/s", format_size(static_cast<uint64_t>(rate)));
    if (done_bytes < total_) {
      const auto eta = static_cast<uint64_t>(static_cast<double>(total_ - done_bytes) / rate);
      line += fmt::format(", ETA {}:{:02}:{:02}", eta / 3600, eta / 60 % 60, eta % 60);
    }
  }
  line += "      \r";
  std::fputs(line.c_str(), stdout);
  std::fflush(stdout);
}

void Progress::finish() {
  if (!enabled_) return;
  last_percent_ = -1;
  update(total_);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace qimg
