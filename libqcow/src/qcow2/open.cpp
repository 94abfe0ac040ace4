// Opening a qcow2 layer: header validation, L1 load, snapshot table, caches,
// backing chain, metadata registration for overlap checks; and info().
#include <fmt/format.h>

#include <cstring>
#include <filesystem>
#include <set>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

namespace {

// Validates a contiguous table (L1, refcount table, snapshot L1s): aligned, bounded, inside the file.
Status validate_table(const char* name, uint64_t offset, uint64_t entries, uint64_t entry_len, uint64_t max_bytes,
                      uint64_t cluster_size, uint64_t file_size) {
  if (entries > max_bytes / entry_len)
    return Status::limit(fmt::format("{} too large ({} entries, limit {} bytes)", name, entries, max_bytes));
  uint64_t bytes = entries * entry_len;
  if (bytes && (offset & (cluster_size - 1)))
    return Status::corrupt(fmt::format("{} offset {:#x} is not aligned to the cluster size", name, offset));
  if (bytes && (offset >= kMaxHostOffset || offset > file_size || bytes > file_size - offset))
    return Status::corrupt(fmt::format("{} at offset {:#x} ({} bytes) extends beyond the end of the file ({} bytes)", name,
                                       offset, bytes, file_size));
  if (bytes && offset < cluster_size)
    return Status::corrupt(fmt::format("{} at offset {:#x} overlaps the image header", name, offset));
  return Status::ok();
}

// The first cluster of the file (shorter when the file is): enough for the header,
// its extensions and the backing file name.
Result<std::vector<uint8_t>> read_header_cluster(File& file, uint64_t file_size) {
  std::vector<uint8_t> buf(std::min<uint64_t>(file_size, 4096));
  QCOW_ASSIGN_OR_RETURN(size_t got, file.read_at(0, buf));
  buf.resize(got);
  if (got >= 24) {
    uint32_t cb = load_be32(buf.data() + 20);
    if (cb >= kMinClusterBits && cb <= kMaxClusterBits && (uint64_t(1) << cb) > buf.size()) {
      buf.resize(std::min<uint64_t>(file_size, uint64_t(1) << cb));
      QCOW_ASSIGN_OR_RETURN(got, file.read_at(0, buf));
      buf.resize(got);
    }
  }
  return buf;
}

}  // namespace

Qcow2Driver::Qcow2Driver(std::unique_ptr<File> file, const OpenOptions& options)
    : file_(std::move(file)), options_(options), io_(file_.get(), options.overlap_check), header_(&io_) {}

Qcow2Driver::~Qcow2Driver() {
  if (!closed_) close().ignore();
}

Status Qcow2Driver::open(int depth, std::vector<std::string>& chain) {
  QCOW_ASSIGN_OR_RETURN(file_size_, file_->size());
  QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t> buf, read_header_cluster(*file_, file_size_));
  QCOW_ASSIGN_OR_RETURN(Header parsed, parse_header(buf));
  header_.load(std::move(parsed));
  geo_ = Geometry::from(header_.get());
  io_.set_cluster_size(geo_.cluster_size);
  writable_ = options_.writable;
  if (!writable_) io_.disable_checks();
  io_.set_corruption_handler([this](const std::string& what) { return signal_corruption(what); });
  QCOW_TRY(check_features());
  QCOW_TRY(open_data_file());
  QCOW_TRY(load_l1());
  const Header& h = header_.get();
  QCOW_TRY(validate_table("refcount table", h.refcount_table_offset, uint64_t(h.refcount_table_clusters) << geo_.cluster_bits,
                          1, kMaxReftableBytes, geo_.cluster_size, file_size_));
  if (h.refcount_table_clusters == 0) return Status::corrupt("refcount table has no clusters");
  if (h.nb_snapshots > kMaxSnapshots) return Status::limit(fmt::format("too many snapshots ({})", h.nb_snapshots));
  QCOW_ASSIGN_OR_RETURN(snapshots_, load_snapshot_table(*file_, h, file_size_, &snapshot_table_bytes_, options_.repair));
  // As QEMU: an active bitmaps extension that breaks the spec stops the open.
  QCOW_ASSIGN_OR_RETURN(bitmaps_, load_bitmap_list(*file_, h, file_size_));
  if (!options_.snapshot.empty()) QCOW_TRY(load_snapshot_l1(options_.snapshot));
  QCOW_TRY(open_crypto());
  QCOW_TRY(create_caches());
  if (!h.backing_file.empty() && options_.open_backing) QCOW_TRY(open_backing(depth, chain));
  if (writable_) {
    QCOW_TRY(register_metadata());
    QCOW_TRY(prepare_for_writing());
  }
  opened_ = true;
  return Status::ok();
}

