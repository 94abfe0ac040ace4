// ExtentBatch: answers "data or hole, and up to where" from one FIEMAP call per
// batch of extents instead of one lseek(SEEK_HOLE/SEEK_DATA) per run.
//
// Only for callers that walk a read-only file forward and report what they find
// (map, compare): never for decisions that could drop data. It answers only what
// FIEMAP states plainly: a gap between extents is a hole (the call syncs the file
// first, so delayed allocations are real extents), and an extent with no flag
// but LAST/MERGED/SHARED is data. An extent flagged anything else (unwritten,
// delalloc, unknown, encoded, inline) is left to lseek, and so is every batch's
// first answer, as a cross-check: one disagreement, or queries that jump around
// so much that batches are refilled more than they are used, switch batching
// off for the file.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace qcow {

class ExtentBatch {
 public:
  // The answer for offset from the current batch (refilled as needed), or nullopt
  // when lseek must answer. `*fresh` tells the caller the batch was just refilled
  // (so the answer should be cross-checked).
  std::optional<bool> lookup(int fd, uint64_t offset, uint64_t* run_end, bool* fresh);
  // The caller's lseek disagreed with a fresh answer: no more batching.
  void disable() { enabled_ = false; }
  bool enabled() const { return enabled_; }

 private:
  struct Extent {
    uint64_t start, end;
    bool plain;  // data beyond doubt
  };
  bool refill(int fd, uint64_t offset);
  std::optional<bool> answer(uint64_t offset, uint64_t* run_end) const;

  bool enabled_ = true;
  std::vector<Extent> extents_;
  uint64_t from_ = 0, to_ = 0;  // [from_, to_) is described by extents_ (gaps are holes)
  uint64_t file_size_ = 0;      // at the last refill
  uint64_t refills_ = 0, hits_ = 0;
};

}  // namespace qcow
