// Image: the public handle; format probing, chain-wide block status, creation dispatch.
#include "qcow/image.hpp"

#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <new>

#include "check/rebuild.hpp"
#include "codec/bytes.hpp"
#include "driver.hpp"
#include "format/constants.hpp"
#include "io/zeros.hpp"
#include "qcow/version.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

const char* format_name(Format f) { return f == Format::kQcow2 ? "qcow2" : "raw"; }
const char* compression_type_name(CompressionType c) { return c == CompressionType::kZstd ? "zstd" : "zlib"; }
const char* encryption_format_name(EncryptionFormat e) {
  return e == EncryptionFormat::kAes ? "aes" : e == EncryptionFormat::kLuks ? "luks" : "";
}

std::optional<Format> parse_format(std::string_view name) {
  if (name == "qcow2") return Format::kQcow2;
  if (name == "raw") return Format::kRaw;
  return std::nullopt;
}

const char* overlap_check_name(OverlapCheck level) {
  switch (level) {
    case OverlapCheck::kNone: return "none";
    case OverlapCheck::kConstant: return "constant";
    case OverlapCheck::kCached: return "cached";
    case OverlapCheck::kAll: return "all";
  }
  return "cached";
}

std::optional<OverlapCheck> parse_overlap_check(std::string_view name) {
  for (OverlapCheck l : {OverlapCheck::kNone, OverlapCheck::kConstant, OverlapCheck::kCached, OverlapCheck::kAll})
    if (name == overlap_check_name(l)) return l;
  return std::nullopt;
}

std::string version() { return QCOW_VERSION_STRING; }

namespace {
thread_local std::vector<std::string>* g_chain = nullptr;  // canonical paths of the chain being opened
}

Result<std::unique_ptr<Driver>> open_driver(const std::string& path, const OpenOptions& options, int depth) {
  LockMode lock = options.force_share ? LockMode::kNone : options.writable ? LockMode::kExclusive : LockMode::kShared;
  auto f = open_posix_file(path, options.writable ? FileMode::kReadWrite : FileMode::kReadOnly, lock, options.cache);
  if (!f) return f.status();
  std::unique_ptr<File> file = std::move(f).value();
  if (options.wrap_file) file = options.wrap_file(std::move(file));
  Format fmt = Format::kRaw;
  if (options.format) {
    fmt = *options.format;
  } else {
    uint8_t magic[4] = {};
    QCOW_ASSIGN_OR_RETURN(size_t got, file->read_at(0, magic));
    if (got == 4 && load_be32(magic) == kQcowMagic) fmt = Format::kQcow2;
  }
  if (fmt == Format::kRaw) {
    if (!options.snapshot.empty()) return Status::unsupported(path + ": raw images have no snapshots");
    return open_raw(std::move(file), options.writable);
  }
  auto d = std::make_unique<Qcow2Driver>(std::move(file), options);
  std::vector<std::string> local;
  bool top = g_chain == nullptr;
  if (top) g_chain = &local;
  std::error_code ec;
  if (top) local.push_back(std::filesystem::weakly_canonical(path, ec).string());
  Status s = d->open(depth, *g_chain);
  if (top) g_chain = nullptr;
  // A dirty image (lazy refcounts, not closed cleanly) gets its refcounts rebuilt
  // before anything is written, as QEMU does on a writable open.
  if (s.is_ok() && options.writable && options.repair_dirty && !options.repair &&
      (d->header().incompatible_features & kIncompatDirty)) {
    s = rebuild_refcounts(*d);
    if (s.is_ok()) s = d->update_incompatible(0, kIncompatDirty);
  }
  if (!s.is_ok()) {
    // (A message that already names the image, as QEMU's "Could not open 'IMAGE': ...", stays.)
    if (s.message().rfind(path, 0) != 0 && s.message().rfind("Could not open '" + path + "'", 0) != 0) s.prepend(path + ": ");
    return s;
  }
  return std::unique_ptr<Driver>(std::move(d));
}

Result<std::unique_ptr<Driver>> open_qcow2(std::unique_ptr<File> file, const OpenOptions& options, int depth) {
  auto d = std::make_unique<Qcow2Driver>(std::move(file), options);
  std::vector<std::string> chain;
  QCOW_TRY(d->open(depth, chain));
  return std::unique_ptr<Driver>(std::move(d));
}

Image::Image(std::unique_ptr<Driver> d) : driver_(std::move(d)) {}
Image::Image(Image&&) noexcept = default;
Image& Image::operator=(Image&&) noexcept = default;
Image::~Image() = default;

Result<Image> Image::open(const std::string& path, const OpenOptions& options) {
  try {
    QCOW_ASSIGN_OR_RETURN(auto d, open_driver(path, options, 0));
    return Image(std::move(d));
  } catch (const std::bad_alloc&) {
    return Status::limit(path + ": out of memory while opening the image");
  } catch (const std::exception& e) {
    return Status::internal(path + ": " + e.what());
  }
}