// Incompatible features we cannot handle, and images that must not be opened for writing.
Status Qcow2Driver::check_features() const {
  const Header& h = header_.get();
  uint64_t unknown = h.incompatible_features & ~kIncompatKnown;
  if (unknown) return Status::unsupported("unsupported qcow2 feature(s): " + describe_unknown_incompatible(h, unknown));
  if (h.version == 2 && h.incompatible_features) return Status::corrupt("version 2 image with incompatible feature bits set");
  if (writable_ && (h.incompatible_features & kIncompatCorrupt) && !options_.repair)
    return Status::error(ErrorCode::kReadOnly, "image is marked corrupt and cannot be opened read/write; run 'qimg check -r all'");
  if (h.size > (uint64_t(1) << 62)) return Status::limit(fmt::format("virtual size {} is too large", h.size));
  return Status::ok();
}

// The external data file: named by the header extension, opened as the image is
// (writable, locked) when this open reads or writes guest data.
Status Qcow2Driver::open_data_file() {
  const Header& h = header_.get();
  if (!(h.incompatible_features & kIncompatDataFile)) {
    if ((h.autoclear_features & kAutoclearDataFileRaw) && options_.open_data_file)  // (info opens anyway, as QEMU's)
      return Status::corrupt("data-file-raw requires a data file");
    return Status::ok();
  }
  if (!options_.open_data_file) {  // metadata only: guest data can be neither read nor written
    if (writable_ && !options_.repair)
      return Status::unsupported("the image keeps its data in an external data file, which this open leaves closed");
    return Status::ok();
  }
  if (!h.data_file || h.data_file->empty()) return Status::invalid("'data-file' is required for this image");
  // QEMU opens the name as it stands: relative to the current directory, not to the image
  // (unlike a backing file name). Scripts rely on either, so we do as QEMU does.
  data_path_ = *h.data_file;
  LockMode lock = options_.force_share ? LockMode::kNone : writable_ ? LockMode::kExclusive : LockMode::kShared;
  auto f = open_posix_file(data_path_, writable_ ? FileMode::kReadWrite : FileMode::kReadOnly, lock, options_.cache);
  if (!f) {  // QEMU's words
    const Status& s = f.status();
    const std::string why = s.saved_errno() ? std::strerror(s.saved_errno()) : s.message();
    return Status::error(s.code(), fmt::format("Could not open '{}': Could not open '{}': {}", file_->path(), data_path_, why),
                         s.saved_errno());
  }
  data_file_ = std::move(f).value();
  if (options_.wrap_file) data_file_ = options_.wrap_file(std::move(data_file_));
  io_.set_data_file(data_file_.get());
  return Status::ok();
}

