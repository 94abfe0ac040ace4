// Tests for the compressed-cluster codecs (zlib raw deflate -12, zstd).

#include <doctest/doctest.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "compress/codec.hpp"
#include "qcow/compress.hpp"

namespace {

using namespace qcow;
using Bytes = std::vector<uint8_t>;

Bytes noise_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  Bytes v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

Bytes text_data(size_t n, uint32_t seed) {
  static const char* words[] = {"qcow2 ", "cluster ", "refcount ", "table ", "L2 ", "entry ", "snapshot ",
                                "backing ", "file ", "the ", "of ", "and ", "\n"};
  std::mt19937 rng(seed);
  Bytes v;
  v.reserve(n);
  while (v.size() < n) {
    const char* w = words[rng() % std::size(words)];
    for (const char* p = w; *p && v.size() < n; p++) v.push_back(static_cast<uint8_t>(*p));
  }
  return v;
}

// Random blocks repeated 8 KiB apart: a 32 KiB window would reference them,
// the 4 KiB window QEMU uses must not.
Bytes far_repeats(size_t n, uint32_t seed) {
  Bytes block = noise_bytes(8192, seed);
  Bytes v(n);
  for (size_t i = 0; i < n; i++) v[i] = block[i % block.size()];
  return v;
}

Bytes compress_ok(CompressionType t, const Bytes& in) {
  Bytes out(in.size() + in.size() / 2 + 1024);
  auto r = compress::compress(t, in, out);
  INFO(r.status().message());
  REQUIRE(r.is_ok());
  REQUIRE(*r > 0);
  out.resize(*r);
  return out;
}

std::string name(CompressionType t) { return t == CompressionType::kZlib ? "zlib" : "zstd"; }

}  // namespace

