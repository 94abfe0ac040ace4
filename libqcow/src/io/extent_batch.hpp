// ExtentBatch: answers "data or hole, and up to where" from one FIEMAP call per
// batch of extents instead of one lseek(SEEK_HOLE/SEEK_DATA) per run.
//
// Only for callers that walk a read-only file forward and report what they find
// (map, compare): never for decisions that could drop data. It answers only what
// FIEMAP states plainly: a gap between extents is a hole (the call syncs the file
// first, so delayed allocations are real extents), and an extent with no flag
// but LAST/MERGED/SHARED is data. An extent flagged anything else (unwritten,
// delalloc, unknown, encoded, inline) is left to lseek, and each batch's first
// answer is checked against lseek (exactly where FIEMAP states a boundary: a file
// system whose lseek does not see holes, such as ext2's, disagrees at once). One
// disagreement, or queries that jump around so much that batches are refilled
// more than they are used, switch batching off for the file. A batch is not
// refreshed while used: meant for files opened read-only under a lock that keeps
// writers out (the command line's case).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace qcow {

class ExtentBatch {
 public:
  struct Answer {
    bool data;
    uint64_t run_end;
    // run_end is where lseek's run ends too (an extent boundary FIEMAP states
    // plainly); otherwise lseek's run may go on further.
    bool exact;
  };
  // The answer for offset from the current batch (refilled as needed), or nullopt
  // when lseek must answer.
  std::optional<Answer> lookup(int fd, uint64_t offset);
  // Whether the current batch still needs its answers cross-checked against lseek
  // (one check per batch), and the results of that check.
  bool unchecked() const { return !checked_; }
  void checked() { checked_ = true; }
  void disable() { enabled_ = false; }
  bool enabled() const { return enabled_; }

 private:
  struct Extent {
    uint64_t start, end;
    bool plain;  // data beyond doubt
  };
  bool refill(int fd, uint64_t offset);
  std::optional<Answer> answer(uint64_t offset) const;

  bool enabled_ = true;
  bool checked_ = false;
  std::vector<Extent> extents_;
  uint64_t from_ = 0, to_ = 0;  // [from_, to_) is described by extents_ (gaps are holes)
  uint64_t file_size_ = 0;      // at the last refill
  uint64_t refills_ = 0, hits_ = 0;
};

}  // namespace qcow
