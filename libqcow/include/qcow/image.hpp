// Image: a qcow2 or raw disk image with its backing chain.
//
// Synchronous and blocking. One Image handle is used by one thread at a time;
// independent handles may be used concurrently (each opens its own files, and
// file locks keep two writers off one image). Every call returns a Status or
// Result; nothing throws (out of memory becomes kLimit, an unexpected
// exception kInternal). Messages name the file and, for corruption, the
// structure and offset involved.
//
// Errors common to all calls: kIo (the host file failed; errno saved),
// kCorrupt (on-disk metadata violates the format), kLimit (a size read from
// disk exceeds a fixed bound, or memory ran out), kInternal (a bug).
//
// Typical use:
//   auto img = qcow::Image::open("disk.qcow2");         // read-only, format probed
//   if (!img) return img.status();
//   std::vector<uint8_t> buf(4096);
//   QCOW_TRY(img->read(0, buf));
//   QCOW_TRY(img->close());
// examples/ has complete programs.
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

enum class Preallocation { kOff, kMetadata, kFalloc, kFull };
enum class Unmap { kNo, kYes };
enum class Compress { kNo, kYes };
// kReserve fallocates the whole host cluster when its first subcluster is
// allocated, keeping host extents contiguous (the bench measures the effect).
enum class AllocPolicy { kDefault, kReserve };

// Which metadata a write is checked against before it reaches the file (QEMU's
// overlap-check option, same names and default): kConstant covers the header,
// the active L1 table, the refcount table, the snapshot table and the bitmap
// directory; kCached adds the active L2 tables, the refcount blocks and the
// snapshots' L1 tables; kAll adds the snapshots' L2 tables (read at open). A
// write that would land on metadata is refused and the image marked corrupt.
enum class OverlapCheck { kNone, kConstant, kCached, kAll };
// "none", "constant", "cached", "all"; parse_overlap_check() is the inverse.
const char* overlap_check_name(OverlapCheck level);
std::optional<OverlapCheck> parse_overlap_check(std::string_view name);

// The inverse of format_name(); nullopt for any other name.
std::optional<Format> parse_format(std::string_view name);

// Decorates every File the image opens (the image and its backing files):
// fault injection, recording, counting.
using FileWrapFn = std::function<std::unique_ptr<File>(std::unique_ptr<File>)>;

struct OpenOptions {
  std::optional<Format> format;    // probed from the magic when empty
  bool writable = false;
  bool force_share = false;        // -U: take no lock
  bool open_backing = true;        // false: ignore the backing file (reads as zeros)
  // false: leave an external data file closed (metadata only, as qemu-img info opens;
  // guest data reads fail, and a writable open fails unless it is check's). Also keeps
  // a hostile image from naming a file to open (the fuzzers).
  bool open_data_file = true;
  CacheMode cache = CacheMode::kWriteback;
  // L2 cache size in bytes (0: enough for 8 GiB of guest data, at least 1 MiB, like QEMU),
  // and its entry (slice) size (0: cluster size). Refcount cache in bytes (0: default).
  uint64_t l2_cache_size = 0;
  uint64_t l2_cache_entry_size = 0;
  uint64_t refcount_cache_size = 0;
  // The caller reads in guest order and visits each L2 table once (convert's sources,
  // map): with no l2_cache_size given, the L2 cache is QEMU's smallest default, 1 MiB,
  // instead of up to 32 MiB that would buy nothing.
  bool sequential = false;
  AllocPolicy alloc = AllocPolicy::kDefault;
  // Metadata overlap checks of a writable qcow2 image (see OverlapCheck).
  OverlapCheck overlap_check = OverlapCheck::kCached;
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
  // Encrypted qcow2 (LUKS, or legacy AES read-only): the passphrase bytes (what
  // qemu-img's secret object holds). Without it, metadata operations (info,
  // block status without host offsets, check) work and guest reads fail; a
  // writable open needs it. A wrong passphrase gives kInvalidArgument.
  std::optional<std::string> key_secret;
};

