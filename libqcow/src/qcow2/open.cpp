// Opening a qcow2 layer: header validation, L1 load, snapshot table, backing chain.
#include <fmt/format.h>

#include <filesystem>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {

Status rebuild_refcounts(Qcow2Driver& d, std::optional<uint32_t> new_order);  // check/rebuild.cpp

namespace {

// Validates a contiguous table (L1, refcount table, snapshot L1s): aligned, bounded, inside the file.
Status validate_table(const char* name, uint64_t offset, uint64_t entries, uint64_t entry_len, uint64_t max_bytes,
                      uint64_t cluster_size, uint64_t file_size) {
  if (entries > max_bytes / entry_len)
    return Status::limit(fmt::format("{} too large ({} entries, limit {} bytes)", name, entries, max_bytes));
  uint64_t bytes = entries * entry_len;
  if (bytes && (offset & (cluster_size - 1)))
    return Status::corrupt(fmt::format("{} offset {:#x} is not aligned to the cluster size", name, offset));
  if (bytes && (offset >= kMaxHostOffset || offset + bytes > file_size))
    return Status::corrupt(fmt::format("{} at offset {:#x} ({} bytes) extends beyond the end of the file ({} bytes)", name,
                                       offset, bytes, file_size));
  if (bytes && offset < cluster_size)
    return Status::corrupt(fmt::format("{} at offset {:#x} overlaps the image header", name, offset));
  return Status::ok();
}

}  // namespace

Qcow2Driver::Qcow2Driver(std::unique_ptr<File> file, const OpenOptions& options)
    : file_(std::move(file)), options_(options), barrier_(file_.get()) {}

Qcow2Driver::~Qcow2Driver() {
  if (!closed_) close().ignore();
}

