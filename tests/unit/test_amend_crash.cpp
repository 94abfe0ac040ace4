// Crash safety of amend, proven by replaying every prefix of its writes.
//
// amend never changes guest content, so after a crash at any point the image
// must open and read exactly as before, and `qemu-img check` must find no
// corruption (leaked clusters are allowed).
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>

#include "io/fault_file.hpp"
#include "support/test_util.hpp"
#include "qcow/amend.hpp"
#include "qcow/image.hpp"

namespace fs = std::filesystem;

namespace {

std::vector<uint8_t> read_all(const fs::path& p) {
  auto img = qcow::Image::open(p.string(), {});
  REQUIRE_MESSAGE(img.is_ok(), img.status().message());
  std::vector<uint8_t> out(img->size());
  auto s = img->read(0, out);
  REQUIRE_MESSAGE(s.is_ok(), s.message());
  return out;
}

struct Scenario {
  const char* name;
  qcow::CreateOptions create;
  bool backing;
  qcow::AmendOptions amend;
};

void fill(qcow::Image& img, bool subclusters, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<uint8_t> buf(64 << 10);
  for (int i = 0; i < 24; ++i) {
    uint64_t len = subclusters ? 4096 : (rng() % 3 + 1) * 16384;
    uint64_t off = (rng() % (img.size() / 4096 - 32)) * 4096;
    std::fill(buf.begin(), buf.end(), uint8_t(rng()));
    REQUIRE(img.write(off, std::span<const uint8_t>(buf.data(), len)).is_ok());
  }
  REQUIRE(img.write_zeroes(1 << 20, 64 << 10, qcow::Unmap::kYes).is_ok());
  std::vector<uint8_t> cluster(64 << 10, 0x3c);
  REQUIRE(img.write(2 << 20, cluster, qcow::Compress::kYes).is_ok());
}

}  // namespace

TEST_SUITE("qcow::amend") {
TEST_CASE("amend survives a crash after every write") {
  qtest::require_tool("qemu-img");
  fs::path dir = fs::temp_directory_path() / fmt::format("qimg-amend-crash-{}", ::getpid());
  fs::create_directories(dir);

  std::vector<Scenario> scenarios;
  {
    Scenario s{"extended_l2=on", {}, false, {}};
    s.create.size = 8 << 20;
    s.amend.extended_l2 = true;
    scenarios.push_back(s);
  }
  {
    Scenario s{"extended_l2=off over a backing file", {}, true, {}};
    s.create.size = 8 << 20;
    s.create.extended_l2 = true;
    s.amend.extended_l2 = false;
    scenarios.push_back(s);
  }
  {
    Scenario s{"compat=0.10", {}, true, {}};
    s.create.size = 8 << 20;
    s.amend.version = 2;
    scenarios.push_back(s);
  }
  {
    Scenario s{"refcount_bits=4", {}, false, {}};
    s.create.size = 8 << 20;
    s.create.cluster_size = 16384;
    s.amend.refcount_bits = 4;
    scenarios.push_back(s);
  }

  for (const auto& sc : scenarios) {
    std::string name = sc.name;
    CAPTURE(name);
    fs::path img = dir / "image.qcow2", replayed = dir / "replayed.qcow2";
    qcow::CreateOptions co = sc.create;
    if (sc.backing) {
      fs::path base = dir / "base.raw";
      std::vector<uint8_t> data(8 << 20);
      for (size_t i = 0; i < data.size(); ++i) data[i] = uint8_t(i * 7 + (i >> 12));
      qtest::write_file(base, data);
      co.backing_file = "base.raw";
      co.backing_format = "raw";
    }
    REQUIRE(qcow::Image::create(img.string(), co).is_ok());
    {
      qcow::OpenOptions oo;
      oo.writable = true;
      auto im = qcow::Image::open(img.string(), oo);
      REQUIRE(im.is_ok());
      fill(*im, sc.create.extended_l2, 42);
      REQUIRE(im->close().is_ok());
    }
    const std::vector<uint8_t> content = read_all(img);
    const std::vector<uint8_t> original = qtest::read_file(img);

    auto log = std::make_shared<qcow::WriteLog>();
    qcow::AmendOptions ao = sc.amend;
    bool wrapped = false;
    ao.wrap_file = [&](std::unique_ptr<qcow::File> f) -> std::unique_ptr<qcow::File> {
      if (wrapped) return f;  // the image file only; backing files are read-only
      wrapped = true;
      return std::make_unique<qcow::RecordingFile>(std::move(f), log);
    };
    auto st = qcow::amend_image(img.string(), ao);
    REQUIRE_MESSAGE(st.is_ok(), st.message());
    REQUIRE(read_all(img) == content);
    REQUIRE(qtest::qemu_check(img.string()).consistent());

    const size_t n = log->size();
    std::vector<std::pair<size_t, qcow::PowerCut>> cuts;
    for (size_t p = 0; p <= n; ++p) cuts.emplace_back(p, qcow::kProcessKill);
    for (size_t k = 0; k < log->flush_count(); ++k) {
      cuts.emplace_back(log->after_flush(k) + 1, qcow::kPowerCut);
      cuts.emplace_back(log->after_flush(k) + 1, qcow::kPowerCutReorder(k));
    }
    size_t checked = 0;
    for (size_t i = 0; i < cuts.size(); ++i) {
      auto [prefix, mode] = cuts[i];
      CAPTURE(prefix);
      CAPTURE(int(mode.kind));
      qtest::write_file(replayed, original);
      {
        auto f = qcow::open_posix_file(replayed.string(), qcow::FileMode::kReadWrite);
        REQUIRE(f.is_ok());
        REQUIRE(qcow::replay(*log, prefix, **f, mode).is_ok());
      }
      CHECK(read_all(replayed) == content);
      // qemu-img check is slow: every flush point and about 40 spread prefixes.
      if (mode.kind != qcow::CutKind::kProcessKill || prefix % std::max<size_t>(1, n / 40) == 0 || prefix == n) {
        const bool consistent = qtest::qemu_check(replayed.string()).consistent();
        CHECK(consistent);
        if (!consistent && std::getenv("QIMG_KEEP_FAILED")) {
          fs::copy_file(replayed, dir / fmt::format("failed-{}-{}.qcow2", prefix, int(mode.kind)));
          fs::copy_file(img, dir / "final.qcow2", fs::copy_options::overwrite_existing);
          for (size_t k = 0; k < log->size(); ++k)
            MESSAGE(fmt::format("op {}: kind {} offset {:#x} length {}", k, int(log->ops[k].kind), log->ops[k].offset,
                                log->ops[k].length));
          return;
        }
        ++checked;
      }
    }
    MESSAGE(fmt::format("{}: {} logged ops, {} cuts, {} checked with qemu-img", sc.name, n, cuts.size(), checked));
  }
  fs::remove_all(dir);
}
}
