// Compressing guest clusters outside an Image, for parallel writers.
//
// An Image is single-threaded, but compression is pure computation: a writer
// (qimg convert -c) compresses clusters on worker threads with
// compress_cluster() and hands the results, in guest order, to the one thread
// that owns the Image, which stores them with Image::write_compressed_cluster().
// The bytes produced are exactly what Image::write(..., Compress::kYes) would
// store, and the same input always gives the same bytes.
//
// Thread-safety: compress_cluster() may be called from any number of threads
// at once (codec contexts are per thread).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qcow {

// Compresses one guest cluster of `cluster_size` bytes; `data` may be shorter
// (the last cluster of a disk) and is then padded with zeros. `out` must hold
// at least cluster_size - 1 bytes. Returns the compressed length, or 0 when
// compressing does not save space (QEMU's rule: the result must be smaller
// than a cluster); the caller then writes the cluster uncompressed. Data whose
// bytes are spread evenly over all values (random or already compressed data,
// order-0 entropy above 7.99 bits per byte) is reported as incompressible
// without running the codec.
Result<size_t> compress_cluster(CompressionType type, uint32_t cluster_size, std::span<const uint8_t> data,
                                std::span<uint8_t> out);

}  // namespace qcow
