// PosixFile: the host-file implementation of File (pread/pwrite on one fd).
//
// Locking follows QEMU's file-posix driver so qimg and QEMU exclude each
// other: every permission a user holds is a shared OFD lock on byte 100+bit,
// every permission it refuses to share is a shared OFD lock on byte 200+bit.
// A conflict is a lock someone else holds on the mirror byte, found with
// F_OFD_GETLK. Only shared locks are ever taken, so the locks themselves never
// block each other; the check after taking them is what refuses the open.
//
// CacheMode::kNone opens with O_DIRECT. The kernel then needs offset, length
// and buffer aligned, so unaligned requests go through an aligned bounce
// buffer (read-modify-write for writes). Those read-modify-writes are not
// atomic: concurrent unaligned writes sharing a 4 KiB block must be
// serialized by the caller (the engine writes whole clusters anyway).

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <optional>
#include <vector>

#include <fmt/format.h>

#include "io/extent_batch.hpp"
#include "qcow/file.hpp"

namespace qcow {
namespace {

constexpr uint64_t kDirectAlign = 4096;         // safe for every logical block size we meet
constexpr uint64_t kBounceChunk = 1024 * 1024;  // caps the bounce buffer per step

// strerror_r comes in a GNU (returns char*) and an XSI (returns int) flavour.
[[maybe_unused]] const char* pick_strerror(int /*rc*/, const char* buf) { return buf; }
[[maybe_unused]] const char* pick_strerror(const char* msg, const char* /*buf*/) { return msg; }

std::string errno_text(int e) {
  char buf[128] = {};
  return pick_strerror(strerror_r(e, buf, sizeof buf), buf);
}

ErrorCode code_for_errno(int e) {
  switch (e) {
    case ENOENT: return ErrorCode::kNotFound;
    case ENOSPC:
    case EDQUOT:
    case EFBIG: return ErrorCode::kNoSpace;
    default: return ErrorCode::kIo;
  }
}

// "<path>: <what>: <strerror>", with the code derived from errno.
Status errno_status(const std::string& path, std::string_view what, int e) {
  return Status::error(code_for_errno(e), fmt::format("{}: {}: {}", path, what, errno_text(e)), e);
}

bool is_unsupported_errno(int e) { return e == EOPNOTSUPP || e == ENOTSUP || e == ENOSYS || e == EINVAL; }

uint64_t align_down(uint64_t v) { return v & ~(kDirectAlign - 1); }
uint64_t align_up(uint64_t v) { return align_down(v + kDirectAlign - 1); }
bool is_aligned(uint64_t v) { return (v & (kDirectAlign - 1)) == 0; }

struct FreeDeleter {
  void operator()(uint8_t* p) const { std::free(p); }
};
using AlignedBuf = std::unique_ptr<uint8_t, FreeDeleter>;

AlignedBuf alloc_aligned(size_t len) {
  void* p = nullptr;
  if (posix_memalign(&p, kDirectAlign, len) != 0) return nullptr;
  return AlignedBuf(static_cast<uint8_t*>(p));
}

// pread until len bytes, EOF, or an error. With O_DIRECT a short read that
// ends unaligned can only be EOF (another pread there would fail with EINVAL).
ssize_t pread_full(int fd, uint8_t* buf, size_t len, uint64_t off, bool direct) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = ::pread(fd, buf + done, len - done, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
    if (direct && !is_aligned(done)) break;
  }
  return static_cast<ssize_t>(done);
}

// The largest piece one pwrite is given, split at file offsets that are multiples of it.
// Linux (6.x, ext4 and others with large folios) backs a buffered write with page-cache
// folios as large as the write and its alignment allow; a 2 MiB aligned write takes a
// PMD-sized folio, which comes from the high-order free blocks that a VM's free page
// reporting has handed back to the host, and filling it faults host memory in while
// copying. Measured on the 2-core development VM (pread + pwrite of 1 GiB, page cache
// warm, 4 runs each): 2 MiB writes 0.97-1.51 s, 1 MiB 0.23-0.35 s, 256 KiB 0.22-0.31 s,
// 64 KiB 0.34-0.46 s. qimg convert's 2 MiB chunks hit this on every raw or 2M-cluster
// target; 256 KiB pieces cost 4 system calls per MiB and nothing else.
constexpr size_t kMaxWritePiece = 256 << 10;

// pwrite all of buf; 0 on success, else errno.
int pwrite_full(int fd, const uint8_t* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    const size_t piece = std::min<size_t>(len - done, kMaxWritePiece - (off + done) % kMaxWritePiece);
    ssize_t n = ::pwrite(fd, buf + done, piece, static_cast<off_t>(off + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (n == 0) return EIO;  // no progress and no error: do not spin
    done += static_cast<size_t>(n);
  }
  return 0;
}

// QEMU's permission bits and their names in its lock error messages.
constexpr int kPermConsistentRead = 0, kPermWrite = 1, kPermWriteUnchanged = 2, kPermResize = 3;
constexpr int kPermLockBase = 100, kSharedLockBase = 200;
const char* perm_name(int bit) {
  switch (bit) {
    case kPermConsistentRead: return "consistent read";
    case kPermWrite: return "write";
    case kPermWriteUnchanged: return "write unchanged";
    case kPermResize: return "resize";
    default: return "unknown";
  }
}

class PosixFile final : public File {
 public:
  PosixFile(int fd, std::string path, bool writable, CacheMode cache)
      : fd_(fd), path_(std::move(path)), writable_(writable), cache_(cache),
        direct_(cache == CacheMode::kNone) {}
  ~PosixFile() override {
    if (fd_ >= 0) ::close(fd_);  // also drops the OFD locks
  }
  Status close() override {
    if (fd_ < 0) return Status::ok();
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0 && errno != EINTR) return errno_status(path_, "close failed", errno);
    return Status::ok();
  }
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  Result<size_t> read_at(uint64_t offset, std::span<uint8_t> buf) override {
    if (buf.empty()) return size_t{0};
    if (offset > std::numeric_limits<uint64_t>::max() - buf.size() ||
        offset + buf.size() > static_cast<uint64_t>(std::numeric_limits<off_t>::max()))
      return Status::invalid(fmt::format("{}: read at offset {:#x} length {:#x} out of range", path_, offset, buf.size()));
    if (!direct_ || (is_aligned(offset) && is_aligned(buf.size()) &&
                     is_aligned(reinterpret_cast<uintptr_t>(buf.data())))) {
      ssize_t n = pread_full(fd_, buf.data(), buf.size(), offset, direct_);
      if (n < 0) return errno_status(path_, fmt::format("read at offset {:#x} failed", offset), errno);
      return static_cast<size_t>(n);
    }
    return read_bounced(offset, buf);
  }

  Status write_at(uint64_t offset, std::span<const uint8_t> buf) override {
    QCOW_TRY(check_writable("write"));
    if (buf.empty()) return Status::ok();
    if (offset > std::numeric_limits<uint64_t>::max() - buf.size() ||
        offset + buf.size() > static_cast<uint64_t>(std::numeric_limits<off_t>::max()))
      return Status::invalid(fmt::format("{}: write at offset {:#x} length {:#x} out of range", path_, offset, buf.size()));
    if (!direct_ || (is_aligned(offset) && is_aligned(buf.size()) &&
                     is_aligned(reinterpret_cast<uintptr_t>(buf.data())))) {
      if (int e = pwrite_full(fd_, buf.data(), buf.size(), offset))
        return errno_status(path_, fmt::format("write at offset {:#x} failed", offset), e);
    } else {
      QCOW_TRY(write_bounced(offset, buf));
    }
    if (cache_ == CacheMode::kWritethrough) return flush();
    return Status::ok();
  }

  Status flush() override {
    if (!writable_) return Status::ok();  // nothing of ours to make durable
    while (::fdatasync(fd_) != 0) {
      if (errno == EINTR) continue;
      return errno_status(path_, "fdatasync failed", errno);
    }
    return Status::ok();
  }

  Result<uint64_t> size() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return errno_status(path_, "fstat failed", errno);
    if (S_ISBLK(st.st_mode)) {
      off_t end = ::lseek(fd_, 0, SEEK_END);  // block devices report st_size 0
      if (end < 0) return errno_status(path_, "lseek(SEEK_END) failed", errno);
      return static_cast<uint64_t>(end);
    }
    return static_cast<uint64_t>(st.st_size);
  }

