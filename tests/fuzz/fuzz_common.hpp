// Shared by the libFuzzer targets: open fuzzer bytes as an in-memory qcow2 image,
// and the oracles every target applies.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "driver.hpp"
#include "qcow/file.hpp"

namespace qcow_fuzz {

// A File that forwards to one the caller keeps, so the same bytes can be reopened
// after the driver that wrote them is closed.
class BorrowedFile : public qcow::File {
 public:
  explicit BorrowedFile(qcow::File* f) : f_(f) {}
  qcow::Result<size_t> read_at(uint64_t o, std::span<uint8_t> b) override { return f_->read_at(o, b); }
  qcow::Status write_at(uint64_t o, std::span<const uint8_t> b) override { return f_->write_at(o, b); }
  qcow::Status flush() override { return f_->flush(); }
  qcow::Result<uint64_t> size() override { return f_->size(); }
  qcow::Status truncate(uint64_t s) override { return f_->truncate(s); }
  qcow::Status allocate(uint64_t o, uint64_t l) override { return f_->allocate(o, l); }
  qcow::Status punch_hole(uint64_t o, uint64_t l) override { return f_->punch_hole(o, l); }
  qcow::Status zero_range(uint64_t o, uint64_t l) override { return f_->zero_range(o, l); }
  qcow::Result<uint64_t> allocated_bytes() override { return f_->allocated_bytes(); }
  qcow::Result<bool> probe_data(uint64_t o, uint64_t* e) override { return f_->probe_data(o, e); }
  const std::string& path() const override { return f_->path(); }

 private:
  qcow::File* f_;
};

inline qcow::Result<std::unique_ptr<qcow::Driver>> open_file(qcow::File* file, bool writable) {
  qcow::OpenOptions o;
  o.format = qcow::Format::kQcow2;
  o.writable = writable;
  o.open_backing = false;  // the fuzzer must not reach the file system
  o.open_data_file = false;
  o.l2_cache_size = 1 << 20;
  return qcow::open_qcow2(std::make_unique<BorrowedFile>(file), o, 0);
}

inline std::unique_ptr<qcow::File> memory_file(const uint8_t* data, size_t size) {
  return qcow::make_memory_file("fuzz.qcow2", std::string(reinterpret_cast<const char*>(data), size));
}

// A per-process scratch path in /dev/shm (memory-backed) for targets that work on paths.
// The pid is printed at a fixed width, in libc (not instrumented): a pid with more or fewer
// digits must not change the coverage, or a seeded CI run (scripts/fuzz.sh) would not
// replay the same way on another machine.
inline std::string scratch_path(const char* target) {
  char name[96];
  std::snprintf(name, sizeof name, "/dev/shm/qimg-%s-%010ld.qcow2", target, long(getpid()));
  return name;
}

// Fuzzer images may declare huge virtual sizes: only touch a bounded window.
constexpr uint64_t kWindow = 8ull << 20;

// An oracle failed: report and stop the fuzzer (libFuzzer saves the input).
[[noreturn]] inline void oracle_failed(const std::string& what) {
  std::fprintf(stderr, "ORACLE FAILED: %s\n", what.c_str());
  std::abort();
}

// kInternal means a broken invariant (or an exception the API caught): never acceptable.
template <class T>
qcow::Result<T> no_internal(qcow::Result<T>&& r) {
  if (r.status().code() == qcow::ErrorCode::kInternal) oracle_failed("internal error: " + r.status().message());
  return std::move(r);
}
inline const qcow::Status& no_internal(const qcow::Status& s) {
  if (s.code() == qcow::ErrorCode::kInternal) oracle_failed("internal error: " + s.message());
  return s;
}

}  // namespace qcow_fuzz