Status Qcow2Driver::load_l1() {
  const Header& h = header_.get();
  uint64_t needed_l1 = geo_.l1_entries_for(h.size);
  if (needed_l1 > kMaxL1Bytes / 8) return Status::limit(fmt::format("virtual size {} needs an L1 table above the 32 MiB limit", h.size));
  if (h.l1_size < needed_l1)
    return Status::corrupt(fmt::format("L1 table is too small: {} entries for a virtual size that needs {}", h.l1_size, needed_l1));
  QCOW_TRY(validate_table("L1 table", h.l1_table_offset, h.l1_size, 8, kMaxL1Bytes, geo_.cluster_size, file_size_));
  QCOW_ASSIGN_OR_RETURN(l1_, load_table(io_, h.l1_table_offset, h.l1_size, "L1 table"));
  for (size_t i = 0; i < l1_.size(); ++i) {
    uint64_t off = l1_[i] & kL1eOffsetMask;
    if ((off & (geo_.cluster_size - 1)) && !options_.repair)
      return Status::corrupt(fmt::format("L2 table offset {:#x} unaligned (L1 index {:#x})", off, i));
  }
  return Status::ok();
}

// The L2 cache defaults to covering the whole disk, capped at 32 MiB (QEMU's default maximum).
Status Qcow2Driver::create_caches() {
  const uint64_t cs = geo_.cluster_size;
  uint64_t slice = options_.l2_cache_entry_size ? options_.l2_cache_entry_size : cs;
  if (!is_power_of_two(slice) || slice < 512 || slice > cs)
    return Status::invalid(fmt::format("L2 cache entry size must be a power of two between 512 and the cluster size ({})", cs));
  uint64_t cache_bytes = options_.l2_cache_size;
  if (!cache_bytes) {
    uint64_t full = div_round_up(header_->size, cs) * geo_.l2_entry_size;
    cache_bytes = std::clamp<uint64_t>(full, 1ull << 20, options_.sequential ? 1ull << 20 : 32ull << 20);
  }
  l2_cache_ = std::make_unique<TableCache>(&io_, Structure::kActiveL2, slice, std::max<uint64_t>(cache_bytes / slice, 4));
  // Writers get a quarter of the L2 cache for refcount blocks (fewer write-backs and
  // ordering flushes); a read-only image reads refcounts only in order (QEMU's
  // metadata-preallocation test), so QEMU's default of four clusters is enough.
  uint64_t rc_bytes = options_.refcount_cache_size ? options_.refcount_cache_size
                      : writable_                  ? std::max<uint64_t>(cache_bytes / 4, 4 * cs)
                                                   : 4 * cs;
  refcount_cache_slices_ = std::max<uint64_t>(rc_bytes / cs, 4);
  refcounts_ = std::make_unique<Refcounts>(&io_, geo_, refcount_cache_slices_);
  l2_cache_->set_dependency(&refcounts_->cache());
  if (writable_) {
    QCOW_TRY(refcounts_->load(header_->refcount_table_offset, header_->refcount_table_clusters));
    refcounts_->set_reftable_moved(refcounts_moved_fn());
    alloc_end_ = align_up(file_size_, cs);
  }
  return Status::ok();
}

Status Qcow2Driver::open_backing(int depth, std::vector<std::string>& chain) {
  const Header& h = header_.get();
  if (depth + 1 >= kMaxBackingDepth) return Status::limit("backing chain is too deep (more than 64 layers)");
  std::filesystem::path p(h.backing_file);
  if (p.is_relative() && h.backing_file.find(':') == std::string::npos)
    p = std::filesystem::path(file_->path()).parent_path() / p;
  backing_path_ = p.string();
  std::error_code ec;
  std::string canon = std::filesystem::weakly_canonical(backing_path_, ec).string();
  for (const auto& c : chain)
    if (c == canon) return Status::corrupt(fmt::format("backing chain loop: '{}' is its own backing file", backing_path_));
  chain.push_back(canon);
  OpenOptions bo = options_;
  bo.writable = false;
  bo.snapshot.clear();  // a snapshot names a state of this layer only
  bo.format.reset();
  if (h.backing_format) {
    auto f = parse_format(*h.backing_format);
    if (!f) return Status::unsupported(fmt::format("backing file format '{}' is not supported", *h.backing_format));
    bo.format = f;
  }
  auto b = open_driver(backing_path_, bo, depth + 1);
  if (!b) {
    Status s = b.status();
    return s.prepend("could not open backing file: ");
  }
  backing_ = std::move(b).value();
  return Status::ok();
}

