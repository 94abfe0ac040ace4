// The copy engine of qimg convert: sources seen as one disk, copied in
// 2 MiB chunks. Without -c one thread reads, classifies and writes each chunk
// in turn. With -c a bounded pipeline runs: one reader thread, N worker
// threads that classify units (zero, same as the base, data) and compress
// clusters, and the calling thread writing in guest order (any order with -W).
//
// Each qcow::Image is used by one thread only: the sources and the base image
// by the reader, the target by the writer; workers touch buffers only.
// Memory is bounded: at most (workers + 2) chunks are in flight, each holding
// up to three kChunkBytes buffers (source data, base data with -B, compressed
// output with -c), whatever the image size.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qimg {

class Progress;

constexpr uint64_t kChunkBytes = 2ull << 20;  // a multiple of every cluster size

// The sources concatenated into one guest address space.
class SourceSet {
 public:
  qcow::Status open(const std::vector<std::string>& files, const qcow::OpenOptions& options);
  uint64_t total() const { return total_; }
  // The run at t (at most max bytes) that is all zeros (*zero) or may hold data.
  qcow::Status next_run(uint64_t t, uint64_t max, uint64_t* run, bool* zero);
  qcow::Status read(uint64_t t, std::span<uint8_t> buf);

 private:
  struct Source {
    qcow::Image image;
    uint64_t base;  // offset of this source in the concatenated space
  };
  size_t find(uint64_t t) const;
  std::vector<Source> sources_;
  uint64_t total_ = 0;
};

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
};

// Copies every byte of `sources` to `target` (guest offset 0 up). With a base
// image (the target's backing chain, -B), units that read the same in the
// source and in the base are left unallocated.
qcow::Status copy_image(SourceSet& sources, qcow::Image* base, qcow::Image& target, const CopyConfig& config,
                        Progress& progress);

}  // namespace qimg