  Status truncate(uint64_t size) override {
    QCOW_TRY(check_writable("truncate"));
    if (size > static_cast<uint64_t>(std::numeric_limits<off_t>::max()))
      return Status::invalid(fmt::format("{}: truncate to {:#x}: size out of range", path_, size));
    while (::ftruncate(fd_, static_cast<off_t>(size)) != 0) {
      if (errno == EINTR) continue;
      return errno_status(path_, fmt::format("truncate to {:#x} failed", size), errno);
    }
    return Status::ok();
  }

  Status allocate(uint64_t offset, uint64_t len) override {
    QCOW_ASSIGN_OR_RETURN(bool done, fallocate_range("fallocate", 0, offset, len));
    return done ? Status::ok() : allocate_by_writing(offset, len);
  }

  Status zero_range(uint64_t offset, uint64_t len) override {
    QCOW_ASSIGN_OR_RETURN(bool done, fallocate_range("fallocate(ZERO_RANGE)", FALLOC_FL_ZERO_RANGE, offset, len));
    return done ? Status::ok() : File::zero_range(offset, len);  // e.g. tmpfs, NFS: write zeros
  }

  Status punch_hole(uint64_t offset, uint64_t len) override {
    // Best effort: without hole support the bytes stay as they were, so
    // callers must not rely on a punched range reading as zeros.
    return fallocate_range("punch hole", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, len).status();
  }

