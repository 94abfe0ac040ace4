// The sources of qimg convert, seen as one disk: block status runs and reads,
// and zero-copy access to the host bytes of data runs (see SourceSet::next_run).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/status.hpp"
#include "commands/file_maps.hpp"

namespace qimg {

// The sources concatenated into one guest address space.
class SourceSet {
 public:
  // A run of guest bytes of one kind.
  struct Run {
    uint64_t length = 0;
    bool zero = true;               // reads as zeros
    // The run's guest bytes in a mapping (read-only, valid for the SourceSet's life),
    // or nullptr (read them with read()). Set for data runs stored unencrypted and
    // uncompressed in a mappable file, and for zero runs of raw files.
    const uint8_t* mapped = nullptr;
  };

  qcow::Status open(const std::vector<std::string>& files, const qcow::OpenOptions& options);
  uint64_t total() const { return total_; }
  // A description of each source (its top image).
  std::vector<qcow::ImageInfo> info() const;
  // The run at t of at most max bytes (length > 0 while t < total()). A run ends
  // where the kind changes or, for mapped runs, where the host bytes stop being
  // contiguous in one mapping. Without `mappable` no run is mapped.
  qcow::Status next_run(uint64_t t, uint64_t max, bool mappable, Run* run);
  qcow::Status read(uint64_t t, std::span<uint8_t> buf);
  // Fails if a mapped source file shrank during the copy (its bytes may have been lost).
  qcow::Status check_files() const { return maps_.check(); }

 private:
  struct Source {
    qcow::Image image;
    uint64_t base;                       // offset of this source in the concatenated space
    std::vector<bool> raw_layer;         // per chain depth: a raw file (its holes read as zeros)
  };
  size_t find(uint64_t t) const;
  const uint8_t* map_extent(const Source& s, const qcow::Extent& e);
  std::vector<Source> sources_;
  uint64_t total_ = 0;
  FileMaps maps_;
};

}  // namespace qimg
