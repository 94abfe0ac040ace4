// zlib and zstd cluster codecs; see codec.hpp.

#include "compress/codec.hpp"

#include "qcow/compress.hpp"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <string>
#include <memory>
#include <new>
#include <vector>

#include <fmt/format.h>

namespace qcow::compress {
namespace {

constexpr int kZlibWindowBits = -12;  // raw deflate, 4 KiB window: what QEMU uses
constexpr int kZlibMemLevel = 9;

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxDeleter {
  void operator()(ZSTD_DCtx* d) const { ZSTD_freeDCtx(d); }
};

// Contexts are reused per thread (creating one costs more than a cluster's
// compression) and reset before every use, so no state leaks between calls.
ZSTD_CCtx* thread_cctx() {
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  if (!cctx) cctx.reset(ZSTD_createCCtx());
  return cctx.get();
}
ZSTD_DCtx* thread_dctx() {
  thread_local std::unique_ptr<ZSTD_DCtx, DCtxDeleter> dctx(ZSTD_createDCtx());
  if (!dctx) dctx.reset(ZSTD_createDCtx());
  return dctx.get();
}

Result<size_t> zlib_compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (in.size() > UINT_MAX || out.size() > UINT_MAX)
    return Status::invalid(fmt::format("zlib compress: buffer of {} bytes too large", std::max(in.size(), out.size())));
  z_stream s = {};
  int rc = deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, kZlibWindowBits, kZlibMemLevel, Z_DEFAULT_STRATEGY);
  if (rc != Z_OK) return Status::internal(fmt::format("zlib compress: deflateInit2 failed ({})", rc));
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(in.size());
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  rc = deflate(&s, Z_FINISH);
  size_t produced = s.total_out;
  deflateEnd(&s);
  if (rc == Z_STREAM_END) return produced;
  if (rc == Z_OK || rc == Z_BUF_ERROR) return size_t{0};  // out is full: does not fit
  return Status::internal(fmt::format("zlib compress: deflate failed ({})", rc));
}

Result<size_t> zstd_compress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_CCtx* cctx = thread_cctx();
  if (!cctx) return Status::io("zstd compress: cannot allocate a context", ENOMEM);
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);  // default level, no leftovers
  size_t rc = ZSTD_compress2(cctx, out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(rc)) {
    if (ZSTD_getErrorCode(rc) == ZSTD_error_dstSize_tooSmall) return size_t{0};
    return Status::internal(fmt::format("zstd compress: {}", ZSTD_getErrorName(rc)));
  }
  return rc;
}

Status zlib_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  if (out.size() > UINT_MAX)
    return Status::invalid(fmt::format("compressed cluster: output of {} bytes too large", out.size()));
  z_stream s = {};
  int rc = inflateInit2(&s, kZlibWindowBits);
  if (rc != Z_OK) return Status::internal(fmt::format("compressed cluster: inflateInit2 failed ({})", rc));
  // qcow2 bounds the stream by whole sectors only; more input than UINT_MAX
  // is never needed for a 2 MiB cluster.
  s.next_in = const_cast<Bytef*>(in.data());
  s.avail_in = static_cast<uInt>(std::min<size_t>(in.size(), UINT_MAX));
  s.next_out = out.data();
  s.avail_out = static_cast<uInt>(out.size());
  rc = inflate(&s, Z_FINISH);
  size_t produced = s.total_out;
  const char* msg = s.msg;
  std::string detail = msg ? msg : "";
  bool full = s.avail_out == 0;
  inflateEnd(&s);
  // Z_BUF_ERROR/Z_OK with a full output: the stream goes on past the
  // cluster's end or the sector padding follows; the cluster is complete.
  if (full && (rc == Z_STREAM_END || rc == Z_OK || rc == Z_BUF_ERROR)) return Status::ok();
  if (rc == Z_STREAM_END || rc == Z_BUF_ERROR || rc == Z_OK)
    return Status::corrupt(fmt::format("compressed cluster: zlib stream ends after {} of {} bytes", produced, out.size()));
  return Status::corrupt(fmt::format("compressed cluster: zlib inflate failed ({}{}{})", rc, detail.empty() ? "" : ": ", detail));
}

