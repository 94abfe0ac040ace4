// The sources of qimg convert, seen as one disk: block status runs and reads.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "qcow/image.hpp"
#include "qcow/status.hpp"

namespace qimg {

// The sources concatenated into one guest address space.
class SourceSet {
 public:
  // A run of guest bytes of one kind.
  struct Run {
    uint64_t length = 0;
    bool zero = true;  // reads as zeros
  };

  qcow::Status open(const std::vector<std::string>& files, const qcow::OpenOptions& options);
  uint64_t total() const { return total_; }
  // A description of each source (its top image).
  std::vector<qcow::ImageInfo> info() const;
  // The run at t of at most max bytes (length > 0 while t < total()); a run ends
  // where the kind changes.
  qcow::Status next_run(uint64_t t, uint64_t max, Run* run);
  qcow::Status read(uint64_t t, std::span<uint8_t> buf);
  size_t count() const { return sources_.size(); }
  qcow::Image& image(size_t i) { return sources_[i].image; }

 private:
  struct Source {
    qcow::Image image;
    uint64_t base;                       // offset of this source in the concatenated space
  };
  size_t find(uint64_t t) const;
  std::vector<Source> sources_;
  uint64_t total_ = 0;
};

}  // namespace qimg