// encrypt.* creation options (qemu-img's names and defaults).
struct EncryptOptions {
  std::string format;               // "" (none) or "luks"; legacy "aes" cannot be created
  std::string cipher_alg = "aes-256";  // aes-128, aes-192, aes-256
  std::string cipher_mode = "xts";     // xts, cbc
  std::string ivgen_alg = "plain64";   // plain, plain64, essiv
  std::string ivgen_hash_alg;          // essiv hash (default sha256)
  std::string hash_alg = "sha256";     // PBKDF2 and AF hash
  uint64_t iter_time_ms = 2000;        // PBKDF2 time per key slot
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
  std::string backing_format;      // empty: none recorded (qimg create probes and passes it)
  // External data file (created or truncated to the virtual size). Its name is recorded as
  // given and, as QEMU does, opened relative to the current directory, not the image's.
  std::string data_file;
  bool data_file_raw = false;      // keep the data file a valid raw image (implies metadata preallocation)
  EncryptOptions encrypt;          // LUKS needs key_secret
  std::optional<std::string> key_secret;
  FileWrapFn wrap_file;
};

// Checks a creation request as qemu-img does, with its messages and in its order
// ("Cluster size must be a power of two between 512 and 2048k", "Extended L2 entries
// are only supported with ..."): kInvalidArgument for the first problem found.
// Image::create runs it too; front ends call it to report problems before anything
// is printed or created.
Status validate_create_options(const CreateOptions& options);

// One run of block status across the chain (qemu-img map's entry). At
// subcluster granularity on extended-L2 images.
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

// Whether `next` continues `curr` as qemu-img map merges its entries (entry_mergeable):
// the same status and depth, and host offsets (when there are some) in the same file
// and contiguous. block_status() merges by this rule and also keeps compressed and
// uncompressed data apart.
bool map_mergeable(const Extent& curr, const Extent& next);

// How Image::resize changes the virtual size (qemu-img resize's options).
enum class Shrink { kNo, kYes };
struct ResizeOptions {
  // How the grown part is allocated (qcow2: off, metadata, falloc, full; raw: off,
  // falloc, full). Growing only.
  Preallocation preallocation = Preallocation::kOff;
  // Whether the size may go down (kInvalidArgument otherwise): what lies past the
  // new end is discarded.
  Shrink shrink = Shrink::kNo;
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

  // Opens an image and its backing chain (unless options.open_backing is
  // false). Read-only unless options.writable; a writable open takes an
  // exclusive lock, a read-only one a shared lock (none with force_share).
  // Opening a dirty image writable repairs its refcounts first
  // (options.repair_dirty). Errors: kNotFound (no such file, or no such
  // snapshot), kLocked (another process holds a conflicting lock),
  // kUnsupported (unknown incompatible feature, external data file, writing an
  // encrypted image, a backing format other than qcow2/raw), kReadOnly
  // (writable open of an image marked corrupt), kInvalidArgument (bad
  // options, e.g. a writable snapshot), kCorrupt / kLimit (bad header or
  // tables, a backing chain too deep or looping), kIo.
  static Result<Image> open(const std::string& path, const OpenOptions& options = {});
  // Creates the file (truncating an existing one) and closes it. The backing
  // file is recorded as given and not opened here (options.size must be set;
  // qimg create reads the backing file's size itself). Errors:
  // kInvalidArgument (an option out of range or an impossible combination,
  // e.g. a raw image with a backing file, extended L2 with compat 0.10),
  // kIo, kNoSpace.
  static Status create(const std::string& path, const CreateOptions& options);

  // Virtual disk size in bytes.
  uint64_t size() const;
  const std::string& path() const;
  Format format() const;
  bool writable() const;

