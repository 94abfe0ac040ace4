#include "crash/tools.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <regex>
#include <stdexcept>

extern char** environ;

namespace crash {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_file(const std::string& path, const std::vector<uint8_t>& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()), std::streamsize(data.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

int run_tool(const std::vector<std::string>& argv, std::string* output) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return -1;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
  posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int rc;
  {
    std::lock_guard lock(spawn_mutex());
    rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  }
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof buf)) > 0) out.append(buf, size_t(n));
  close(fds[0]);
  if (output) *output = out;
  if (rc != 0) return -1;
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::mutex& spawn_mutex() {
  static std::mutex m;
  return m;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

namespace {
long json_number(const std::string& s, const char* key) {
  std::regex re(std::string("\"") + key + "\"\\s*:\\s*([0-9]+)");
  std::smatch m;
  if (std::regex_search(s, m, re)) return std::stol(m[1].str());
  return 0;
}
}  // namespace

QemuCheck qemu_check(const std::string& path) {
  QemuCheck c;
  c.rc = run_tool({"qemu-img", "check", "-U", "-f", "qcow2", "--output=json", path}, &c.output);
  c.corruptions = json_number(c.output, "corruptions");
  c.leaks = json_number(c.output, "leaks");
  c.check_errors = json_number(c.output, "check-errors");
  return c;
}

uint64_t image_cluster_size(const std::vector<uint8_t>& file) {
  if (file.size() < 24) throw std::runtime_error("not a qcow2 image");
  uint32_t bits = uint32_t(file[20]) << 24 | uint32_t(file[21]) << 16 | uint32_t(file[22]) << 8 | file[23];
  return uint64_t(1) << bits;
}

ScratchDir::ScratchDir(const std::string& prefix) {
  std::string root = std::filesystem::is_directory("/dev/shm") && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  std::string tmpl = root + "/" + prefix + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) throw std::runtime_error("mkdtemp failed under " + root);
  path = buf.data();
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
}

}  // namespace crash
