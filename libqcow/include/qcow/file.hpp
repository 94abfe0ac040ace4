// File: the narrow I/O seam under libqcow.
//
// Every byte libqcow reads or writes goes through this interface, so tests can
// inject faults, record and replay writes, and the bench can count calls, by
// wrapping a File in a decorator (see OpenOptions::wrap_file). Reads past the
// end of the file return fewer bytes; callers that want zeros fill them.
//
// Thread-safety: a File is used by one thread at a time unless the concrete
// class says otherwise (PosixFile's read_at/write_at are safe concurrently,
// being plain pread/pwrite).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "qcow/status.hpp"

namespace qcow {

struct IoCounters {
  uint64_t reads = 0, writes = 0, flushes = 0, fallocates = 0;
  uint64_t bytes_read = 0, bytes_written = 0;
};

class File {
 public:
  virtual ~File() = default;
  // Reads up to buf.size() bytes at offset; returns the count (short only at EOF).
  virtual Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) = 0;
  // Writes all of buf at offset, extending the file if needed.
  virtual Status write_at(uint64_t offset, std::span<const uint8_t> buf) = 0;
  // Makes every completed write durable (fdatasync).
  virtual Status flush() = 0;
  virtual Result<uint64_t> size() = 0;
  virtual Status truncate(uint64_t size) = 0;
  // Reserves [offset, offset+len) (fallocate); may fall back to writing zeros.
  virtual Status allocate(uint64_t offset, uint64_t len) = 0;
  // Deallocates [offset, offset+len) so it reads as zeros; best effort.
  virtual Status punch_hole(uint64_t offset, uint64_t len) = 0;
  // Makes [offset, offset+len) read as zeros, allocated (extending the file if
  // needed): fallocate(FALLOC_FL_ZERO_RANGE) where the host supports it, so no
  // zeros travel. This default writes zeros through write_at (which is also
  // what fault-injecting and recording decorators rely on).
  virtual Status zero_range(uint64_t offset, uint64_t len);
  // Bytes the file occupies on the host (st_blocks * 512).
  virtual Result<uint64_t> allocated_bytes() = 0;
  // SEEK_DATA/SEEK_HOLE: sets *data_end to the end of the data or hole run
  // that starts at offset and returns whether it is data. Files without hole
  // support report everything as data.
  virtual Result<bool> probe_data(uint64_t offset, uint64_t* run_end) = 0;
  // probe_data for callers that walk a file forward and only report what they
  // find (map, compare): a host file may answer from a batch of extents read
  // ahead (FIEMAP) where that is certain, and may end a run earlier than
  // probe_data would (callers merge adjacent runs). Never for decisions that
  // could drop data.
  virtual Result<bool> probe_data_for_report(uint64_t offset, uint64_t* run_end) { return probe_data(offset, run_end); }
  virtual const std::string& path() const = 0;
  // Releases the descriptor and its locks now rather than at destruction, so a
  // closed image can be reopened (and locked) by the same process. Later calls
  // fail. The default has nothing to release.
  virtual Status close() { return Status::ok(); }
};

// Forwards every call to an inner File; decorators override what they need.
class FileWrapper : public File {
 public:
  explicit FileWrapper(std::unique_ptr<File> inner) : inner_(std::move(inner)) {}
  Result<size_t> read_at(uint64_t o, std::span<uint8_t> b) override { return inner_->read_at(o, b); }
  Status write_at(uint64_t o, std::span<const uint8_t> b) override { return inner_->write_at(o, b); }
  Status flush() override { return inner_->flush(); }
  Result<uint64_t> size() override { return inner_->size(); }
  Status truncate(uint64_t s) override { return inner_->truncate(s); }
  Status allocate(uint64_t o, uint64_t l) override { return inner_->allocate(o, l); }
  Status punch_hole(uint64_t o, uint64_t l) override { return inner_->punch_hole(o, l); }
  Status zero_range(uint64_t o, uint64_t l) override { return inner_->zero_range(o, l); }
  Result<uint64_t> allocated_bytes() override { return inner_->allocated_bytes(); }
  Result<bool> probe_data(uint64_t o, uint64_t* e) override { return inner_->probe_data(o, e); }
  Result<bool> probe_data_for_report(uint64_t o, uint64_t* e) override { return inner_->probe_data_for_report(o, e); }
  const std::string& path() const override { return inner_->path(); }
  Status close() override { return inner_->close(); }
  File& inner() { return *inner_; }

 protected:
  std::unique_ptr<File> inner_;
};

enum class FileMode { kReadOnly, kReadWrite, kCreate /* create or truncate, read-write */ };
enum class LockMode { kNone, kShared /* reader: others may not write */, kExclusive /* writer */ };
enum class CacheMode { kWriteback, kNone /* O_DIRECT */, kWritethrough /* flush after every write */ };

// Opens a host file. Locks are OFD byte-range locks on the bytes QEMU's
// file-posix driver uses, so qimg and QEMU see each other's locks. Errors:
// kNotFound (no such file), kLocked (a conflicting lock is held), kIo
// (any other open(2)/fcntl(2) failure, errno saved).
Result<std::unique_ptr<File>> open_posix_file(const std::string& path, FileMode mode,
                                              LockMode lock = LockMode::kNone,
                                              CacheMode cache = CacheMode::kWriteback);

// A File held in memory (tests, fuzzing); `name` is what path() returns.
std::unique_ptr<File> make_memory_file(std::string name, std::string initial = {});

// Counts calls and bytes; the bench reads these.
class CountingFile : public FileWrapper {
 public:
  CountingFile(std::unique_ptr<File> inner, std::shared_ptr<IoCounters> counters)
      : FileWrapper(std::move(inner)), counters_(std::move(counters)) {}
  Result<size_t> read_at(uint64_t o, std::span<uint8_t> b) override;
  Status write_at(uint64_t o, std::span<const uint8_t> b) override;
  Status flush() override;
  Status allocate(uint64_t o, uint64_t l) override;
  Status zero_range(uint64_t o, uint64_t l) override;

 private:
  std::shared_ptr<IoCounters> counters_;
};

}  // namespace qcow
