#include "commands/io.hpp"

#include <cctype>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "cli/options.hpp"
#include "cli/secrets.hpp"
#include "cli/output.hpp"
#include "commands/info.hpp"
#include "qcow/image.hpp"

namespace qimg {

void register_io(CLI::App& app, std::shared_ptr<IoOptions> o) {
  add_secret_options(app);
  app.add_option("-f", o->format, "Image format (default: probe)");
  app.add_flag("-U,--force-share", o->force_share, "Open without taking the lock");
  app.add_flag("-r,--read-only", o->read_only, "Open read-only");
  app.add_option("-t,--cache", o->cache, "Cache mode: none, writeback, writethrough, directsync, unsafe");
  app.add_option("-c,--cmd", o->commands, "Command to run (repeatable): read, write, discard, flush, map, info")
      ->allow_extra_args(false);
  app.add_option("filename", o->filename, "Image file")->required();
}

namespace {

// qemu's BDRV_REQUEST_MAX_BYTES.
constexpr uint64_t kMaxRequest = (INT_MAX / 512) * 512ULL;

// Raised by a command to stop the script: the message (if any) was printed.
struct CommandFailed {};

std::vector<std::string> split_command(const std::string& line) {
  std::vector<std::string> args;
  std::string cur;
  bool in_word = false, quoted = false;
  for (char c : line) {
    if (c == '"') {
      quoted = !quoted;
      in_word = true;
    } else if (!quoted && std::isspace(static_cast<unsigned char>(c))) {
      if (in_word) args.push_back(cur);
      cur.clear();
      in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (in_word) args.push_back(cur);
  return args;
}

// A small getopt(3): options first, then positionals.
class GetOpt {
 public:
  GetOpt(const std::vector<std::string>& args, std::string spec) : args_(args), spec_(std::move(spec)) {}
  // Returns the option character, 0 at the end of options, '?' on error.
  int next(std::string* arg) {
    if (pos_ == 0) {
      if (index_ >= args_.size() || args_[index_].size() < 2 || args_[index_][0] != '-') return 0;
      if (args_[index_] == "--") {
        ++index_;
        return 0;
      }
      pos_ = 1;
    }
    const std::string& cur = args_[index_];
    char c = cur[pos_++];
    size_t at = spec_.find(c);
    if (at == std::string::npos || c == ':') {
      error_ = fmt::format("invalid option -- '{}'", c);
      return '?';
    }
    if (at + 1 < spec_.size() && spec_[at + 1] == ':') {
      if (pos_ < cur.size()) {
        *arg = cur.substr(pos_);
      } else if (index_ + 1 < args_.size()) {
        *arg = args_[++index_];
      } else {
        error_ = fmt::format("option requires an argument -- '{}'", c);
        return '?';
      }
      pos_ = cur.size();
    }
    if (pos_ >= cur.size()) {
      pos_ = 0;
      ++index_;
    }
    return c;
  }
  std::vector<std::string> rest() const { return {args_.begin() + static_cast<long>(index_), args_.end()}; }
  const std::string& error() const { return error_; }

 private:
  const std::vector<std::string>& args_;
  std::string spec_;
  size_t index_ = 1;  // args_[0] is the command name
  size_t pos_ = 0;
  std::string error_;
};

class Script {
 public:
  explicit Script(qcow::Image& image) : image_(image) {}

  void run(const std::string& line) {
    std::vector<std::string> args = split_command(line);
    if (args.empty()) return;
    const std::string& name = args[0];
    if (name == "read" || name == "r") return cmd_read(args);
    if (name == "write" || name == "w") return cmd_write(args);
    if (name == "discard" || name == "d") return cmd_discard(args);
    if (name == "flush" || name == "f") return cmd_flush(args);
    if (name == "map") return cmd_map(args);
    if (name == "info" || name == "i") return cmd_info(args);
    error(fmt::format("command \"{}\" not found", name));
  }

 private:
  using Clock = std::chrono::steady_clock;

  [[noreturn]] void error(const std::string& message) {
    fail(message);
    throw CommandFailed{};
  }
  void check(const qcow::Status& s, const char* what) {
    if (!s) error(fmt::format("{} failed: {}", what, s.message()));
  }

  // qemu-io's cvtnum() with its error messages.
  uint64_t number(const std::string& text) {
    uint64_t v = 0;
    SizeParse r = parse_size(text, &v);
    if (r == SizeParse::kOk && v > kInt64Max) r = SizeParse::kRange;
    if (r == SizeParse::kInvalid) {
      error(fmt::format("Parsing error: non-numeric argument, or extraneous/unrecognized suffix -- {}", text));
    }
    if (r == SizeParse::kRange) error(fmt::format("Parsing error: argument too large -- {}", text));
    return v;
  }

  static uint8_t pattern_or_throw(const std::string& text, Script* self) {
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(text.c_str(), &end, 0);
    if (text.empty() || errno != 0 || v < 0 || v > UCHAR_MAX || *end != '\0') {
      self->error(fmt::format("{} is not a valid pattern byte", text));
    }
    return static_cast<uint8_t>(v);
  }

  void need_args(const std::vector<std::string>& rest, const std::string& cmd, size_t n) {
    if (rest.size() != n) {
      error(fmt::format("bad argument count {} to {}, expected {} arguments", rest.size(), cmd, n));
    }
  }

  // Checks "OFF LEN" after the options (qemu-io's argmin 2 / argmax -1 check,
  // then its usage check) and parses them.
  void range(const std::string& cmd, size_t argc, const std::vector<std::string>& rest, uint64_t* off,
             uint64_t* len) {
    if (argc < 2) {
      error(fmt::format("bad argument count {} to {}, expected at least 2 arguments", argc, cmd));
    }
    if (rest.size() != 2) error(fmt::format("usage: {} [options] OFFSET LENGTH", cmd));
    *off = number(rest[0]);
    *len = number(rest[1]);
    if (*len > kMaxRequest) error(fmt::format("length cannot exceed {}, given {}", kMaxRequest, rest[1]));
    if (*off > image_.size() || *len > image_.size() - *off) {
      error(fmt::format("{} failed: {}: request [{}, +{}) is beyond the end of the image ({} bytes)", cmd,
                        image_.path(), *off, *len, image_.size()));
    }
  }

  // qemu-io's print_report().
  void report(const char* op, Clock::time_point t0, uint64_t offset, uint64_t count) {
    double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    if (secs <= 0) secs = 1e-9;
    std::printf("%s %llu/%llu bytes at offset %llu\n", op, static_cast<unsigned long long>(count),
                static_cast<unsigned long long>(count), static_cast<unsigned long long>(offset));
    std::printf("%s, %d ops; %05.2f sec (%s/sec and %.4f ops/sec)\n", format_cvtstr(static_cast<double>(count)).c_str(),
                1, secs, format_cvtstr(static_cast<double>(count) / secs).c_str(), 1.0 / secs);
  }

  // qemu-io's dump_buffer().
  static void dump_buffer(const uint8_t* p, uint64_t offset, uint64_t len) {
    std::string out;
    for (uint64_t i = 0; i < len; i += 16) {
      out += fmt::format("{:08x}:  ", offset + i);
      uint64_t n = std::min<uint64_t>(16, len - i);
      for (uint64_t j = 0; j < n; ++j) out += fmt::format("{:02x} ", p[i + j]);
      out += ' ';
      for (uint64_t j = 0; j < n; ++j) out += std::isalnum(p[i + j]) ? static_cast<char>(p[i + j]) : '.';
      out += '\n';
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
  }

  void cmd_read(const std::vector<std::string>& args) {
    GetOpt g(args, "P:vq");
    std::string arg;
    std::optional<uint8_t> pattern;
    bool verbose = false, quiet = false;
    for (int c; (c = g.next(&arg)) != 0;) {
      if (c == 'P') pattern = pattern_or_throw(arg, this);
      else if (c == 'v') verbose = true;
      else if (c == 'q') quiet = true;
      else error("read: " + g.error());
    }
    uint64_t off = 0, len = 0;
    range("read", args.size() - 1, g.rest(), &off, &len);
    std::vector<uint8_t> buf(len);
    auto t0 = Clock::now();
    check(image_.read(off, buf), "read");
    bool mismatch = false;
    if (pattern) {
      for (uint8_t b : buf) {
        if (b != *pattern) {
          mismatch = true;
          break;
        }
      }
      if (mismatch) {
        std::printf("Pattern verification failed at offset %llu, %llu bytes\n",
                    static_cast<unsigned long long>(off), static_cast<unsigned long long>(len));
      }
    }
    if (!quiet) {
      if (verbose) dump_buffer(buf.data(), off, len);
      report("read", t0, off, len);
    }
    if (mismatch) throw CommandFailed{};
  }

  void cmd_write(const std::vector<std::string>& args) {
    GetOpt g(args, "P:zucq");
    std::string arg;
    uint8_t pattern = 0xcd;
    bool have_pattern = false, zero = false, unmap = false, compress = false, quiet = false;
    for (int c; (c = g.next(&arg)) != 0;) {
      if (c == 'P') {
        pattern = pattern_or_throw(arg, this);
        have_pattern = true;
      } else if (c == 'z') {
        zero = true;
      } else if (c == 'u') {
        unmap = true;
      } else if (c == 'c') {
        compress = true;
      } else if (c == 'q') {
        quiet = true;
      } else {
        error("write: " + g.error());
      }
    }
    if (unmap && !zero) error("-u requires -z to be specified");
    if (zero && have_pattern) error("-z and -P cannot be specified at the same time");
    uint64_t off = 0, len = 0;
    range("write", args.size() - 1, g.rest(), &off, &len);
    auto t0 = Clock::now();
    if (zero) {
      check(image_.write_zeroes(off, len, unmap ? qcow::Unmap::kYes : qcow::Unmap::kNo), "write");
    } else {
      std::vector<uint8_t> buf(len, pattern);
      check(image_.write(off, buf, compress ? qcow::Compress::kYes : qcow::Compress::kNo), "write");
    }
    if (!quiet) report("wrote", t0, off, len);
  }

  void cmd_discard(const std::vector<std::string>& args) {
    GetOpt g(args, "q");
    std::string arg;
    bool quiet = false;
    for (int c; (c = g.next(&arg)) != 0;) {
      if (c == 'q') quiet = true;
      else error("discard: " + g.error());
    }
    uint64_t off = 0, len = 0;
    range("discard", args.size() - 1, g.rest(), &off, &len);
    auto t0 = Clock::now();
    check(image_.discard(off, len), "discard");
    if (!quiet) report("discard", t0, off, len);
  }

  void cmd_flush(const std::vector<std::string>& args) {
    need_args({args.begin() + 1, args.end()}, "flush", 0);
    check(image_.flush(), "flush");
  }

  // qemu-io's map: runs allocated in this image (not its backing files).
  void cmd_map(const std::vector<std::string>& args) {
    need_args({args.begin() + 1, args.end()}, "map", 0);
    OutBuffer out;
    bool have = false, run_alloc = false;
    uint64_t run_start = 0, run_len = 0;
    auto emit = [&] {
      out.append(fmt::format("{} (0x{:x}) bytes {} at offset {} (0x{:x})\n",
                             format_cvtstr(static_cast<double>(run_len)), run_len,
                             run_alloc ? "    allocated" : "not allocated",
                             format_cvtstr(static_cast<double>(run_start)), run_start));
    };
    qcow::Status s = image_.block_status(0, image_.size(), [&](const qcow::Extent& e) {
      bool alloc = e.present && e.depth == 0;
      if (have && alloc == run_alloc) {
        run_len += e.length;
        return true;
      }
      if (have) emit();
      have = true;
      run_alloc = alloc;
      run_start = e.offset;
      run_len = e.length;
      return true;
    });
    if (have) emit();
    out.flush();
    check(s, "map");
  }

  void cmd_info(const std::vector<std::string>& args) {
    need_args({args.begin() + 1, args.end()}, "info", 0);
    qcow::ImageInfo info = image_.info();
    std::printf("format name: %s\ncluster size: %s\nvm state offset: %s\n", qcow::format_name(info.format),
                format_cvtstr(info.cluster_size).c_str(), format_cvtstr(static_cast<double>(info.vm_state_offset)).c_str());
    std::string specific = format_specific_human(info);
    std::fwrite(specific.data(), 1, specific.size(), stdout);
  }

  qcow::Image& image_;
};

}  // namespace

int run_io(const IoOptions& o_arg) {
  IoOptions o = o_arg;  // --image-opts rewrites filename and format
  qcow::OpenOptions open_options;
  if (qcow::Status s = apply_secret_options(&o.filename, &o.format, &open_options); !s) return fail(s);
  if (qcow::Status s = parse_format_option(o.format, &open_options.format); !s) return fail(s);
  open_options.writable = !o.read_only;
  open_options.force_share = o.force_share;
  CacheChoice cache;
  if (!parse_cache(o.cache, &cache)) return fail(fmt::format("Invalid cache option: {}", o.cache));
  open_options.cache = cache.mode;
  auto image = qcow::Image::open(o.filename, open_options);
  if (!image) return fail(image.status());
  if (open_options.key_secret) warn_if_legacy_aes(*image);

  Script script(*image);
  int rc = 0;
  for (const std::string& cmd : o.commands) {
    try {
      script.run(cmd);
    } catch (const CommandFailed&) {
      rc = 1;
      break;
    }
    std::fflush(stdout);
  }
  std::fflush(stdout);
  if (qcow::Status s = image->close(); !s) return fail(s);
  return rc;
}

}  // namespace qimg