Status Qcow2Driver::open(int depth, std::vector<std::string>& chain) {
  QCOW_ASSIGN_OR_RETURN(file_size_, file_->size());
  // Read enough for cluster_bits, then the whole first cluster.
  std::vector<uint8_t> buf(std::min<uint64_t>(file_size_, 4096));
  QCOW_ASSIGN_OR_RETURN(size_t got, file_->read_at(0, buf));
  buf.resize(got);
  if (got >= 24) {
    uint32_t cb = load_be32(buf.data() + 20);
    if (cb >= kMinClusterBits && cb <= kMaxClusterBits && (uint64_t(1) << cb) > buf.size()) {
      buf.resize(std::min<uint64_t>(file_size_, uint64_t(1) << cb));
      QCOW_ASSIGN_OR_RETURN(got, file_->read_at(0, buf));
      buf.resize(got);
    }
  }
  QCOW_ASSIGN_OR_RETURN(header_, parse_header(buf));
  geo_ = Geometry::from(header_);
  const Header& h = header_;
  const uint64_t cs = geo_.cluster_size;

  uint64_t unknown = h.incompatible_features & ~kIncompatKnown;
  if (unknown) return Status::unsupported("unsupported qcow2 feature(s): " + describe_unknown_incompatible(h, unknown));
  if (h.incompatible_features & kIncompatDataFile)
    return Status::unsupported("external data files are not supported yet");
  if (h.version == 2 && h.incompatible_features)
    return Status::corrupt("version 2 image with incompatible feature bits set");
  writable_ = options_.writable;
  if (writable_ && (h.incompatible_features & kIncompatCorrupt) && !options_.repair)
    return Status::error(ErrorCode::kReadOnly, "image is marked corrupt and cannot be opened read/write; run 'qimg check -r all'");

  // Virtual size and L1 table.
  if (h.size > (uint64_t(1) << 62)) return Status::limit(fmt::format("virtual size {} is too large", h.size));
  uint64_t needed_l1 = geo_.l1_entries_for(h.size);
  if (needed_l1 > kMaxL1Bytes / 8) return Status::limit(fmt::format("virtual size {} needs an L1 table above the 32 MiB limit", h.size));
  if (h.l1_size < needed_l1)
    return Status::corrupt(fmt::format("L1 table is too small: {} entries for a virtual size that needs {}", h.l1_size, needed_l1));
  QCOW_TRY(validate_table("L1 table", h.l1_table_offset, h.l1_size, 8, kMaxL1Bytes, cs, file_size_));
  {
    std::vector<uint8_t> raw(uint64_t(h.l1_size) * 8);
    QCOW_ASSIGN_OR_RETURN(size_t n, file_->read_at(h.l1_table_offset, raw));
    if (n < raw.size()) return Status::corrupt("L1 table extends beyond the end of the file");
    l1_.resize(h.l1_size);
    for (size_t i = 0; i < l1_.size(); ++i) {
      l1_[i] = load_be64(raw.data() + 8 * i);
      uint64_t off = l1_[i] & kL1eOffsetMask;
      if ((off & (cs - 1)) && !options_.repair)
        return Status::corrupt(fmt::format("L2 table offset {:#x} unaligned (L1 index {:#x})", off, i));
    }
  }
  QCOW_TRY(validate_table("refcount table", h.refcount_table_offset, uint64_t(h.refcount_table_clusters) << geo_.cluster_bits,
                          1, kMaxReftableBytes, cs, file_size_));
  if (h.refcount_table_clusters == 0) return Status::corrupt("refcount table has no clusters");
  if (h.nb_snapshots > kMaxSnapshots) return Status::limit(fmt::format("too many snapshots ({})", h.nb_snapshots));
  QCOW_ASSIGN_OR_RETURN(snapshots_, load_snapshot_table(*file_, h, file_size_, &snapshot_table_bytes_));
  if (auto bitmaps = load_bitmap_list(*file_, h, file_size_)) bitmaps_ = std::move(bitmaps).value();
  if (!options_.snapshot.empty()) QCOW_TRY(load_snapshot_l1(options_.snapshot));
  QCOW_TRY(open_crypto());

  // Caches. The L2 cache defaults to covering the whole disk, capped at 32 MiB (QEMU's default maximum).
  uint64_t slice = options_.l2_cache_entry_size ? options_.l2_cache_entry_size : cs;
  if (!is_power_of_two(slice) || slice < 512 || slice > cs)
    return Status::invalid(fmt::format("L2 cache entry size must be a power of two between 512 and the cluster size ({})", cs));
  uint64_t cache_bytes = options_.l2_cache_size;
  if (!cache_bytes) {
    uint64_t full = div_round_up(h.size, cs) * geo_.l2_entry_size;
    cache_bytes = std::clamp<uint64_t>(full, 1ull << 20, 32ull << 20);
  }
  l2_cache_ = std::make_unique<TableCache>(file_.get(), &barrier_, slice, std::max<uint64_t>(cache_bytes / slice, 4), "L2 table");
  uint64_t rc_bytes = options_.refcount_cache_size ? options_.refcount_cache_size : std::max<uint64_t>(cache_bytes / 4, 4 * cs);
  refcounts_ = std::make_unique<Refcounts>(file_.get(), &barrier_, geo_, std::max<uint64_t>(rc_bytes / cs, 4));
  l2_cache_->set_dependency(&refcounts_->cache());
  if (writable_) {
    QCOW_TRY(refcounts_->load(h.refcount_table_offset, h.refcount_table_clusters));
    refcounts_->set_reftable_moved(refcounts_moved_fn());
    alloc_end_ = align_up(file_size_, cs);
  }

  // Backing chain.
  if (!h.backing_file.empty() && options_.open_backing) {
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
      return s.prepend(fmt::format("could not open backing file: "));
    }
    backing_ = std::move(b).value();
  }

  if (writable_) {
    // Autoclear bits we do not maintain must be cleared before we write (spec); bitmaps
    // we do not update become inconsistent, which clearing bit 0 declares.
    if (h.autoclear_features && !options_.repair) {
      uint8_t b[8];
      store_be64(b, 0);
      QCOW_TRY(write_header_field(88, b));
      header_.autoclear_features = 0;
      QCOW_TRY(barrier_.force());
    }
    if ((h.incompatible_features & kIncompatDirty) && options_.repair_dirty) {
      QCOW_TRY(rebuild_refcounts(*this, std::nullopt));
      QCOW_TRY(update_incompatible(0, kIncompatDirty));
    }
  }
  opened_ = true;
  return Status::ok();
}

