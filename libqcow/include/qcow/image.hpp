// Image: a qcow2 or raw disk image with its backing chain.
//
// Synchronous and blocking. One Image handle is used by one thread at a time;
// independent handles may be used concurrently (each opens its own files).
// Every call returns a Status or Result; nothing throws.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "qcow/file.hpp"
#include "qcow/info.hpp"
#include "qcow/status.hpp"

namespace qcow {

enum class Format { kQcow2, kRaw };
enum class Preallocation { kOff, kMetadata, kFalloc, kFull };
enum class CompressionType { kZlib = 0, kZstd = 1 };
enum class Unmap { kNo, kYes };
enum class Compress { kNo, kYes };
// kReserve fallocates the whole host cluster when its first subcluster is
// allocated, keeping host extents contiguous (the bench measures the effect).
enum class AllocPolicy { kDefault, kReserve };

const char* format_name(Format f);
std::optional<Format> parse_format(std::string_view name);

// Decorates every File the image opens (the image and its backing files):
// fault injection, recording, counting.
using FileWrapFn = std::function<std::unique_ptr<File>(std::unique_ptr<File>)>;

struct OpenOptions {
  std::optional<Format> format;    // probed from the magic when empty
  bool writable = false;
  bool force_share = false;        // -U: take no lock
  bool open_backing = true;        // false: ignore the backing file (reads as zeros)
  CacheMode cache = CacheMode::kWriteback;
  // L2 cache size in bytes (0: enough for 8 GiB of guest data, at least 1 MiB, like QEMU),
  // and its entry (slice) size (0: cluster size). Refcount cache in bytes (0: default).
  uint64_t l2_cache_size = 0;
  uint64_t l2_cache_entry_size = 0;
  uint64_t refcount_cache_size = 0;
  AllocPolicy alloc = AllocPolicy::kDefault;
  FileWrapFn wrap_file;
  // Repair refcounts when opening a dirty image for writing (QEMU does; tests may turn it off).
  bool repair_dirty = true;
  // qcow2 only, read-only only: open this internal snapshot (matched by id first,
  // then by name) instead of the active image; its disk_size, when recorded, is
  // the virtual size. Empty: the active image.
  std::string snapshot;
  // Opened by check (qimg check, check_image): tolerate what check reports and
  // repairs (unaligned L2 offsets in the L1 table), allow opening an image marked
  // corrupt for writing, and keep autoclear bits (check writes no guest data).
  bool repair = false;
};

struct CreateOptions {
  Format format = Format::kQcow2;
  uint64_t size = 0;
  int version = 3;                 // compat 0.10 -> 2, 1.1 -> 3
  uint32_t cluster_size = 65536;
  bool extended_l2 = false;
  int refcount_bits = 16;
  bool lazy_refcounts = false;
  Preallocation preallocation = Preallocation::kOff;
  CompressionType compression_type = CompressionType::kZlib;
  std::string backing_file;
  std::string backing_format;      // empty: probed and recorded
  FileWrapFn wrap_file;
};

// One run of block status across the chain (qemu-img map's entry).
struct Extent {
  uint64_t offset = 0;             // guest offset
  uint64_t length = 0;
  bool present = false;            // allocated (data or zero) in some layer of the chain
  bool zero = false;               // reads as zeros
  bool data = false;               // read from a host file (or compressed data)
  bool compressed = false;
  std::optional<uint64_t> host_offset;  // where the data lives in `file` (none for compressed)
  int depth = 0;                   // layer that answered: 0 = this image
  std::string file;                // the file at that depth
};

struct CacheStats {
  uint64_t l2_hits = 0, l2_misses = 0;
};

class Driver;  // internal

class Image {
 public:
  Image(Image&&) noexcept;
  Image& operator=(Image&&) noexcept;
  ~Image();  // best-effort flush; call close() to see errors

  static Result<Image> open(const std::string& path, const OpenOptions& options = {});
  // Creates the file (truncating an existing one) and closes it.
  static Status create(const std::string& path, const CreateOptions& options);

  uint64_t size() const;
  const std::string& path() const;
  Format format() const;
  bool writable() const;

  // Reads guest bytes; ranges past the end of a shorter backing file read zeros.
  Status read(uint64_t offset, std::span<uint8_t> buf);
  // Writes guest bytes. With Compress::kYes the range must cover whole clusters
  // (the last may be partial at the end of the disk).
  Status write(uint64_t offset, std::span<const uint8_t> buf, Compress compress = Compress::kNo);
  // Stores one cluster that compress_cluster() (qcow/compress.hpp) compressed, at a
  // cluster-aligned guest offset: the split form of write(..., Compress::kYes) that
  // lets other threads do the compressing. `compressed` is shorter than a cluster.
  Status write_compressed_cluster(uint64_t offset, std::span<const uint8_t> compressed);
  Status write_zeroes(uint64_t offset, uint64_t length, Unmap unmap);
  Status discard(uint64_t offset, uint64_t length);
  Status flush();
  Status resize(uint64_t new_size);   // grow only for qcow2
  Status close();

  // Calls fn for each maximal run of [offset, offset+length); stops early when fn returns false.
  Status block_status(uint64_t offset, uint64_t length, const std::function<bool(const Extent&)>& fn);

  ImageInfo info() const;
  // This image first, then each backing file down the chain (for info --backing-chain).
  std::vector<ImageInfo> chain_info() const;
  CacheStats cache_stats() const;
  Driver& driver() { return *driver_; }

 private:
  explicit Image(std::unique_ptr<Driver> driver);
  std::unique_ptr<Driver> driver_;
};

std::string version();

}  // namespace qcow