Status zstd_decompress(std::span<const uint8_t> in, std::span<uint8_t> out) {
  ZSTD_DCtx* dctx = thread_dctx();
  if (!dctx) return Status::io("compressed cluster: cannot allocate a zstd context", ENOMEM);
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_and_parameters);
  ZSTD_inBuffer input = {in.data(), in.size(), 0};
  ZSTD_outBuffer output = {out.data(), out.size(), 0};
  size_t rc = 1;
  while (output.pos < output.size) {
    size_t in_before = input.pos, out_before = output.pos;
    rc = ZSTD_decompressStream(dctx, &output, &input);
    if (ZSTD_isError(rc))
      return Status::corrupt(fmt::format("compressed cluster: zstd: {}", ZSTD_getErrorName(rc)));
    if (rc == 0 && output.pos < output.size)
      return Status::corrupt(fmt::format("compressed cluster: zstd frame ends after {} of {} bytes", output.pos, output.size));
    // No progress means the input ran out before the cluster was full.
    if (input.pos == in_before && output.pos == out_before)
      return Status::corrupt(fmt::format("compressed cluster: zstd input ends after {} of {} bytes", output.pos, output.size));
  }
  // The cluster is full; the frame must end here too (it may still have an
  // epilogue such as a checksum to read). More data means it was too large.
  while (rc != 0) {
    size_t in_before = input.pos;
    rc = ZSTD_decompressStream(dctx, &output, &input);
    if (ZSTD_isError(rc))
      return Status::corrupt(fmt::format("compressed cluster: zstd: {}", ZSTD_getErrorName(rc)));
    if (rc != 0 && input.pos == in_before)
      return Status::corrupt(fmt::format("compressed cluster: zstd frame holds more than {} bytes or is truncated", out.size()));
  }
  return Status::ok();
}

}  // namespace

Result<size_t> compress(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out) {
  switch (type) {
    case CompressionType::kZlib: return zlib_compress(in, out);
    case CompressionType::kZstd: return zstd_compress(in, out);
  }
  return Status::unsupported(fmt::format("compression type {}", static_cast<int>(type)));
}

}  // namespace qcow::compress

namespace qcow {

namespace {

// True when the bytes are spread so evenly over all 256 values (order-0 entropy
// as high as uniformly random bytes give, as random or already compressed data
// is) that no codec can bring a cluster below cluster_size - 1 bytes: deflate
// would spend a long time finding that out (used for zlib only; see
// compress_cluster). Deterministic, so the decision depends on the data alone.
//
// Clusters above 16 KiB are sampled: every fourth 64-byte block (a 256-byte
// stride, so any stretch of zeros or text longer than that is represented in
// proportion). The histogram was a fifth of a zstd convert's CPU time when it
// read every byte. The threshold is the entropy a uniform sample of n bytes
// shows on average (8 - 255 / (2 n ln 2), the plug-in estimator's bias) less a
// margin of a few standard deviations; a cluster that is 1% zeros already
// falls below it. Misjudging costs only speed or a little size, never data.
bool looks_incompressible(std::span<const uint8_t> data) {
  if (data.size() < 4096) return false;
  constexpr size_t kBlock = 64, kStride = 256;
  const bool sample = data.size() > 16384;
  uint32_t h[4][256] = {};
  size_t n = 0;
  auto count = [&](const uint8_t* p, size_t len) {
    size_t i = 0;
    for (; i + 4 <= len; i += 4) {
      ++h[0][p[i]];
      ++h[1][p[i + 1]];
      ++h[2][p[i + 2]];
      ++h[3][p[i + 3]];
    }
    for (; i < len; ++i) ++h[0][p[i]];
    n += len;
  };
  if (sample) {
    for (size_t at = 0; at < data.size(); at += kStride) count(data.data() + at, std::min(kBlock, data.size() - at));
  } else {
    count(data.data(), data.size());
  }
  const double total = double(n);
  double entropy = 0;
  for (int b = 0; b < 256; ++b) {
    const uint32_t c = h[0][b] + h[1][b] + h[2][b] + h[3][b];
    if (c) entropy -= double(c) / total * std::log2(double(c) / total);
  }
  const double uniform = 8.0 - 255.0 / (2.0 * total * std::log(2.0));
  return entropy > uniform - 0.004;
}

}  // namespace

Result<size_t> compress_cluster(CompressionType type, uint32_t cluster_size, std::span<const uint8_t> data,
                                std::span<uint8_t> out) {
  if (cluster_size == 0 || data.size() > cluster_size || out.size() + 1 < cluster_size)
    return Status::invalid(fmt::format("compress_cluster: {} bytes of data, {} bytes of output for a {} byte cluster",
                                       data.size(), out.size(), cluster_size));
  std::vector<uint8_t> padded;
  if (data.size() < cluster_size) {  // the last cluster of a disk: compress a whole zero-padded cluster
    padded.assign(cluster_size, 0);
    std::copy(data.begin(), data.end(), padded.begin());
    data = padded;
  }
  // zstd recognises incompressible input by itself at several GB/s; a histogram first
  // only reads the data one more time (measured: convert -c zstd 1.27 s with it,
  // 0.99 s without). Deflate has no such shortcut and is slow on random data.
  if (type == CompressionType::kZlib && looks_incompressible(data)) return size_t{0};
  try {
    return compress::compress(type, data, out.first(cluster_size - 1));
  } catch (const std::bad_alloc&) {
    return Status::limit("compress_cluster: out of memory");
  }
}

}  // namespace qcow

namespace qcow::compress {

Status decompress(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out) {
  switch (type) {
    case CompressionType::kZlib: return zlib_decompress(in, out);
    case CompressionType::kZstd: return zstd_decompress(in, out);
  }
  return Status::unsupported(fmt::format("compressed cluster: compression type {}", static_cast<int>(type)));
}

}  // namespace qcow::compress
