// The copy engine of qimg convert: sources seen as one disk, copied in
// chunks (2 MiB; with -c a cluster, at least 1 MiB) through a bounded pipeline: one reader thread (block status,
// reads of the data runs into reused buffers), N worker threads that classify units
// (zero, same as the base, data) and compress clusters with -c (one worker
// without -c), and the calling thread writing in guest order (any order with
// -W). With -m 1 and no -c the calling thread does all three in turn.
//
// Each qcow::Image is used by one thread only: the sources and the base image
// by the reader, the target by the writer; workers touch buffers only.
// Memory is bounded: at most (workers + 2) chunks are in flight, each holding
// up to three chunk_bytes() buffers (source data, base data with -B, compressed
// output with -c), whatever the image size.
#pragma once

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/status.hpp"
#include "commands/convert_source.hpp"

namespace qimg {

class Progress;

constexpr uint64_t kChunkBytes = 2ull << 20;  // a multiple of every cluster size

struct CopyConfig {
  // Zero detection granularity on the target: the subcluster with extended L2,
  // the cluster otherwise, the -S alignment for raw targets.
  uint64_t unit = 4096;
  uint64_t sparse = 4096;           // -S: shortest zero run left unwritten; 0: write everything
  bool compress = false;            // -c: whole clusters, compressed on the workers
  uint32_t cluster_size = 65536;    // target cluster size (compression)
  qcow::CompressionType compression_type = qcow::CompressionType::kZlib;
  bool target_zero = false;         // unwritten target ranges read as zeros
  int workers = 1;                  // -m
  bool out_of_order = false;        // -W
  bool salvage = false;             // --salvage: unreadable source bytes become zeros, with a warning
  uint64_t rate_limit = 0;          // -r: guest bytes per second (0: unlimited)
};

// The unit of work: kChunkBytes, or with -c one cluster but at least 1 MiB (with
// -c more chunks are in flight, one per worker, and peak memory follows their size).
inline uint64_t chunk_bytes(const CopyConfig& config) {
  return config.compress ? std::max<uint64_t>(config.cluster_size, 1ull << 20) : kChunkBytes;
}

// Copies every byte of `sources` to `target` (guest offset 0 up). With a base
// image (the target's backing chain, -B), units that read the same in the
// source and in the base are left unallocated.
qcow::Status copy_image(SourceSet& sources, qcow::Image* base, qcow::Image& target, const CopyConfig& config,
                        Progress& progress);

}  // namespace qimg
