// Driver: what one layer of an image chain (qcow2 or raw) implements.
// Image (the public handle) owns the top driver; each driver owns its backing driver.
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "qcow/image.hpp"
#include "qcow/info.hpp"
#include "qcow/status.hpp"

namespace qcow {

// Allocation state of a run within one layer.
struct LayerRun {
  enum Kind { kUnallocated, kZero, kData, kCompressed } kind = kUnallocated;
  uint64_t length = 0;
  uint64_t host_offset = 0;   // kData, and kZero with preallocated space (then has_host is true)
  bool has_host = false;
  bool file_zero = false;     // kData whose host bytes are a hole in the file (want_zero only)
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual Format format() const = 0;
  virtual uint64_t size() const = 0;
  virtual const std::string& path() const = 0;
  // The file guest data is read from (an external data file, or path()).
  virtual const std::string& data_path() const { return path(); }
  virtual bool writable() const = 0;
  virtual Status read(uint64_t offset, std::span<uint8_t> buf) = 0;
  virtual Status write(uint64_t offset, std::span<const uint8_t> buf, Compress compress) = 0;
  virtual Status write_zeroes(uint64_t offset, uint64_t length, Unmap unmap) = 0;
  // Stores an already compressed cluster (Image::write_compressed_cluster).
  virtual Status store_compressed(uint64_t offset, std::span<const uint8_t> compressed) {
    return Status::unsupported(path() + ": this format cannot store compressed clusters");
  }
  virtual Status discard(uint64_t offset, uint64_t length) = 0;
  virtual Status flush() = 0;
  virtual Status resize(uint64_t new_size, const ResizeOptions& options) = 0;
  virtual Status close() = 0;
  // The run of this layer alone that starts at offset (length <= max_length, > 0).
  virtual Result<LayerRun> layer_status(uint64_t offset, uint64_t max_length) = 0;
  // Like layer_status, but refined the way QEMU's block status is with want_zero
  // (qemu-img map): data in a host hole may be reported as reading zeros.
  virtual Result<LayerRun> map_status(uint64_t offset, uint64_t max_length) { return layer_status(offset, max_length); }
  virtual ImageInfo info() const = 0;
  virtual Driver* backing() = 0;
  virtual CacheStats cache_stats() const { return {}; }
};

// How libqcow's own modules (compare, the fuzzers) reach an Image's driver.
struct Image::Internals {
  static Driver& driver(Image& image) { return *image.driver_; }
};

// Opens one file as a driver, with its backing chain (depth counts layers above).
Result<std::unique_ptr<Driver>> open_driver(const std::string& path, const OpenOptions& options, int depth);
Result<std::unique_ptr<Driver>> open_raw(std::unique_ptr<File> file, bool writable);
Result<std::unique_ptr<Driver>> open_qcow2(std::unique_ptr<File> file, const OpenOptions& options, int depth);
Status create_qcow2(const std::string& path, const CreateOptions& options);

// Reads buf.size() bytes at offset through read(offset, span), zero-filling what lies at
// or past `size` (a backing file shorter than its overlay, copy-on-write past the end).
template <class Read>
Status read_zero_filled(uint64_t size, uint64_t offset, std::span<uint8_t> buf, Read&& read) {
  const uint64_t n = offset >= size ? 0 : std::min<uint64_t>(buf.size(), size - offset);
  if (n) QCOW_TRY(read(offset, buf.first(n)));
  std::fill(buf.begin() + long(n), buf.end(), uint8_t(0));
  return Status::ok();
}

// Reads [offset, offset+len) of a driver, zero-filling what lies past its end.
inline Status read_clamped(Driver& d, uint64_t offset, std::span<uint8_t> buf) {
  return read_zero_filled(d.size(), offset, buf, [&](uint64_t o, std::span<uint8_t> b) { return d.read(o, b); });
}

}  // namespace qcow