  Result<uint64_t> allocated_bytes() override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) return errno_status(path_, "fstat failed", errno);
    return static_cast<uint64_t>(st.st_blocks) * 512;
  }

  // SEEK_HOLE first: inside data (the common case for callers that probe data runs)
  // this answers with one system call; a hole needs a second one (SEEK_DATA).
  Result<bool> probe_data(uint64_t offset, uint64_t* run_end) override {
    off_t hole = ::lseek(fd_, static_cast<off_t>(offset), SEEK_HOLE);
    if (hole < 0) {
      if (errno == ENXIO) {  // at or past EOF: reads as zeros, an endless hole (callers clamp)
        *run_end = std::numeric_limits<uint64_t>::max();
        return false;
      }
      if (is_unsupported_errno(errno)) {
        QCOW_ASSIGN_OR_RETURN(uint64_t fsize, size());
        *run_end = std::max(fsize, offset + 1);
        return true;
      }
      return errno_status(path_, fmt::format("lseek(SEEK_HOLE) at offset {:#x} failed", offset), errno);
    }
    if (static_cast<uint64_t>(hole) > offset) {
      *run_end = static_cast<uint64_t>(hole);
      return true;
    }
    off_t data = ::lseek(fd_, static_cast<off_t>(offset), SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) {  // no data from here to EOF
        QCOW_ASSIGN_OR_RETURN(uint64_t fsize, size());
        *run_end = std::max(fsize, offset + 1);
        return false;
      }
      return errno_status(path_, fmt::format("lseek(SEEK_DATA) at offset {:#x} failed", offset), errno);
    }
    *run_end = static_cast<uint64_t>(data);
    return false;
  }

  // From FIEMAP batches where they are certain (io/extent_batch.hpp), else
  // probe_data; each batch's first answer is checked against probe_data. Only on
  // files opened read-only: nothing of ours changes the extents under the batch.
  Result<bool> probe_data_for_report(uint64_t offset, uint64_t* run_end) override {
    if (writable_ || !extents_.enabled()) return probe_data(offset, run_end);
    std::optional<ExtentBatch::Answer> a = extents_.lookup(fd_, offset);
    if (!a) return probe_data(offset, run_end);
    if (extents_.unchecked()) {
      uint64_t end = 0;
      QCOW_ASSIGN_OR_RETURN(bool data, probe_data(offset, &end));
      if (data != a->data || (a->exact ? a->run_end != end : a->run_end > end)) extents_.disable();
      extents_.checked();
      *run_end = end;
      return data;
    }
    *run_end = a->run_end;
    return a->data;
  }

  const std::string& path() const override { return path_; }

  // Takes QEMU-compatible locks; called once, right after open.
  Status lock(LockMode mode) {
    if (mode == LockMode::kNone) return Status::ok();
    // Permissions held and permissions refused to others, as QEMU's bits.
    std::vector<int> held, unshared = {kPermWrite, kPermResize};
    if (mode == LockMode::kShared)
      held = {kPermConsistentRead};
    else
      held = {kPermConsistentRead, kPermWrite, kPermWriteUnchanged, kPermResize};

    // Take our locks first, then check: if two openers race, each sees the
    // other's locks and both fail, instead of both passing the check (QEMU
    // orders it the same way).
    for (int bit : held) {
      QCOW_ASSIGN_OR_RETURN(bool ok, set_read_lock(kPermLockBase + bit));
      if (!ok) return Status::ok();  // OFD locks unsupported here: run unlocked, as QEMU's locking=auto does
    }
    for (int bit : unshared) {
      QCOW_ASSIGN_OR_RETURN(bool ok, set_read_lock(kSharedLockBase + bit));
      if (!ok) return Status::ok();
    }
    // Someone refusing to share a permission we hold?
    for (int bit : held) {
      QCOW_ASSIGN_OR_RETURN(bool busy, is_locked_by_other(kSharedLockBase + bit));
      if (busy)
        return Status::error(ErrorCode::kLocked,
                             fmt::format("{}: failed to get \"{}\" lock: is another process using the image?",
                                         path_, perm_name(bit)));
    }
    // Someone holding a permission we refuse to share?
    for (int bit : unshared) {
      QCOW_ASSIGN_OR_RETURN(bool busy, is_locked_by_other(kPermLockBase + bit));
      if (busy)
        return Status::error(ErrorCode::kLocked,
                             fmt::format("{}: failed to get shared \"{}\" lock: is another process using the image?",
                                         path_, perm_name(bit)));
    }
    return Status::ok();
  }

  Status truncate_after_lock() { return truncate(0); }

 private:
  Status check_writable(std::string_view what) {
    if (writable_) return Status::ok();
    return Status::error(ErrorCode::kReadOnly, fmt::format("{}: {}: file is open read-only", path_, what));
  }

  // Returns false when the filesystem has no OFD locks.
  Result<bool> set_read_lock(int byte) {
    struct flock fl = {};
    fl.l_type = F_RDLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_pid = 0;
    while (::fcntl(fd_, F_OFD_SETLK, &fl) != 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EACCES)  // someone holds a write lock on the byte
        return Status::error(ErrorCode::kLocked,
                             fmt::format("{}: failed to lock byte {}: is another process using the image?", path_, byte));
      if (errno == EINVAL || errno == ENOLCK || errno == EOPNOTSUPP || errno == ENOSYS) return false;
      return errno_status(path_, fmt::format("lock byte {} failed", byte), errno);
    }
    return true;
  }

  // F_OFD_GETLK with a write-lock probe: true if another open file
  // description holds any lock on the byte (our own never conflict).
  Result<bool> is_locked_by_other(int byte) {
    struct flock fl = {};
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_pid = 0;
    while (::fcntl(fd_, F_OFD_GETLK, &fl) != 0) {
      if (errno == EINTR) continue;
      return errno_status(path_, fmt::format("test lock on byte {} failed", byte), errno);
    }
    return fl.l_type != F_UNLCK;
  }

  Result<size_t> read_bounced(uint64_t offset, std::span<uint8_t> buf) {
    const uint64_t end = offset + buf.size();
    const uint64_t chunk = std::min<uint64_t>(kBounceChunk, align_up(end) - align_down(offset));
    AlignedBuf bounce = alloc_aligned(chunk);
    if (!bounce) return Status::io(fmt::format("{}: read at offset {:#x}: out of memory for bounce buffer", path_, offset), ENOMEM);
    size_t copied = 0;
    uint64_t pos = offset;
    while (pos < end) {
      const uint64_t ws = align_down(pos);
      const uint64_t we = std::min(ws + chunk, align_up(end));
      ssize_t n = pread_full(fd_, bounce.get(), we - ws, ws, true);
      if (n < 0) return errno_status(path_, fmt::format("read at offset {:#x} failed", ws), errno);
      const uint64_t got_end = ws + static_cast<uint64_t>(n);
      const uint64_t want_end = std::min(we, end);
      const uint64_t avail_end = std::min(got_end, want_end);
      if (avail_end > pos) {
        std::memcpy(buf.data() + copied, bounce.get() + (pos - ws), avail_end - pos);
        copied += avail_end - pos;
      }
      if (got_end < want_end) break;  // EOF
      pos = want_end;
    }
    return copied;
  }

  // Read-modify-write through an aligned buffer, one window at a time.
  Status write_bounced(uint64_t offset, std::span<const uint8_t> buf) {
    const uint64_t end = offset + buf.size();
    const uint64_t chunk = std::min<uint64_t>(kBounceChunk, align_up(end) - align_down(offset));
    AlignedBuf bounce = alloc_aligned(chunk);
    if (!bounce) return Status::io(fmt::format("{}: write at offset {:#x}: out of memory for bounce buffer", path_, offset), ENOMEM);
    // The padded tail may extend the file past `end`; remember where EOF must stay.
    uint64_t old_size = 0;
    if (!is_aligned(end)) {
      QCOW_ASSIGN_OR_RETURN(old_size, size());
    }
    uint64_t pos = offset;
    while (pos < end) {
      const uint64_t ws = align_down(pos);
      const uint64_t we = std::min(ws + chunk, align_up(end));
      const uint64_t data_end = std::min(we, end);
      // Fill the partially covered head and tail blocks with what is on disk.
      if (pos > ws) QCOW_TRY(read_block(bounce.get(), ws));
      if (data_end < we) QCOW_TRY(read_block(bounce.get() + (we - kDirectAlign - ws), we - kDirectAlign));
      std::memcpy(bounce.get() + (pos - ws), buf.data() + (pos - offset), data_end - pos);
      if (int e = pwrite_full(fd_, bounce.get(), we - ws, ws))
        return errno_status(path_, fmt::format("write at offset {:#x} failed", ws), e);
      pos = data_end;
    }
    if (!is_aligned(end) && align_up(end) > std::max(old_size, end)) QCOW_TRY(truncate(std::max(old_size, end)));
    return Status::ok();
  }

  // Reads one aligned block, zero-filling past EOF.
  Status read_block(uint8_t* dst, uint64_t off) {
    ssize_t n = pread_full(fd_, dst, kDirectAlign, off, true);
    if (n < 0) return errno_status(path_, fmt::format("read at offset {:#x} failed", off), errno);
    std::memset(dst + n, 0, kDirectAlign - static_cast<size_t>(n));
    return Status::ok();
  }

  // fallocate fallback: write zeros only where nothing is stored (holes and
  // past EOF), so existing data survives as it does with fallocate(0).
  // fallocate(mode) over [offset, offset+len): true when done, false when the file
  // system does not support the mode (the caller falls back), an error otherwise.
  Result<bool> fallocate_range(const char* what, int mode, uint64_t offset, uint64_t len) {
    QCOW_TRY(check_writable(what));
    if (len == 0) return true;
    if (offset > static_cast<uint64_t>(std::numeric_limits<off_t>::max()) - len)
      return Status::invalid(fmt::format("{}: {} at offset {:#x} length {:#x} out of range", path_, what, offset, len));
    for (;;) {
      if (::fallocate(fd_, mode, static_cast<off_t>(offset), static_cast<off_t>(len)) == 0) return true;
      if (errno == EINTR) continue;
      // EINVAL: some file systems reject a mode they do not implement (ZERO_RANGE on tmpfs).
      if (errno == EOPNOTSUPP || errno == ENOSYS || (mode != 0 && errno == EINVAL)) return false;
      return errno_status(path_, fmt::format("{} at offset {:#x} length {:#x} failed", what, offset, len), errno);
    }
  }

  Status allocate_by_writing(uint64_t offset, uint64_t len) {
    const uint64_t end = offset + len;
    std::vector<uint8_t> zeros;
    try {
      zeros.assign(std::min<uint64_t>(len, kBounceChunk), 0);
    } catch (const std::bad_alloc&) {
      return Status::io(fmt::format("{}: allocate at offset {:#x}: out of memory", path_, offset), ENOMEM);
    }
    uint64_t pos = offset;
    while (pos < end) {
      uint64_t run_end = 0;
      QCOW_ASSIGN_OR_RETURN(bool data, probe_data(pos, &run_end));
      run_end = std::min(std::max(run_end, pos + 1), end);
      if (!data) {
        for (uint64_t p = pos; p < run_end;) {
          uint64_t n = std::min<uint64_t>(run_end - p, zeros.size());
          QCOW_TRY(write_at(p, std::span<const uint8_t>(zeros.data(), n)));
          p += n;
        }
      }
      pos = run_end;
    }
    return Status::ok();
  }

  int fd_;
  std::string path_;
  bool writable_;
  CacheMode cache_;
  bool direct_;
  ExtentBatch extents_;
};

}  // namespace