  // Reads buf.size() guest bytes at offset, through the backing chain; parts
  // past the end of a shorter backing file read as zeros. Errors:
  // kInvalidArgument (the range extends past size()), kUnsupported (encrypted
  // data), kCorrupt, kIo.
  Status read(uint64_t offset, std::span<uint8_t> buf);
  // Writes guest bytes, allocating clusters (subclusters with extended L2) and
  // copying unwritten parts from the backing file as needed. With
  // Compress::kYes the range must cover whole clusters (the last may be
  // partial at the end of the disk). Errors: kReadOnly (opened read-only, or
  // the image was marked corrupt), kInvalidArgument (range past size(),
  // misaligned compressed write), kNoSpace, kCorrupt (the image is then
  // marked corrupt and refuses further writes), kIo.
  Status write(uint64_t offset, std::span<const uint8_t> buf, Compress compress = Compress::kNo);
  // Stores one cluster that compress_cluster() (qcow/compress.hpp) compressed, at a
  // cluster-aligned guest offset: the split form of write(..., Compress::kYes) that
  // lets other threads do the compressing. `compressed` is shorter than a cluster.
  // Errors as write(); kInvalidArgument for an unaligned offset or data that
  // is not shorter than a cluster; kUnsupported on raw images.
  Status write_compressed_cluster(uint64_t offset, std::span<const uint8_t> compressed);
  // Makes [offset, offset+length) read as zeros, using zero flags instead of
  // writing data where the format allows (per subcluster with extended L2);
  // Unmap::kYes also lets it free the host clusters. Errors as write().
  Status write_zeroes(uint64_t offset, uint64_t length, Unmap unmap);
  // Frees the whole clusters inside the range (the end of the disk counts as
  // a cluster boundary); partial clusters are left alone. What discarded
  // ranges read afterwards is unspecified (zeros or backing data), as in
  // QEMU. Errors as write().
  Status discard(uint64_t offset, uint64_t length);
  // Writes all cached metadata in order (refcounts before L2 before L1 before
  // the header) and syncs the host file.
  Status flush();
  // Changes the virtual size (qemu's truncate, as qemu-img resize does it). Needs a
  // writable image. Growing reads as zeros, also where a longer backing file lies
  // under the new part (qcow2 then writes zero flags; compat=0.10 cannot:
  // kUnsupported), and allocates it as options.preallocation says. Shrinking needs
  // Shrink::kYes: qcow2 frees every cluster past the new end (snapshots keep theirs)
  // and cuts the file after its last used cluster; the new size is committed first,
  // by one header write, so a crash leaves the old or the new size and contents.
  // qcow2 sizes are multiples of 512; compat=0.10 images with snapshots cannot be
  // resized (kUnsupported), as in QEMU.
  Status resize(uint64_t new_size, const ResizeOptions& options = {});
  // Flushes everything, backing files included, and reports the errors the
  // destructor could only log. Calling it again returns OK; no other call is
  // allowed afterwards (only destruction).
  Status close();

  // Calls fn for each maximal run of [offset, offset+length) with the same
  // status (as qemu-img map); stops early when fn returns false. Errors:
  // kInvalidArgument (range past size()), kCorrupt, kIo.
  Status block_status(uint64_t offset, uint64_t length, const std::function<bool(const Extent&)>& fn);

  // A description of this image (no backing files); never fails.
  ImageInfo info() const;
  // This image first, then each backing file down the chain (for info --backing-chain).
  std::vector<ImageInfo> chain_info() const;
  CacheStats cache_stats() const;

  // Defined inside libqcow only (a nested type may reach the driver); nothing for users.
  struct Internals;

 private:
  explicit Image(std::unique_ptr<Driver> driver);
  std::unique_ptr<Driver> driver_;
};

// The version of the libqcow this program runs with, "MAJOR.MINOR.PATCH" (from
// CMake's project(VERSION)); compare with QCOW_VERSION_STRING in
// qcow/version.hpp for the headers it was built with.
std::string version();

}  // namespace qcow
