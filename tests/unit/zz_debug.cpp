#include <doctest/doctest.h>
#include <cstdio>
#include "io/fault_file.hpp"
#include "qcow/image.hpp"
#include "support/test_util.hpp"
using namespace qcow;
TEST_CASE("zz debug" * doctest::skip(std::getenv("ZZ") == nullptr)) {
  std::string path = "/tmp/dbg/x.qcow2";
  CreateOptions co; co.size = 96 << 10; co.cluster_size = 512; co.refcount_bits = 64;
  REQUIRE(Image::create(path, co).is_ok());
  auto log = std::make_shared<WriteLog>();
  auto plan = FaultPlan::fail_write(std::atoi(std::getenv("ZZ")));
  OpenOptions oo; oo.writable = true;
  oo.wrap_file = [&](std::unique_ptr<File> f) -> std::unique_ptr<File> {
    return std::make_unique<RecordingFile>(std::make_unique<FaultFile>(std::move(f), plan), log);
  };
  auto r = Image::open(path, oo);
  REQUIRE(r.is_ok());
  Image img = std::move(r).value();
  auto w = [&](uint64_t off, uint64_t len) { auto d = qtest::random_bytes(len, off); Status s = img.write(off, d); printf("write %lu+%lu -> %s\n", off, len, s.message().c_str()); return s; };
  const char* p = std::getenv("ZZOPS");
  uint64_t a, b; int n = 0;
  while (p && sscanf(p, "%lu+%lu%n", &a, &b, &n) == 2) { if (!w(a, b).is_ok()) break; p += n; if (*p == ',') ++p; }
  Status c = img.close();
  printf("close -> %s\n", c.message().c_str());
  for (size_t i = 0; i < log->ops.size(); ++i) {
    auto& op = log->ops[i];
    printf("%zu %s off=%#lx len=%#lx\n", i, op.kind == LoggedOp::Kind::kWrite ? "W" : op.kind == LoggedOp::Kind::kFlush ? "F" : op.kind == LoggedOp::Kind::kTruncate ? "T" : "A", op.offset, op.length);
  }
}
