// Fault injection and write recording for crash-consistency tests.
//
// FaultFile fails chosen operations (the Nth write, flush, fallocate, truncate,
// or operation that grows the file) with a chosen errno, optionally after half
// of a write landed (a short write). RecordingFile logs every mutating
// operation, with flushes as markers, so replay() can rebuild what a disk might
// hold after the process died or the power failed at any point of a run,
// including writes torn at sector granularity. Both plug in through
// OpenOptions::wrap_file / CreateOptions::wrap_file. Internal API: tests and
// the bench use it; it is not installed.
//
// Thread-safety: a FaultPlan or WriteLog may be shared by several wrappers,
// but they must all be used from one thread at a time.
#pragma once

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "qcow/file.hpp"

namespace qcow {

// When one kind of operation should fail.
struct FaultRule {
  std::optional<uint64_t> nth;  // fail the op with this index (counting from 0); empty: never
  bool sticky = false;          // also fail every later op of this kind
  int error = EIO;              // EIO -> ErrorCode::kIo, ENOSPC -> ErrorCode::kNoSpace
  bool short_write = false;     // writes: the first half (whole 512-byte sectors) lands first

  bool fires(uint64_t index) const { return nth && (index == *nth || (sticky && index > *nth)); }
};

// Shared between every FaultFile of a run, so "the 3rd write" counts across
// all files wrapped with the same plan.
struct FaultPlan {
  // write: write_at; allocate: fallocate (allocate and zero_range); truncate: set
  // the size; grow: any of these that would extend the file (checked first, as a
  // full disk refuses them with ENOSPC).
  FaultRule write, flush, allocate, truncate, grow;
  // Operations seen so far (including failed ones) and faults injected.
  uint64_t writes = 0, flushes = 0, allocates = 0, truncates = 0, grows = 0;
  uint64_t injected = 0;

  static std::shared_ptr<FaultPlan> fail_write(uint64_t nth, int error = EIO, bool sticky = false) {
    auto p = std::make_shared<FaultPlan>();
    p->write = {nth, sticky, error};
    return p;
  }
  static std::shared_ptr<FaultPlan> fail_flush(uint64_t nth, int error = EIO, bool sticky = false) {
    auto p = std::make_shared<FaultPlan>();
    p->flush = {nth, sticky, error};
    return p;
  }
  static std::shared_ptr<FaultPlan> fail_allocate(uint64_t nth, int error = EIO, bool sticky = false) {
    auto p = std::make_shared<FaultPlan>();
    p->allocate = {nth, sticky, error};
    return p;
  }
  static std::shared_ptr<FaultPlan> fail_grow(uint64_t nth, int error = ENOSPC, bool sticky = true) {
    auto p = std::make_shared<FaultPlan>();
    p->grow = {nth, sticky, error};
    return p;
  }
};

class FaultFile : public FileWrapper {
 public:
  FaultFile(std::unique_ptr<File> inner, std::shared_ptr<FaultPlan> plan)
      : FileWrapper(std::move(inner)), plan_(std::move(plan)) {}
  Status write_at(uint64_t o, std::span<const uint8_t> b) override;
  Status flush() override;
  Status allocate(uint64_t o, uint64_t l) override;
  Status truncate(uint64_t s) override;
  // A fallocate: counted and failed as one.
  Status zero_range(uint64_t o, uint64_t l) override;
  FaultPlan& plan() { return *plan_; }

 private:
  // The grow rule, for an operation that ends at `end`.
  Status check_grow(uint64_t end, std::string_view what);
  std::shared_ptr<FaultPlan> plan_;
};

// One mutating operation as RecordingFile saw it.
struct LoggedOp {
  enum class Kind { kWrite, kFlush, kTruncate, kAllocate, kPunchHole };
  Kind kind = Kind::kWrite;
  uint64_t offset = 0;  // kTruncate: the new size
  uint64_t length = 0;  // kWrite: data.size()
  std::vector<uint8_t> data;
};

// The ops of one file, in order. Use one log per file: replay() applies a
// log to a single target.
struct WriteLog {
  std::vector<LoggedOp> ops;
  size_t size() const { return ops.size(); }
  size_t flush_count() const;
  // Index of the op just after the k-th flush marker (k from 0), or size().
  size_t after_flush(size_t k) const;
};

// Records successful writes, flushes, truncates, allocates and punched holes
// (a failed op is recorded only if it may have changed the file: writes).
class RecordingFile : public FileWrapper {
 public:
  RecordingFile(std::unique_ptr<File> inner, std::shared_ptr<WriteLog> log)
      : FileWrapper(std::move(inner)), log_(std::move(log)) {}
  Status write_at(uint64_t o, std::span<const uint8_t> b) override;
  Status flush() override;
  Status truncate(uint64_t s) override;
  Status allocate(uint64_t o, uint64_t l) override;
  Status punch_hole(uint64_t o, uint64_t l) override;
  // Recorded as writes of zeros, so replays reproduce it on any target.
  Status zero_range(uint64_t o, uint64_t l) override { return File::zero_range(o, l); }
  WriteLog& log() { return *log_; }

 private:
  std::shared_ptr<WriteLog> log_;
};

// How much of a logged prefix reaches the disk.
enum class CutKind {
  kProcessKill,      // every op in the prefix (the page cache survives)
  kPowerCut,         // only ops up to and including the last flush in the prefix
  kPowerCutReorder,  // as kPowerCut, plus a random subset (in log order) of the unflushed tail
  kPowerCutTorn,     // as kPowerCutReorder, but each unflushed write is skipped, applied, or
                     // torn: each of its 512-byte sectors independently old or new
};
struct PowerCut {
  CutKind kind = CutKind::kProcessKill;
  uint64_t seed = 0;  // kPowerCutReorder only
};
inline constexpr PowerCut kProcessKill{CutKind::kProcessKill, 0};
inline constexpr PowerCut kPowerCut{CutKind::kPowerCut, 0};
constexpr PowerCut kPowerCutReorder(uint64_t seed) { return {CutKind::kPowerCutReorder, seed}; }
constexpr PowerCut kPowerCutTorn(uint64_t seed) { return {CutKind::kPowerCutTorn, seed}; }

// Applies the first prefix_ops ops of log (clamped to its size) onto target,
// which should hold the file's contents from before the recording started.
// Flush markers are not replayed as flushes. Deterministic for a given seed.
Status replay(const WriteLog& log, size_t prefix_ops, File& target, PowerCut mode);

}  // namespace qcow