Status Image::create(const std::string& path, const CreateOptions& o) {
  try {
    QCOW_TRY(validate_create_options(o));
    if (o.format == Format::kRaw) {
      QCOW_ASSIGN_OR_RETURN(auto f, open_posix_file(path, FileMode::kCreate, LockMode::kExclusive));
      QCOW_TRY(f->truncate(o.size));
      if (o.preallocation == Preallocation::kFalloc) QCOW_TRY(f->allocate(0, o.size));
      if (o.preallocation == Preallocation::kFull)
        QCOW_TRY(write_zeros(0, o.size, [&](uint64_t at, std::span<const uint8_t> z) { return f->write_at(at, z); }));
      return f->flush();
    }
    Status s = create_qcow2(path, o);
    if (!s.is_ok() && s.message().rfind(path, 0) != 0) s.prepend(path + ": ");
    return s;
  } catch (const std::bad_alloc&) {
    return Status::limit(path + ": out of memory");
  }
}

#define QCOW_GUARD(expr)                                              \
  try {                                                               \
    return expr;                                                      \
  } catch (const std::bad_alloc&) {                                   \
    return Status::limit(driver_->path() + ": out of memory");        \
  } catch (const std::exception& e) {                                 \
    return Status::internal(driver_->path() + ": " + e.what());       \
  }

uint64_t Image::size() const { return driver_->size(); }
const std::string& Image::path() const { return driver_->path(); }
Format Image::format() const { return driver_->format(); }
bool Image::writable() const { return driver_->writable(); }
Status Image::read(uint64_t o, std::span<uint8_t> b) { QCOW_GUARD(driver_->read(o, b)); }
Status Image::write(uint64_t o, std::span<const uint8_t> b, Compress c) { QCOW_GUARD(driver_->write(o, b, c)); }
Status Image::write_compressed_cluster(uint64_t o, std::span<const uint8_t> c) { QCOW_GUARD(driver_->store_compressed(o, c)); }
Status Image::write_zeroes(uint64_t o, uint64_t l, Unmap u) { QCOW_GUARD(driver_->write_zeroes(o, l, u)); }
Status Image::discard(uint64_t o, uint64_t l) { QCOW_GUARD(driver_->discard(o, l)); }
Status Image::flush() { QCOW_GUARD(driver_->flush()); }
Status Image::resize(uint64_t n, const ResizeOptions& o) { QCOW_GUARD(driver_->resize(n, o)); }
Status Image::close() { QCOW_GUARD(driver_->close()); }
ImageInfo Image::info() const { return driver_->info(); }
CacheStats Image::cache_stats() const { return driver_->cache_stats(); }

std::vector<ImageInfo> Image::chain_info() const {
  std::vector<ImageInfo> out;
  for (Driver* d = driver_.get(); d; d = d->backing()) out.push_back(d->info());
  return out;
}

namespace {

// One extent at `offset` for the chain starting at `d` (depth counts down the chain).
Result<Extent> chain_status(Driver& d, uint64_t offset, uint64_t max_len, int depth) {
  QCOW_ASSIGN_OR_RETURN(LayerRun r, d.map_status(offset, max_len));
  Extent e;
  e.offset = offset;
  e.length = r.length;
  e.depth = depth;
  e.file = d.path();
  if (r.has_host) {
    e.host_offset = r.host_offset;
    e.file = d.data_path();  // host offsets lie in the external data file, if there is one
  }
  switch (r.kind) {
    case LayerRun::kData: e.present = true; e.data = true; e.zero = r.file_zero; return e;
    case LayerRun::kCompressed: e.present = true; e.data = true; e.compressed = true; return e;
    case LayerRun::kZero: e.present = true; e.zero = true; return e;
    case LayerRun::kUnallocated: break;
  }
  Driver* b = d.backing();
  if (!b || offset >= b->size()) {  // nothing below: reads as zeros
    e.zero = true;
    return e;
  }
  return chain_status(*b, offset, std::min(r.length, b->size() - offset), depth + 1);
}

bool mergeable(const Extent& a, const Extent& b) {
  return a.compressed == b.compressed && a.file == b.file && map_mergeable(a, b);
}

}  // namespace

bool map_mergeable(const Extent& curr, const Extent& next) {
  if (curr.length == 0) return false;
  if (curr.zero != next.zero || curr.data != next.data || curr.depth != next.depth || curr.present != next.present)
    return false;
  if (curr.host_offset.has_value() != next.host_offset.has_value()) return false;
  return !curr.host_offset || (curr.file == next.file && *curr.host_offset + curr.length == *next.host_offset);
}

Status Image::block_status(uint64_t offset, uint64_t length, const std::function<bool(const Extent&)>& fn) {
  try {
    if (offset > size() || length > size() - offset)
      return Status::invalid(fmt::format("{}: range beyond the end of the image", path()));
    std::optional<Extent> pending;
    uint64_t pos = offset;
    while (pos < offset + length) {
      QCOW_ASSIGN_OR_RETURN(Extent e, chain_status(*driver_, pos, offset + length - pos, 0));
      pos += e.length;
      if (pending && mergeable(*pending, e)) {
        pending->length += e.length;
        continue;
      }
      if (pending && !fn(*pending)) return Status::ok();
      pending = std::move(e);
    }
    if (pending) fn(*pending);
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::limit(path() + ": out of memory");
  }
}

}  // namespace qcow
