// FileMaps (qimg convert's zero-copy source reads): what can be mapped, range
// checks, and a source file truncated under its mapping (SIGBUS turned into an
// error instead of a crash).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "commands/file_maps.hpp"

namespace {

std::string temp_file(const std::vector<uint8_t>& bytes) {
  char name[] = "/tmp/qimg-file-maps-XXXXXX";
  int fd = mkstemp(name);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, bytes.data(), bytes.size()) == ssize_t(bytes.size()));
  close(fd);
  return name;
}

}  // namespace

TEST_CASE("FileMaps: maps regular files only, within the size they had") {
  const long page = sysconf(_SC_PAGESIZE);
  std::vector<uint8_t> bytes(size_t(page) * 3);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 7 + 1);
  const std::string path = temp_file(bytes);
  {
    qimg::FileMaps maps;
    const uint8_t* p = maps.at(path, 0, bytes.size());
    REQUIRE(p != nullptr);
    CHECK(std::equal(bytes.begin(), bytes.end(), p));
    const uint8_t* q = maps.at(path, 100, 50);  // same mapping, offset inside it
    CHECK(q == p + 100);
    CHECK(maps.at(path, bytes.size() - 10, 11) == nullptr);    // past the end
    CHECK(maps.at(path, bytes.size() + 1, 0) == nullptr);
    CHECK(maps.at(path, uint64_t(1) << 62, uint64_t(1) << 62) == nullptr);  // no overflow
    CHECK(maps.at("/nonexistent/qimg-file", 0, 1) == nullptr);
    CHECK(maps.at("/dev/null", 0, 1) == nullptr);              // not a regular file
    qimg::FileMaps::populate(p, bytes.size());
    qimg::FileMaps::release(p, bytes.size());
    CHECK(p[bytes.size() - 1] == bytes.back());                // released pages fault back in
    CHECK(maps.check().is_ok());
  }
  unlink(path.c_str());
}

TEST_CASE("FileMaps: a file truncated under its mapping is an error, not a crash") {
  const long page = sysconf(_SC_PAGESIZE);
  std::vector<uint8_t> bytes(size_t(page) * 4, 0x5a);
  const std::string path = temp_file(bytes);
  qimg::FileMaps maps;
  const uint8_t* p = maps.at(path, 0, bytes.size());
  REQUIRE(p != nullptr);
  REQUIRE(truncate(path.c_str(), page) == 0);
  CHECK(p[0] == 0x5a);
  // Beyond the new end: SIGBUS, answered with a zero page.
  const volatile uint8_t* lost = p + 3 * page + 5;
  CHECK(*lost == 0);
  qcow::Status s = maps.check();
  CHECK_FALSE(s.is_ok());
  CHECK(s.message().find(path) != std::string::npos);
  CHECK(s.message().find("shrank") != std::string::npos);
  unlink(path.c_str());
}
