// Small helpers shared by the unit tests: temp directories, whole-file I/O,
// deterministic byte patterns and running qemu-img (and other tools).
#pragma once

#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <regex>
#include <string>
#include <vector>

namespace qtest {

using Bytes = std::vector<uint8_t>;

// A fresh mkdtemp directory under /tmp, removed (recursively) on destruction.
struct TempDir {
  std::string path;
  explicit TempDir(const char* prefix = "qimg-unit") {
    std::string tmpl = std::string("/tmp/") + prefix + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* p = mkdtemp(buf.data());
    REQUIRE(p != nullptr);
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return path + "/" + name; }
};

inline Bytes random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes v(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t r = rng();
    for (int k = 0; k < 8; ++k) v[i + k] = uint8_t(r >> (8 * k));
  }
  for (; i < n; ++i) v[i] = uint8_t(rng());
  return v;
}

// Compressible but not trivially zero: short random runs repeated.
inline Bytes compressible_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Bytes v(n);
  uint8_t cur = uint8_t(rng() | 1);
  for (size_t i = 0; i < n; ++i) {
    if ((i & 63) == 0) cur = uint8_t(rng() | 1);
    v[i] = cur;
  }
  return v;
}

inline Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return Bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const Bytes& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  REQUIRE(out.good());
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  REQUIRE(out.good());
}

inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

// Fails the current test case unless `tool` is on PATH. Every test that runs a tool calls it
// first: CI installs them all (scripts/deps.sh), so a missing tool is a failure, never a skip.
inline void require_tool(const std::string& tool) {
  const std::string probe = "command -v " + shell_quote(tool) + " >/dev/null 2>&1";
  REQUIRE_MESSAGE(std::system(probe.c_str()) == 0, tool << " is not on PATH (scripts/deps.sh installs it)");
}

// Runs a shell command, capturing stdout (stderr is appended); returns the exit status.
inline int run_command(const std::string& cmd, std::string* output = nullptr) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  int rc = pclose(p);
  if (output) *output = out;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

struct QemuCheck {
  int rc = -1;
  long corruptions = 0, leaks = 0, check_errors = 0;
  std::string output;
  // Exit 0 (clean) or 3 (leaks only), and no corruptions reported.
  bool consistent() const { return (rc == 0 || rc == 3) && corruptions == 0 && check_errors == 0; }
};

inline long json_number(const std::string& s, const char* key) {
  std::regex re(std::string("\"") + key + "\"\\s*:\\s*([0-9]+)");
  std::smatch m;
  if (std::regex_search(s, m, re)) return std::stol(m[1].str());
  return 0;
}

inline QemuCheck qemu_check(const std::string& path) {
  require_tool("qemu-img");
  QemuCheck c;
  c.rc = run_command("qemu-img check -f qcow2 --output=json " + shell_quote(path), &c.output);
  c.corruptions = json_number(c.output, "corruptions");
  c.leaks = json_number(c.output, "leaks");
  c.check_errors = json_number(c.output, "check-errors");
  return c;
}

}  // namespace qtest
