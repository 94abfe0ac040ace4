// Compressed-cluster codecs: zlib (raw deflate) and zstd, as QEMU stores them.
//
// qcow2 records a compressed cluster's size only to 512-byte sectors, so
// decompression reads a stream that may be followed by garbage and stops once
// the cluster is full. zlib streams are raw deflate with a 4 KiB window
// (windowBits -12): QEMU inflates with -12, so a larger window's back
// references would be unreadable there.
//
// Thread-safety: no shared state; codec contexts are thread_local.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow::compress {

// Compresses in into out; returns the compressed size, or 0 when the result
// would not fit in out (the caller then stores the cluster uncompressed).
// The same input always gives the same bytes.
Result<size_t> compress(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out);

// Fills exactly out.size() bytes from the stream at the start of in; bytes
// after the end of the stream are ignored. Fails with kCorrupt if the stream
// is invalid, ends early, or holds more than out.size() bytes (zstd).
Status decompress(CompressionType type, std::span<const uint8_t> in, std::span<uint8_t> out);

}  // namespace qcow::compress
