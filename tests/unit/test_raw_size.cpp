// Raw images whose file length is not a multiple of 512 bytes: as in QEMU, the
// disk is the file rounded up to whole sectors, the rest reads as zeros, and
// block status ends with a zero run.

#include <doctest/doctest.h>

#include <algorithm>
#include <vector>

#include "qcow/image.hpp"
#include "support/test_util.hpp"

TEST_SUITE_BEGIN("qcow::raw");

TEST_CASE("a raw file of 1000 bytes is a 1024-byte disk") {
  using namespace qcow;
  qtest::TempDir dir;
  const std::string path = dir.file("odd.raw");
  qtest::write_file(path, qtest::Bytes(1000, 0x7f));
  auto image = Image::open(path);
  REQUIRE(image.is_ok());
  CHECK(image->size() == 1024);
  CHECK(image->info().virtual_size == 1024);
  CHECK(image->info().file_length == 1000);

  std::vector<uint8_t> buf(1024, 0xee);
  REQUIRE(image->read(0, buf).is_ok());
  CHECK(std::all_of(buf.begin(), buf.begin() + 1000, [](uint8_t b) { return b == 0x7f; }));
  CHECK(std::all_of(buf.begin() + 1000, buf.end(), [](uint8_t b) { return b == 0; }));
  CHECK_FALSE(image->read(1024, std::span<uint8_t>(buf.data(), 1)).is_ok());

  std::vector<Extent> extents;
  REQUIRE(image->block_status(0, 1024, [&](const Extent& e) {
    extents.push_back(e);
    return true;
  }).is_ok());
  REQUIRE(extents.size() == 2);  // qemu-img map: data [0, 1000), then zeros to 1024
  CHECK(extents[0].offset == 0);
  CHECK(extents[0].length == 1000);
  CHECK(extents[0].data);
  CHECK(extents[1].offset == 1000);
  CHECK(extents[1].length == 24);
  CHECK(extents[1].zero);
  CHECK_FALSE(extents[1].data);
}

TEST_CASE("writing the rounded-up tail extends the file") {
  using namespace qcow;
  qtest::TempDir dir;
  const std::string path = dir.file("odd.raw");
  qtest::write_file(path, qtest::Bytes(700, 1));
  OpenOptions rw;
  rw.writable = true;
  auto image = Image::open(path, rw);
  REQUIRE(image.is_ok());
  CHECK(image->size() == 1024);
  REQUIRE(image->write(1020, std::vector<uint8_t>(4, 2)).is_ok());
  CHECK(image->info().file_length == 1024);
  REQUIRE(image->close().is_ok());
  CHECK(qtest::read_file(path).size() == 1024);
}

TEST_SUITE_END();