// Before the first write: clear the autoclear bits we do not maintain (the spec
// says so; bitmaps we do not update become inconsistent, which clearing bit 0
// declares). A dirty image's refcounts are repaired by open_driver() (image.cpp),
// which sits above both the driver and check.
Status Qcow2Driver::prepare_for_writing() {
  // data_file_raw we keep true: every write goes to the data file at its guest offset.
  const uint64_t kept = raw_data() ? kAutoclearDataFileRaw : 0;
  if ((header_->autoclear_features & ~kept) && !options_.repair) {
    QCOW_TRY(header_.update({HeaderField::kAutoclearFeatures}, [&](Header& x) { x.autoclear_features &= kept; }));
    QCOW_TRY(io_.flush());
  }
  return Status::ok();
}

// Every structure the header points at, for the overlap checks (the refcount table and
// blocks are registered by Refcounts). Only structures the level covers are tracked.
Status Qcow2Driver::register_metadata() {
  const Header& h = header_.get();
  OverlapMap& map = io_.overlaps();
  auto add = [&](Structure s, uint64_t offset, uint64_t length) {
    if (io_.tracks(s)) map.add(s, offset, length);
  };
  add(Structure::kMainHeader, 0, geo_.cluster_size);
  add(Structure::kActiveL1, h.l1_table_offset, uint64_t(h.l1_size) * 8);
  for (uint64_t e : l1_)
    if (e & kL1eOffsetMask) add(Structure::kActiveL2, e & kL1eOffsetMask, geo_.cluster_size);
  if (h.nb_snapshots) add(Structure::kSnapshotTable, h.snapshots_offset, snapshot_table_bytes_);
  if (h.bitmaps && h.bitmaps->bitmap_directory_size)
    add(Structure::kBitmapDirectory, h.bitmaps->bitmap_directory_offset, h.bitmaps->bitmap_directory_size);
  if (h.crypto) add(Structure::kEncryptionHeader, h.crypto->offset, h.crypto->length);
  // (An unusable snapshot L1 table, kept only for check, protects nothing.)
  auto usable = [&](const SnapshotEntry& s) { return snapshot_l1_valid(s, geo_.cluster_size, file_size_); };
  for (const SnapshotEntry& s : snapshots_)
    if (usable(s)) add(Structure::kInactiveL1, s.l1_table_offset, uint64_t(s.l1_size) * 8);
  if (!io_.tracks(Structure::kInactiveL2)) return Status::ok();
  // overlap-check=all: the snapshots' L2 tables, read once here (QEMU reads them on every write).
  std::set<std::pair<uint64_t, uint32_t>> seen;
  for (const SnapshotEntry& s : snapshots_) {
    if (!s.l1_size || !usable(s) || !seen.emplace(s.l1_table_offset, s.l1_size).second) continue;
    QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, load_table(io_, s.l1_table_offset, s.l1_size, "snapshot L1 table"));
    for (uint64_t e : l1)
      if (e & kL1eOffsetMask) map.add(Structure::kInactiveL2, e & kL1eOffsetMask, geo_.cluster_size);
  }
  return Status::ok();
}

void Qcow2Driver::set_l1_entry(uint64_t index, uint64_t entry) {
  const uint64_t old = l1_[index] & kL1eOffsetMask, fresh = entry & kL1eOffsetMask;
  if (old != fresh && io_.tracks(Structure::kActiveL2)) {
    if (old) io_.overlaps().remove(Structure::kActiveL2, old, geo_.cluster_size);
    if (fresh) io_.overlaps().add(Structure::kActiveL2, fresh, geo_.cluster_size);
  }
  l1_[index] = entry;
  l1_dirty_ = true;
}

