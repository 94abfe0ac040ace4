// Output helpers shared by the subcommands: qemu-compatible size parsing and
// formatting, error printing, JSON in qemu's key order, a buffered stdout
// writer and the -p progress line.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "qcow/status.hpp"

namespace qimg {

using Json = nlohmann::ordered_json;

// --- Errors -----------------------------------------------------------------

// Prints "qimg: <message>" on stderr and returns 1 (the exit status).
int fail(std::string_view message);
int fail(const qcow::Status& status);

// --- Sizes --------------------------------------------------------------------

enum class SizeParse { kOk, kInvalid, kRange };

// qemu_strtosz: decimal (optionally with a fraction) or 0x-hex, an optional
// suffix b/B k/K m/M g/G t/T p/P e/E (powers of 1024); no suffix means bytes.
SizeParse parse_size(std::string_view text, uint64_t* out);

// qemu-img's cvtnum_full(): parses `text` and checks it is in [min, max].
// On failure *error holds qemu-img's message, e.g. "Invalid image size
// specified. You may use k, M, G, T, P or E suffixes for kilobytes, ..." (one line, unlike qemu-img).
std::optional<uint64_t> parse_size_arg(std::string_view what, std::string_view text, uint64_t min,
                                       uint64_t max, std::string* error);
constexpr uint64_t kInt64Max = 0x7fffffffffffffffULL;

// qemu's size_to_str(): "64 KiB", "1 GiB", "1.5 GiB", "0 B" (%0.3g).
std::string format_size(uint64_t bytes);

// qemu-io's cvtstr(): "64 KiB", "1023.875 MiB", "40 bytes".
std::string format_cvtstr(double value);

// printf("%#" PRIx64): "0x10000", and "0" for zero.
std::string hex_alt(uint64_t value);

// --- JSON ---------------------------------------------------------------------

// Recursively reorders object keys the way a QEMU QDict iterates them (hash
// bucket order), so qemu-img's JSON layout is reproduced key for key.
Json qemu_key_order(const Json& value);

// qemu's qobject_to_json_pretty(): 4-space indentation, no trailing newline.
std::string json_pretty(const Json& value);

// --- Buffered output ------------------------------------------------------------

// Collects output in a large buffer and writes it to a FILE in big chunks.
class OutBuffer {
 public:
  explicit OutBuffer(std::FILE* out = stdout, size_t capacity = 1 << 20);
  ~OutBuffer();
  OutBuffer(const OutBuffer&) = delete;
  OutBuffer& operator=(const OutBuffer&) = delete;
  void append(std::string_view text);
  void flush();

 private:
  std::FILE* out_;
  size_t capacity_;
  std::string buf_;
};

// --- Progress -------------------------------------------------------------------

// The -p progress line: "    (12.34/100%) 150.2 MiB/s, ETA 0:00:12\r" on stdout,
// printed only when stdout is a terminal and only when the value changed
// noticeably. finish() ends the line.
class Progress {
 public:
  Progress(bool enabled, uint64_t total_bytes);
  void update(uint64_t done_bytes);
  void finish();

 private:
  bool enabled_;
  uint64_t total_;
  double last_percent_ = -1;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
};

}  // namespace qimg