TEST_SUITE("qcow::compress") {

TEST_CASE("round trip over sizes and contents") {
  for (CompressionType t : {CompressionType::kZlib, CompressionType::kZstd}) {
    for (size_t size : {size_t{512}, size_t{4096}, size_t{65536}, size_t{2} << 20}) {
      const std::vector<std::pair<const char*, Bytes>> inputs = {
          {"random", noise_bytes(size, 1)}, {"text", text_data(size, 2)}, {"zero", Bytes(size, 0)},
          {"far", far_repeats(size, 3)}};
      for (const auto& [kind, in] : inputs) {
        const std::string codec = name(t);
    CAPTURE(codec);
        CAPTURE(size);
        const std::string kind_name = kind;
        CAPTURE(kind_name);
        Bytes c = compress_ok(t, in);
        Bytes out(size, 0xEE);
        Status st = compress::decompress(t, c, out);
        INFO(st.message());
        REQUIRE(st.is_ok());
        CHECK(out == in);
        if (kind_name == "text" || kind_name == "zero") CHECK(c.size() < size);
        // far_repeats repeats only 8 KiB apart: zstd finds that, zlib's 4 KiB
        // window must not (else QEMU could not inflate it).
        if (kind_name == "far" && size > 8192) {
          if (t == CompressionType::kZstd) CHECK(c.size() < size / 2);
          else CHECK(c.size() >= size);
        }
      }
    }
  }
}

TEST_CASE("returns 0 when the result does not fit") {
  for (CompressionType t : {CompressionType::kZlib, CompressionType::kZstd}) {
    const std::string codec = name(t);
    CAPTURE(codec);
    for (size_t size : {size_t{512}, size_t{65536}}) {
      Bytes in = noise_bytes(size, 4);
      Bytes out(size - 1);
      auto r = compress::compress(t, in, out);
      REQUIRE(r.is_ok());
      CHECK(*r == 0);
      // A little slack is enough and gives the same bytes (an exact fit may
      // report 0: zlib, like QEMU's use of it, wants room to finish).
      Bytes c = compress_ok(t, text_data(size, 5));
      Bytes slack(c.size() + 64);
      r = compress::compress(t, text_data(size, 5), slack);
      REQUIRE(r.is_ok());
      REQUIRE(*r == c.size());
      CHECK(std::equal(c.begin(), c.end(), slack.begin()));
      Bytes exact(c.size());
      r = compress::compress(t, text_data(size, 5), exact);
      REQUIRE(r.is_ok());
      CHECK((*r == 0 || *r == c.size()));
      Bytes short_by_one(c.size() - 1);
      r = compress::compress(t, text_data(size, 5), short_by_one);
      REQUIRE(r.is_ok());
      CHECK(*r == 0);
    }
  }
}

TEST_CASE("trailing garbage after the stream is ignored") {
  for (CompressionType t : {CompressionType::kZlib, CompressionType::kZstd}) {
    const std::string codec = name(t);
    CAPTURE(codec);
    for (const Bytes& in : {text_data(65536, 6), Bytes(65536, 0), noise_bytes(4096, 7)}) {
      Bytes c = compress_ok(t, in);
      for (const Bytes& tail : {Bytes(511, 0), Bytes(511, 0xFF), noise_bytes(511, 8)}) {
        Bytes padded = c;
        padded.insert(padded.end(), tail.begin(), tail.end());
        Bytes out(in.size());
        Status st = compress::decompress(t, padded, out);
        INFO(st.message());
        REQUIRE(st.is_ok());
        CHECK(out == in);
      }
    }
  }
}

TEST_CASE("truncated or short streams are rejected") {
  for (CompressionType t : {CompressionType::kZlib, CompressionType::kZstd}) {
    const std::string codec = name(t);
    CAPTURE(codec);
    for (const Bytes& in : {text_data(65536, 9), Bytes(65536, 0), noise_bytes(4096, 10)}) {
      Bytes c = compress_ok(t, in);
      for (size_t cut : {size_t{0}, size_t{1}, c.size() / 2, c.size() - 1}) {
        CAPTURE(cut);
        Bytes out(in.size());
        Status st = compress::decompress(t, std::span<const uint8_t>(c.data(), cut), out);
        if (t == CompressionType::kZlib && cut == c.size() - 1 && st.is_ok()) {
          // The last byte may hold only the end-of-block code: the cluster is
          // already complete, which QEMU accepts too. It must be right, though.
          CHECK(out == in);
          continue;
        }
        CHECK(st.code() == ErrorCode::kCorrupt);
        CHECK(st.message().rfind("compressed cluster: ", 0) == 0);
      }
      // A stream holding fewer bytes than the cluster.
      Bytes bigger(in.size() + 1);
      CHECK(compress::decompress(t, c, bigger).code() == ErrorCode::kCorrupt);
    }
  }
  // zstd knows its frame's end: more data than the cluster is corruption.
  Bytes in = text_data(4096, 11);
  Bytes c = compress_ok(CompressionType::kZstd, in);
  Bytes smaller(in.size() - 1);
  CHECK(compress::decompress(CompressionType::kZstd, c, smaller).code() == ErrorCode::kCorrupt);
}

TEST_CASE("corrupted input is rejected or decoded without crashing") {
  Bytes out(65536);
  // Invalid from the first bytes: deflate block type 3, zstd bad magic.
  CHECK(compress::decompress(CompressionType::kZlib, Bytes(512, 0xFF), out).code() == ErrorCode::kCorrupt);
  CHECK(compress::decompress(CompressionType::kZstd, Bytes(512, 0xFF), out).code() == ErrorCode::kCorrupt);
  CHECK(compress::decompress(CompressionType::kZstd, Bytes(512, 0), out).code() == ErrorCode::kCorrupt);
  CHECK(compress::decompress(CompressionType::kZlib, Bytes{}, out).code() == ErrorCode::kCorrupt);
  CHECK(compress::decompress(CompressionType::kZstd, Bytes{}, out).code() == ErrorCode::kCorrupt);

  std::mt19937 rng(12);
  for (CompressionType t : {CompressionType::kZlib, CompressionType::kZstd}) {
    const std::string codec = name(t);
    CAPTURE(codec);
    Bytes in = text_data(out.size(), 13);
    Bytes c = compress_ok(t, in);
    int rejected = 0;
    for (int i = 0; i < 300; i++) {
      Bytes bad = c;
      int flips = 1 + static_cast<int>(rng() % 4);
      for (int k = 0; k < flips; k++) bad[rng() % bad.size()] ^= static_cast<uint8_t>(1 + rng() % 255);
      Status st = compress::decompress(t, bad, out);
      if (!st.is_ok()) {
        CHECK(st.code() == ErrorCode::kCorrupt);
        rejected++;
      }
    }
    CHECK(rejected > 0);
    for (int i = 0; i < 100; i++) {  // pure noise
      Bytes noise = noise_bytes(1 + rng() % 4096, static_cast<uint32_t>(rng()));
      Status st = compress::decompress(t, noise, out);
      CHECK((st.is_ok() || st.code() == ErrorCode::kCorrupt));
    }
  }
}

TEST_CASE("compression is deterministic, across calls and threads") {
  for (CompressionType t : {CompressionType::kZlib, CompressionType::kZstd}) {
    const std::string codec = name(t);
    CAPTURE(codec);
    Bytes in = text_data(1 << 20, 14);
    Bytes a = compress_ok(t, in);
    compress_ok(t, noise_bytes(65536, 15));  // context reuse must not leak state
    Bytes b = compress_ok(t, in);
    CHECK(a == b);
    Bytes from_thread;
    bool thread_ok = false;
    std::thread th([&] {
      Bytes out(in.size() * 2);
      auto r = compress::compress(t, in, out);
      if (r.is_ok() && *r > 0) {
        out.resize(*r);
        from_thread = out;
        Bytes back(in.size());
        thread_ok = compress::decompress(t, from_thread, back).is_ok() && back == in;
      }
    });
    th.join();
    CHECK(thread_ok);
    CHECK(from_thread == a);
  }
}

TEST_CASE("zlib output is raw deflate readable with windowBits -12") {
  for (const Bytes& in : {far_repeats(65536, 16), text_data(2 << 20, 17), noise_bytes(4096, 18)}) {
    Bytes c = compress_ok(CompressionType::kZlib, in);
    z_stream s = {};
    REQUIRE(inflateInit2(&s, -12) == Z_OK);
    Bytes out(in.size() + 1);
    s.next_in = c.data();
    s.avail_in = static_cast<uInt>(c.size());
    s.next_out = out.data();
    s.avail_out = static_cast<uInt>(out.size());
    int rc = inflate(&s, Z_FINISH);
    size_t produced = s.total_out;
    size_t consumed = s.total_in;
    inflateEnd(&s);
    CHECK(rc == Z_STREAM_END);
    CHECK(produced == in.size());
    CHECK(consumed == c.size());
    out.resize(produced);
    CHECK(out == in);
  }
  // And a stream made by zlib directly the way QEMU does decodes.
  Bytes in = text_data(65536, 19);
  Bytes c(in.size() * 2);
  z_stream s = {};
  REQUIRE(deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  s.next_in = in.data();
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = c.data();
  s.avail_out = static_cast<uInt>(c.size());
  REQUIRE(deflate(&s, Z_FINISH) == Z_STREAM_END);
  c.resize(s.total_out);
  deflateEnd(&s);
  CHECK(c == compress_ok(CompressionType::kZlib, in));
  Bytes out(in.size());
  REQUIRE(compress::decompress(CompressionType::kZlib, c, out).is_ok());
  CHECK(out == in);
}

TEST_CASE("zstd output is a standard frame; streamed frames decode") {
  Bytes in = text_data(65536, 20);
  Bytes c = compress_ok(CompressionType::kZstd, in);
  CHECK(ZSTD_getFrameContentSize(c.data(), c.size()) == in.size());
  Bytes out(in.size());
  CHECK(ZSTD_decompress(out.data(), out.size(), c.data(), c.size()) == in.size());
  CHECK(out == in);

  // A frame written with the streaming API and a checksum still decodes.
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
  Bytes framed(ZSTD_compressBound(in.size()));
  ZSTD_inBuffer ib = {in.data(), in.size(), 0};
  ZSTD_outBuffer ob = {framed.data(), framed.size(), 0};
  REQUIRE(ZSTD_compressStream2(cctx, &ob, &ib, ZSTD_e_end) == 0);
  ZSTD_freeCCtx(cctx);
  framed.resize(ob.pos);
  framed.insert(framed.end(), 300, 0xAB);
  std::fill(out.begin(), out.end(), 0);
  Status st = compress::decompress(CompressionType::kZstd, framed, out);
  INFO(st.message());
  CHECK(st.is_ok());
  CHECK(out == in);
}

}  // TEST_SUITE

// compress_cluster skips the codec for clusters that look incompressible (a
// sampled byte histogram). It must skip only clusters the codec cannot shrink
// below cluster_size - 1 bytes: the same verdict as running the codec.
TEST_CASE("compress_cluster: the incompressible shortcut agrees with the codec") {
  for (CompressionType type : {CompressionType::kZlib, CompressionType::kZstd}) {
    for (uint32_t cs : {4096u, 16384u, 65536u, 2u << 20}) {
      Bytes random = noise_bytes(cs, cs);
      std::vector<std::pair<const char*, Bytes>> cases;
      cases.emplace_back("random", random);
      for (uint32_t percent : {1u, 2u, 5u}) {  // zeros in one place, inside random data
        Bytes v = random;
        std::fill(v.begin() + cs / 3, v.begin() + cs / 3 + cs * percent / 100, 0);
        cases.emplace_back(percent == 1 ? "1% zeros" : percent == 2 ? "2% zeros" : "5% zeros", v);
      }
      Bytes mixed = random;
      Bytes text = text_data(cs / 2, 3);
      std::copy(text.begin(), text.end(), mixed.begin() + cs / 2);
      cases.emplace_back("half text", mixed);
      Bytes narrow = random;
      for (auto& b : narrow) b = uint8_t(b % 200);  // 200 of 256 values: entropy coding alone shrinks it
      cases.emplace_back("200 values", narrow);
      for (const auto& [what, data] : cases) {
        CAPTURE(cs);
        CAPTURE(what);
        Bytes out(cs), direct_out(cs);
        auto r = compress_cluster(type, cs, data, std::span(out).first(cs - 1));
        auto direct = compress::compress(type, data, std::span(direct_out).first(cs - 1));
        REQUIRE(r.is_ok());
        REQUIRE(direct.is_ok());
        CHECK(*r == *direct);
        if (std::string(what) == "random") CHECK(*r == 0);
        if (std::string(what) == "5% zeros" || std::string(what) == "half text") CHECK(*r > 0);
      }
    }
  }
}