Status Qcow2Driver::signal_corruption(const std::string& what) {
  if (!writable_ || options_.repair) return Status::corrupt(fmt::format("{}: {}", file_->path(), what));
  if (corruption_signalled_) return Status::corrupt(fmt::format("{}: image is corrupt: {}", file_->path(), what));
  corruption_signalled_ = true;
  std::string message = fmt::format("{}: Marking image as corrupt: {}; further corruption events will be suppressed",
                                    file_->path(), what);
  Status marked = update_incompatible(kIncompatCorrupt, 0);
  if (!marked.is_ok()) message += fmt::format(" (the corrupt bit could not be stored: {})", marked.message());
  return Status::corrupt(message);
}

Status Qcow2Driver::guard(Status s) {
  if (s.code() != ErrorCode::kCorrupt || !writable_ || options_.repair || corruption_signalled_) return s;
  std::string what = s.message();
  const std::string prefix = file_->path() + ": ";
  if (what.rfind(prefix, 0) == 0) what.erase(0, prefix.size());
  return signal_corruption(what);
}

// Replaces the active L1 table by a snapshot's (read-only opens: qimg convert -l).
Status Qcow2Driver::load_snapshot_l1(const std::string& id_or_name) {
  if (writable_) return Status::invalid(fmt::format("{}: a snapshot can only be opened read-only", file_->path()));
  const SnapshotEntry* found = nullptr;
  for (const SnapshotEntry& s : snapshots_)
    if (s.id == id_or_name) { found = &s; break; }
  if (!found)
    for (const SnapshotEntry& s : snapshots_)
      if (s.name == id_or_name) { found = &s; break; }
  if (!found)
    return Status::error(ErrorCode::kNotFound, fmt::format("{}: snapshot '{}' not found", file_->path(), id_or_name));
  // load_snapshot_table checked the table's size, alignment and place in the file.
  QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, load_table(io_, found->l1_table_offset, found->l1_size,
                                                             fmt::format("snapshot '{}' L1 table", found->name)));
  for (size_t i = 0; i < l1.size(); ++i) {
    if ((l1[i] & kL1eOffsetMask) & (geo_.cluster_size - 1))
      return Status::corrupt(fmt::format("{}: snapshot '{}': L2 table offset {:#x} unaligned (L1 index {:#x})", file_->path(),
                                         found->name, l1[i] & kL1eOffsetMask, i));
  }
  l1_ = std::move(l1);
  if (auto disk_size = found->info().disk_size) {
    if (*disk_size > (uint64_t(1) << 62))
      return Status::limit(fmt::format("{}: snapshot '{}' virtual size {} is too large", file_->path(), found->name, *disk_size));
    header_.set_in_memory([&](Header& h) { h.size = *disk_size; });  // a read-only view
  }
  return Status::ok();
}

Refcounts::ReftableMovedFn Qcow2Driver::refcounts_moved_fn() {
  return [this](uint64_t off, uint32_t clusters) -> Status {
    QCOW_TRY(header_.update({HeaderField::kRefcountTable}, [&](Header& h) {
      h.refcount_table_offset = off;
      h.refcount_table_clusters = clusters;
    }));
    return io_.flush();
  };
}

