// Crash safety of `check -r all`: a crash after any write of a repair must leave an image
// that a second repair finishes, with the guest content intact and qemu-img check clean.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "codec/bytes.hpp"
#include "io/fault_file.hpp"
#include "support/test_util.hpp"
#include "qcow/check.hpp"
#include "qcow/image.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> guest(const fs::path& p) {
  auto img = qcow::Image::open(p.string(), {});
  REQUIRE_MESSAGE(img.is_ok(), img.status().message());
  std::vector<uint8_t> out(img->size());
  REQUIRE(img->read(0, out).is_ok());
  return out;
}

// Sets the 16-bit refcount of host cluster `cluster` (the image's first refcount block covers it).
void poke_refcount(std::vector<uint8_t>& bytes, uint64_t cluster, uint16_t value) {
  uint64_t reftable = qcow::load_be64(bytes.data() + 48);
  uint64_t block = qcow::load_be64(bytes.data() + reftable) & ~0x1ffull;
  qcow::store_be16(bytes.data() + block + 2 * cluster, value);
}

}  // namespace

TEST_SUITE("qcow::check") {
TEST_CASE("check -r all survives a crash after every write") {
  qtest::require_tool("qemu-img");
  fs::path dir = fs::temp_directory_path() / fmt::format("qimg-check-crash-{}", ::getpid());
  fs::create_directories(dir);
  for (bool ext : {false, true}) {
    CAPTURE(ext);
    fs::path img = dir / "image.qcow2", replayed = dir / "replayed.qcow2";
    qcow::CreateOptions co;
    co.size = 16 << 20;
    co.extended_l2 = ext;
    REQUIRE(qcow::Image::create(img.string(), co).is_ok());
    uint64_t data_cluster = 0;
    {
      qcow::OpenOptions oo;
      oo.writable = true;
      auto im = qcow::Image::open(img.string(), oo);
      REQUIRE(im.is_ok());
      std::vector<uint8_t> buf(256 << 10);
      for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(i * 13 + 1);
      REQUIRE(im->write(1 << 20, buf).is_ok());
      REQUIRE(im->write(9 << 20, std::span<const uint8_t>(buf.data(), 8192)).is_ok());
      REQUIRE(im->close().is_ok());
    }
    {
      auto ro = qcow::Image::open(img.string(), {});
      REQUIRE(ro.is_ok());
      REQUIRE(ro->block_status(1 << 20, 65536, [&](const qcow::Extent& e) {
        if (e.host_offset) data_cluster = *e.host_offset >> 16;
        return false;
      }).is_ok());
    }
    REQUIRE(data_cluster > 0);
    const std::vector<uint8_t> content = guest(img);
    // Damage: a data cluster's refcount dropped to 0 (corruption) and the header cluster's
    // raised to 3 (a leak).
    std::vector<uint8_t> bytes = qtest::read_file(img);
    poke_refcount(bytes, data_cluster, 0);
    poke_refcount(bytes, 0, 3);
    qtest::write_file(img, bytes);
    REQUIRE(qtest::qemu_check(img.string()).rc == 2);

    auto log = std::make_shared<qcow::WriteLog>();
    qcow::CheckOptions o;
    o.repair = qcow::Repair::kAll;
    o.wrap_file = [&](std::unique_ptr<qcow::File> f) -> std::unique_ptr<qcow::File> {
      return std::make_unique<qcow::RecordingFile>(std::move(f), log);
    };
    auto rep = qcow::check_image(img.string(), o);
    REQUIRE_MESSAGE(rep.is_ok(), rep.status().message());
    REQUIRE(qtest::qemu_check(img.string()).rc == 0);
    REQUIRE(guest(img) == content);

    const size_t n = log->size();
    REQUIRE(n > 0);
    std::vector<std::pair<size_t, qcow::PowerCut>> cuts;
    for (size_t p = 0; p <= n; ++p) cuts.emplace_back(p, qcow::kProcessKill);
    for (size_t k = 0; k < log->flush_count(); ++k) cuts.emplace_back(log->after_flush(k) + 1, qcow::kPowerCutReorder(k));
    for (auto [prefix, mode] : cuts) {
      CAPTURE(prefix);
      CAPTURE(int(mode.kind));
      qtest::write_file(replayed, bytes);
      {
        auto f = qcow::open_posix_file(replayed.string(), qcow::FileMode::kReadWrite);
        REQUIRE(f.is_ok());
        REQUIRE(qcow::replay(*log, prefix, **f, mode).is_ok());
      }
      qcow::CheckOptions again;
      again.repair = qcow::Repair::kAll;
      auto r2 = qcow::check_image(replayed.string(), again);
      CHECK_MESSAGE(r2.is_ok(), r2.status().message());
      CHECK(qtest::qemu_check(replayed.string()).rc == 0);
      CHECK(guest(replayed) == content);
    }
    MESSAGE(fmt::format("extended_l2={}: {} logged repair ops, {} cuts each finished by a second repair", ext, n,
                        cuts.size()));
  }
  fs::remove_all(dir);
}
}
