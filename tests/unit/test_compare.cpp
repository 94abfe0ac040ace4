// qcow::compare_images on images made through the public API: outcomes, the
// reported offsets, sizes that differ, strict mode, progress, and the errors a
// failing block status or read produce. tests/e2e/test_compare.py compares
// whole image pairs against qemu-img compare itself.

#include <doctest/doctest.h>

#include <cerrno>
#include <string>
#include <vector>

#include "codec/bytes.hpp"
#include "qcow/compare.hpp"
#include "qcow/image.hpp"
#include "support/test_util.hpp"

namespace {

using namespace qcow;
using Outcome = CompareReport::Outcome;

constexpr uint64_t kMiB = 1 << 20;

void make_qcow2(const std::string& path, uint64_t size, uint32_t cluster_size = 65536, bool extended_l2 = false) {
  CreateOptions c;
  c.size = size;
  c.cluster_size = cluster_size;
  c.extended_l2 = extended_l2;
  Status s = Image::create(path, c);
  INFO(s.message());
  REQUIRE(s.is_ok());
}

void write(const std::string& path, uint64_t offset, const std::vector<uint8_t>& data) {
  OpenOptions rw;
  rw.writable = true;
  auto w = Image::open(path, rw);
  INFO(w.status().message());
  REQUIRE(w.is_ok());
  REQUIRE(w->write(offset, data).is_ok());
  REQUIRE(w->close().is_ok());
}

Image open_image(const std::string& path, FileWrapFn wrap = {}) {
  OpenOptions o;
  o.wrap_file = std::move(wrap);
  auto r = Image::open(path, o);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

CompareReport compare(const std::string& a, const std::string& b, CompareMode mode = CompareMode::kNormal) {
  Image ia = open_image(a), ib = open_image(b);
  auto r = compare_images(ia, ib, mode);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  return *r;
}

// Fails every read of the host file at or past `from`.
class FailingReads : public FileWrapper {
 public:
  FailingReads(std::unique_ptr<File> inner, uint64_t from) : FileWrapper(std::move(inner)), from_(from) {}
  Result<size_t> read_at(uint64_t o, std::span<uint8_t> b) override {
    if (o + b.size() > from_) return Status::io(path() + ": injected read error", EIO);
    return FileWrapper::read_at(o, b);
  }

 private:
  uint64_t from_;
};

}  // namespace

TEST_SUITE_BEGIN("qcow::compare");

TEST_CASE("same data in different layouts is identical") {
  qtest::TempDir dir;
  const auto data = qtest::random_bytes(300000, 1);
  const std::string a = dir.file("a.qcow2"), b = dir.file("b.qcow2"), raw = dir.file("c.raw");
  make_qcow2(a, 4 * kMiB);
  make_qcow2(b, 4 * kMiB, 32768, true);
  write(a, 12345, data);
  write(b, 12345, data);
  std::vector<uint8_t> flat(4 * kMiB, 0);
  std::copy(data.begin(), data.end(), flat.begin() + 12345);
  qtest::write_file(raw, flat);
  for (const auto& [x, y] : {std::pair{a, b}, std::pair{a, raw}, std::pair{raw, b}}) {
    CompareReport r = compare(x, y);
    CHECK(r.outcome == Outcome::kIdentical);
    CHECK_FALSE(r.sizes_differ);
  }
}

TEST_CASE("a difference is reported at the start of its sector") {
  qtest::TempDir dir;
  const std::string a = dir.file("a.qcow2"), b = dir.file("b.qcow2");
  make_qcow2(a, 4 * kMiB);
  make_qcow2(b, 4 * kMiB);
  const auto data = qtest::random_bytes(kMiB, 2);
  write(a, 0, data);
  write(b, 0, data);
  SUBCASE("inside data on both sides") {
    write(b, 700000, {0x5a});
    CompareReport r = compare(a, b);
    CHECK(r.outcome == Outcome::kContentMismatch);
    CHECK(r.offset == 700000 / 512 * 512);
  }
  SUBCASE("where only one side has data") {
    write(b, 3 * kMiB + 1000, {0x5a});
    CompareReport r = compare(a, b);
    CHECK(r.outcome == Outcome::kContentMismatch);
    CHECK(r.offset == 3 * kMiB + 512);
    CHECK(compare(b, a).offset == 3 * kMiB + 512);
  }
  SUBCASE("the last byte") {
    write(b, 4 * kMiB - 1, {0x5a});
    CHECK(compare(a, b).offset == 4 * kMiB - 512);
  }
}

TEST_CASE("images of different sizes") {
  qtest::TempDir dir;
  const std::string small = dir.file("s.qcow2"), big = dir.file("b.qcow2");
  make_qcow2(small, 2 * kMiB);
  make_qcow2(big, 3 * kMiB);
  write(small, 0, {1, 2, 3});
  write(big, 0, {1, 2, 3});
  write(big, 2 * kMiB + 4096, std::vector<uint8_t>(4096, 0));  // allocated zeros in the tail
  CompareReport r = compare(small, big);
  CHECK(r.outcome == Outcome::kIdentical);
  CHECK(r.sizes_differ);
  CHECK(compare(small, big, CompareMode::kStrict).outcome == Outcome::kSizeMismatch);
  write(big, 2 * kMiB + 70000, {9});
  r = compare(big, small);
  CHECK(r.outcome == Outcome::kContentMismatch);
  CHECK(r.sizes_differ);
  CHECK(r.offset == 2 * kMiB + 70000 / 512 * 512);
}

TEST_CASE("strict mode compares block status") {
  qtest::TempDir dir;
  const std::string a = dir.file("a.qcow2"), raw = dir.file("a.raw");
  make_qcow2(a, kMiB);
  write(a, 0, std::vector<uint8_t>(65536, 7));
  std::vector<uint8_t> flat(kMiB, 0);
  std::fill(flat.begin(), flat.begin() + 65536, 7);
  qtest::write_file(raw, flat);  // written zeros: data in the raw file, unallocated in the qcow2
  CHECK(compare(a, raw).outcome == Outcome::kIdentical);
  CompareReport r = compare(a, raw, CompareMode::kStrict);
  CHECK(r.outcome == Outcome::kStatusMismatch);
  CHECK(r.offset == 0);  // the raw file's data run reaches the end, the qcow2's does not
  CHECK(compare(a, a, CompareMode::kStrict).outcome == Outcome::kIdentical);
}

TEST_CASE("progress runs to the larger size") {
  qtest::TempDir dir;
  const std::string a = dir.file("a.qcow2"), b = dir.file("b.qcow2");
  make_qcow2(a, 8 * kMiB);
  make_qcow2(b, 5 * kMiB);
  write(a, kMiB, qtest::random_bytes(3 * kMiB, 3));
  write(b, kMiB, qtest::random_bytes(3 * kMiB, 3));
  Image ia = open_image(a), ib = open_image(b);
  uint64_t last = 0, calls = 0;
  bool monotonic = true;
  auto r = compare_images(ia, ib, CompareMode::kNormal, [&](uint64_t done, uint64_t total) {
    CHECK(total == 8 * kMiB);
    monotonic = monotonic && done >= last;
    last = done;
    ++calls;
  });
  REQUIRE(r.is_ok());
  CHECK(r->outcome == Outcome::kIdentical);
  CHECK(monotonic);
  CHECK(last == 8 * kMiB);
  CHECK(calls > 2);
}

TEST_CASE("failures name the image and the step") {
  qtest::TempDir dir;
  const std::string a = dir.file("a.qcow2"), b = dir.file("b.qcow2");
  make_qcow2(a, 2 * kMiB);
  make_qcow2(b, 2 * kMiB);
  write(a, 0, qtest::random_bytes(kMiB, 4));
  write(b, 0, qtest::random_bytes(kMiB, 4));

  SUBCASE("a read fails") {
    Image ia = open_image(a);
    Image ib = open_image(b, [](std::unique_ptr<File> f) -> std::unique_ptr<File> {
      return std::make_unique<FailingReads>(std::move(f), 1 << 20);
    });
    auto r = compare_images(ia, ib, CompareMode::kNormal);
    REQUIRE(r.is_ok());
    CHECK(r->outcome == Outcome::kReadError);
    CHECK(r->failed_image == 1);
    CHECK(r->error.code() == ErrorCode::kIo);
  }
  SUBCASE("block status fails on a corrupt L2 entry") {
    // Point the first data cluster's L2 entry at an unaligned host offset.
    std::vector<uint8_t> bytes = qtest::read_file(b);
    const uint64_t l1_offset = load_be64(bytes.data() + 40);
    const uint64_t l2_offset = load_be64(bytes.data() + l1_offset) & 0x00fffffffffffe00ull;
    REQUIRE(l2_offset != 0);
    store_be64(bytes.data() + l2_offset, load_be64(bytes.data() + l2_offset) | 0x200);
    qtest::write_file(b, bytes);
    CompareReport r = compare(a, b);
    CHECK(r.outcome == Outcome::kBlockStatusError);
    CHECK(r.failed_image == 1);
    CHECK(r.error.code() == ErrorCode::kCorrupt);
  }
}

TEST_SUITE_END();
