// Read-only mappings of source files for qimg convert (zero-copy reads).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "qcow/status.hpp"

namespace qimg {

// Read-only shared mappings of the host files behind the sources, so data runs
// are copied once (mapping -> target) instead of twice (file -> buffer ->
// target): on a warm page cache a convert is bound by those kernel copies.
//
// A mapping stays valid while its file keeps the size it had when mapped. If
// another process truncates the file meanwhile, touching the lost pages raises
// SIGBUS; the handler installed here maps a zero page over the faulting page
// (so the access completes) and records the fact, and SourceSet::check_files()
// turns it into an error before the copy is reported as done.
class FileMaps {
 public:
  FileMaps() = default;
  FileMaps(const FileMaps&) = delete;
  FileMaps& operator=(const FileMaps&) = delete;
  ~FileMaps();
  // Host bytes [offset, offset+length) of `path`, or nullptr when the file cannot be
  // mapped (not a regular file or block device, mmap refused) or the range lies
  // beyond the size it had when mapped.
  const uint8_t* at(const std::string& path, uint64_t offset, uint64_t length);
  // Drops the page-table entries of a range (the page cache keeps the data), so the
  // process's resident set stays bounded by the chunks in flight.
  static void release(const uint8_t* p, uint64_t length);
  // Maps the page tables of a range in one call (MADV_POPULATE_READ), instead of one
  // page fault per 64 KiB of fault-around; a hint, errors are ignored.
  static void populate(const uint8_t* p, uint64_t length);
  // An error naming a file that shrank while mapped (SIGBUS seen, or a smaller size now).
  qcow::Status check() const;

 private:
  struct Map {
    std::string path;
    const uint8_t* base = nullptr;  // nullptr: this path cannot be mapped
    uint64_t size = 0;
    int fd = -1;
  };
  std::vector<Map> maps_;
};

}  // namespace qimg