Result<std::unique_ptr<File>> open_posix_file(const std::string& path, FileMode mode, LockMode lock,
                                              CacheMode cache) {
  int flags = O_CLOEXEC;
  switch (mode) {
    case FileMode::kReadOnly: flags |= O_RDONLY; break;
    case FileMode::kReadWrite: flags |= O_RDWR; break;
    // No O_TRUNC: truncating before we hold the lock could destroy an image
    // another process is using; we truncate after locking instead (as QEMU does).
    case FileMode::kCreate: flags |= O_RDWR | O_CREAT; break;
  }
  if (cache == CacheMode::kNone) flags |= O_DIRECT;
  int fd;
  do {
    fd = ::open(path.c_str(), flags, 0644);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    int e = errno;
    if (e == EINVAL && (flags & O_DIRECT))
      return errno_status(path, "open with O_DIRECT (cache mode none) failed", e);
    std::string_view what = mode == FileMode::kCreate ? "create failed"
                            : mode == FileMode::kReadOnly ? "open for reading failed" : "open for writing failed";
    return errno_status(path, what, e);
  }
  std::unique_ptr<PosixFile> file;
  try {
    file = std::make_unique<PosixFile>(fd, path, mode != FileMode::kReadOnly, cache);
  } catch (const std::bad_alloc&) {
    ::close(fd);
    return Status::io(fmt::format("{}: open: out of memory", path), ENOMEM);
  }
  QCOW_TRY(file->lock(lock));
  if (mode == FileMode::kCreate) QCOW_TRY(file->truncate_after_lock());
  // Files opened read-only are sources (convert, compare, backing files) read mostly in
  // order: a larger readahead window keeps a cold source streaming. A hint; errors ignored.
  if (mode == FileMode::kReadOnly && !(flags & O_DIRECT)) (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return std::unique_ptr<File>(std::move(file));
}

}  // namespace qcow