Status Qcow2Driver::install_refcounts(uint64_t table_offset, uint32_t table_clusters, std::optional<uint32_t> new_order) {
  if (refcounts_->cache().has_dirty() || refcounts_->has_deferred())
    return Status::internal("refcount structures replaced while refcount changes are pending");
  QCOW_TRY(io_.flush());
  auto change = [&](Header& h) {
    h.refcount_table_offset = table_offset;
    h.refcount_table_clusters = table_clusters;
    if (new_order) h.refcount_order = *new_order;
  };
  if (new_order) QCOW_TRY(header_.update({HeaderField::kRefcountTable, HeaderField::kRefcountOrder}, change));
  else QCOW_TRY(header_.update({HeaderField::kRefcountTable}, change));
  QCOW_TRY(io_.flush());
  geo_ = Geometry::from(header_.get());
  const uint64_t end = table_offset + (uint64_t(table_clusters) << geo_.cluster_bits);
  file_size_ = std::max(file_size_, end);
  alloc_end_ = std::max(alloc_end_, file_size_);
  auto fresh = std::make_unique<Refcounts>(&io_, geo_, refcount_cache_slices_);
  QCOW_TRY(fresh->load(table_offset, table_clusters));
  fresh->set_reftable_moved(refcounts_moved_fn());
  refcounts_ = std::move(fresh);
  l2_cache_->set_dependency(&refcounts_->cache());
  return Status::ok();
}

Status Qcow2Driver::update_incompatible(uint64_t set, uint64_t clear) {
  uint64_t v = (header_->incompatible_features | set) & ~clear;
  if (v == header_->incompatible_features) return Status::ok();
  if (header_->version < 3) {  // no field to store it in; QEMU keeps the corrupt bit in memory too
    header_.set_in_memory([&](Header& h) { h.incompatible_features = v; });
    return Status::ok();
  }
  QCOW_TRY(io_.barrier());
  QCOW_TRY(header_.update({HeaderField::kIncompatibleFeatures}, [&](Header& h) { h.incompatible_features = v; }));
  return io_.flush();
}

ImageInfo Qcow2Driver::info() const {
  const Header& h = header_.get();
  ImageInfo i;
  i.filename = file_->path();
  i.format = Format::kQcow2;
  i.virtual_size = h.size;
  auto a = file_->allocated_bytes();
  i.actual_size = a ? *a : 0;
  auto s = file_->size();
  i.file_length = s ? *s : 0;
  i.cluster_size = uint32_t(geo_.cluster_size);
  i.subcluster_size = uint32_t(geo_.subcluster_size);
  i.vm_state_offset = div_round_up(h.size, geo_.l2_coverage()) * geo_.l2_coverage();  // QEMU's qcow2_vm_state_offset
  i.version = int(h.version);
  i.refcount_bits = int(geo_.refcount_bits);
  i.extended_l2 = geo_.extended_l2;
  i.lazy_refcounts = h.compatible_features & kCompatLazyRefcounts;
  i.dirty = h.incompatible_features & kIncompatDirty;
  i.corrupt = h.incompatible_features & kIncompatCorrupt;
  i.compression_type = h.compression_type == 1 ? CompressionType::kZstd : CompressionType::kZlib;
  i.encrypt_format = h.crypt_method == kCryptAes    ? EncryptionFormat::kAes
                     : h.crypt_method == kCryptLuks ? EncryptionFormat::kLuks
                                                    : EncryptionFormat::kNone;
  if (luks_) i.luks = crypto::luks_info(*luks_);
  i.backing_filename = h.backing_file;
  if (!h.backing_file.empty()) {
    std::filesystem::path p(h.backing_file);
    if (p.is_relative()) p = std::filesystem::path(file_->path()).parent_path() / p;
    i.full_backing_filename = backing_path_.empty() ? p.string() : backing_path_;
  }
  i.backing_format = h.backing_format.value_or("");
  i.data_file = h.data_file.value_or("");
  i.data_file_raw = (h.incompatible_features & kIncompatDataFile) && (h.autoclear_features & kAutoclearDataFileRaw);
  for (const SnapshotEntry& s : snapshots_) i.snapshots.push_back(s.info());
  i.bitmaps = bitmaps_;
  i.incompatible_features = h.incompatible_features;
  i.compatible_features = h.compatible_features;
  i.autoclear_features = h.autoclear_features;
  return i;
}

CacheStats Qcow2Driver::cache_stats() const {
  return {l2_cache_ ? l2_cache_->hits() : 0, l2_cache_ ? l2_cache_->misses() : 0};
}

}  // namespace qcow