// Replaces the active L1 table by a snapshot's (read-only opens: qimg convert -l).
Status Qcow2Driver::load_snapshot_l1(const std::string& id_or_name) {
  if (writable_) return Status::invalid(fmt::format("{}: a snapshot can only be opened read-only", file_->path()));
  const SnapshotInfo* found = nullptr;
  for (const SnapshotInfo& s : snapshots_)
    if (s.id == id_or_name) { found = &s; break; }
  if (!found)
    for (const SnapshotInfo& s : snapshots_)
      if (s.name == id_or_name) { found = &s; break; }
  if (!found)
    return Status::error(ErrorCode::kNotFound, fmt::format("{}: snapshot '{}' not found", file_->path(), id_or_name));
  // load_snapshot_table checked the table's size, alignment and place in the file.
  std::vector<uint8_t> raw(uint64_t(found->l1_size) * 8);
  QCOW_ASSIGN_OR_RETURN(size_t n, file_->read_at(found->l1_table_offset, raw));
  if (n < raw.size()) return Status::corrupt(fmt::format("{}: snapshot '{}' L1 table is truncated", file_->path(), found->name));
  std::vector<uint64_t> l1(found->l1_size);
  for (size_t i = 0; i < l1.size(); ++i) {
    l1[i] = load_be64(raw.data() + 8 * i);
    if ((l1[i] & kL1eOffsetMask) & (geo_.cluster_size - 1))
      return Status::corrupt(fmt::format("{}: snapshot '{}': L2 table offset {:#x} unaligned (L1 index {:#x})", file_->path(),
                                         found->name, l1[i] & kL1eOffsetMask, i));
  }
  l1_ = std::move(l1);
  if (found->disk_size) {
    if (*found->disk_size > (uint64_t(1) << 62))
      return Status::limit(fmt::format("{}: snapshot '{}' virtual size {} is too large", file_->path(), found->name, *found->disk_size));
    header_.size = *found->disk_size;
  }
  return Status::ok();
}

Refcounts::ReftableMovedFn Qcow2Driver::refcounts_moved_fn() {
  return [this](uint64_t off, uint32_t clusters) -> Status {
    uint8_t b[12];
    store_be64(b, off);
    store_be32(b + 8, clusters);
    QCOW_TRY(write_header_field(48, b));
    header_.refcount_table_offset = off;
    header_.refcount_table_clusters = clusters;
    return barrier_.force();
  };
}

Status Qcow2Driver::write_header_field(uint32_t offset, std::span<const uint8_t> bytes) {
  Status s = file_->write_at(offset, bytes);
  barrier_.note_write();
  return s;
}

Status Qcow2Driver::update_incompatible(uint64_t set, uint64_t clear) {
  if (header_.version < 3) return Status::ok();
  uint64_t v = (header_.incompatible_features | set) & ~clear;
  if (v == header_.incompatible_features) return Status::ok();
  uint8_t b[8];
  store_be64(b, v);
  QCOW_TRY(barrier_.barrier());
  QCOW_TRY(write_header_field(72, b));
  QCOW_TRY(barrier_.force());
  header_.incompatible_features = v;
  return Status::ok();
}

ImageInfo Qcow2Driver::info() const {
  ImageInfo i;
  i.filename = file_->path();
  i.format = "qcow2";
  i.virtual_size = header_.size;
  auto a = file_->allocated_bytes();
  i.actual_size = a ? *a : 0;
  auto s = file_->size();
  i.file_length = s ? *s : 0;
  i.cluster_size = uint32_t(geo_.cluster_size);
  i.version = int(header_.version);
  i.refcount_bits = int(geo_.refcount_bits);
  i.extended_l2 = geo_.extended_l2;
  i.lazy_refcounts = header_.compatible_features & kCompatLazyRefcounts;
  i.dirty = header_.incompatible_features & kIncompatDirty;
  i.corrupt = header_.incompatible_features & kIncompatCorrupt;
  i.compression_type = header_.compression_type == 1 ? "zstd" : "zlib";
  i.encrypt_format = header_.crypt_method == kCryptAes ? "aes" : header_.crypt_method == kCryptLuks ? "luks" : "";
  if (luks_) i.luks = crypto::luks_info(*luks_);
  i.backing_filename = header_.backing_file;
  if (!header_.backing_file.empty()) {
    std::filesystem::path p(header_.backing_file);
    if (p.is_relative()) p = std::filesystem::path(file_->path()).parent_path() / p;
    i.full_backing_filename = backing_path_.empty() ? p.string() : backing_path_;
  }
  i.backing_format = header_.backing_format.value_or("");
  i.data_file = header_.data_file.value_or("");
  i.snapshots = snapshots_;
  i.bitmaps = bitmaps_;
  i.incompatible_features = header_.incompatible_features;
  i.compatible_features = header_.compatible_features;
  i.autoclear_features = header_.autoclear_features;
  return i;
}

CacheStats Qcow2Driver::cache_stats() const {
  return {l2_cache_ ? l2_cache_->hits() : 0, l2_cache_ ? l2_cache_->misses() : 0};
}

}  // namespace qcow
