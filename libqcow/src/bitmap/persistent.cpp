// Persistent dirty bitmaps: reading their bits (directory -> bitmap table -> data
// clusters) and storing them into another image. The bits are the same for any cluster
// size: only how they are cut into clusters depends on the image.
#include "qcow/bitmaps.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

#include "codec/bytes.hpp"
#include "driver.hpp"
#include "format/bitmap_directory.hpp"
#include "format/constants.hpp"
#include "io/zeros.hpp"
#include "meta/tables.hpp"
#include "qcow2/qcow2_driver.hpp"

namespace qcow {
namespace {

constexpr uint64_t kBitmapTableOffsetMask = 0x00fffffffffffe00ull;
constexpr uint64_t kMaxBitmapBytes = 512ull << 20;  // QEMU's limit on a bitmap's data

// Clears the bits past the end of the disk (the spec wants them zero).
void clear_tail_bits(std::vector<uint8_t>& bits, uint64_t disk_size, uint32_t granularity_bits) {
  const uint64_t granules = (disk_size + (uint64_t(1) << granularity_bits) - 1) >> granularity_bits;
  if (granules % 8 && !bits.empty()) bits.back() &= uint8_t((1u << (granules % 8)) - 1);
}

// The first `entries` entries of a bitmap's table, bounded by the file before anything
// is allocated, then read by the metadata layer's table loader.
Result<std::vector<uint64_t>> read_table(Qcow2Driver& d, const BitmapDirEntry& e, uint64_t entries,
                                         uint64_t file_size) {
  if (e.table_offset > file_size || entries > (file_size - e.table_offset) / 8)
    return Status::corrupt(fmt::format("bitmap '{}': table at {:#x} lies outside the file", e.name, e.table_offset));
  return load_table(d.image_file(), e.table_offset, entries, fmt::format("bitmap '{}' table", e.name));
}

// Reads one bitmap's bits through its table (entries checked as QEMU's load does).
Status read_bits(Qcow2Driver& d, const BitmapDirEntry& e, uint64_t file_size, std::vector<uint8_t>& out) {
  const uint64_t cs = d.geometry().cluster_size;
  const uint64_t bytes = bitmap_data_bytes(d.size(), e.granularity_bits);
  if (bytes > kMaxBitmapBytes) return Status::limit(fmt::format("bitmap '{}' is larger than 512 MiB", e.name));
  const uint64_t needed = div_round_up(bytes, cs);
  if (e.table_size < needed)
    return Status::corrupt(fmt::format("bitmap '{}': table of {} entries for {} clusters of data", e.name, e.table_size,
                                       needed));
  QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> table, read_table(d, e, needed, file_size));
  out.assign(bytes, 0);
  for (uint64_t i = 0; i < needed; ++i) {
    const uint64_t entry = table[i], off = entry & kBitmapTableOffsetMask;
    std::span<uint8_t> part(out.data() + i * cs, std::min(cs, bytes - i * cs));
    if ((entry & ~kBitmapTableOffsetMask & ~uint64_t(1)) || (off && (entry & 1)) || (off & (cs - 1)))
      return Status::corrupt(fmt::format("bitmap '{}': invalid table entry {:#x} at index {}", e.name, entry, i));
    if (!off) {
      if (entry & 1) std::fill(part.begin(), part.end(), 0xff);
      continue;
    }
    if (off > file_size || cs > file_size - off)
      return Status::corrupt(fmt::format("bitmap '{}': data cluster {:#x} lies outside the file", e.name, off));
    QCOW_ASSIGN_OR_RETURN(size_t n, d.image_file().read_at(off, part));
    if (n < part.size()) return Status::corrupt(fmt::format("bitmap '{}': data cluster {:#x} is truncated", e.name, off));
  }
  clear_tail_bits(out, d.size(), e.granularity_bits);
  return Status::ok();
}

Qcow2Driver* qcow2_of(Image& image) {
  Driver& d = Image::Internals::driver(image);
  return d.format() == Format::kQcow2 ? static_cast<Qcow2Driver*>(&d) : nullptr;
}

// Stores `data` in fresh clusters (refcount 1); returns where.
Result<uint64_t> store_clusters(Qcow2Driver& d, std::span<const uint8_t> data) {
  const uint64_t cs = d.geometry().cluster_size;
  QCOW_ASSIGN_OR_RETURN(uint64_t off, d.refcounts().alloc(div_round_up(data.size(), cs)));
  std::vector<uint8_t> padded(align_up(data.size(), cs), 0);
  std::copy(data.begin(), data.end(), padded.begin());
  QCOW_TRY(d.image_file().write_metadata(Structure::kBitmapDirectory, off, padded));
  return off;
}

// Clusters of an entry's table and data, to release once the entry is gone.
Status collect_clusters(Qcow2Driver& d, const BitmapDirEntry& e, uint64_t file_size, std::vector<uint64_t>& out) {
  const uint64_t cs = d.geometry().cluster_size;
  QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> table, read_table(d, e, e.table_size, file_size));
  for (uint64_t entry : table)
    if (uint64_t off = entry & kBitmapTableOffsetMask) out.push_back(off);
  for (uint64_t c = 0; c < div_round_up(uint64_t(e.table_size) * 8, cs); ++c) out.push_back(e.table_offset + c * cs);
  return Status::ok();
}

// A new directory entry for `b`: its data clusters and table stored in fresh clusters.
Result<BitmapDirEntry> store_one(Qcow2Driver& d, const DirtyBitmap& b) {
  const uint64_t cs = d.geometry().cluster_size;
  const uint64_t bytes = bitmap_data_bytes(d.size(), uint8_t(b.granularity_bits));
  if (b.bits.size() != bytes)
    return Status::invalid(fmt::format("bitmap '{}' has {} bytes of data for a disk that needs {}", b.name, b.bits.size(),
                                       bytes));
  std::vector<uint8_t> table(div_round_up(bytes, cs) * 8, 0);
  for (uint64_t i = 0; i * cs < bytes; ++i) {
    std::span<const uint8_t> part(b.bits.data() + i * cs, std::min(cs, bytes - i * cs));
    if (buffer_is_zero(part.data(), part.size())) continue;  // entry 0: reads as zeros
    QCOW_ASSIGN_OR_RETURN(uint64_t off, store_clusters(d, part));
    store_be64(table.data() + 8 * i, off);
  }
  BitmapDirEntry e;
  QCOW_ASSIGN_OR_RETURN(e.table_offset, store_clusters(d, table));
  e.table_size = uint32_t(table.size() / 8);
  e.flags = b.auto_ ? kBitmapAuto : 0;
  e.granularity_bits = uint8_t(b.granularity_bits);
  e.name = b.name;
  return e;
}

// Every bit set (tail bits past the disk's end clear, as the spec wants).
DirtyBitmap all_dirty(const BitmapDirEntry& e, uint64_t disk_size) {
  DirtyBitmap b;
  b.name = e.name;
  b.granularity_bits = e.granularity_bits;
  b.auto_ = true;
  b.bits.assign(bitmap_data_bytes(disk_size, e.granularity_bits), 0xff);
  clear_tail_bits(b.bits, disk_size, e.granularity_bits);
  return b;
}

// The bitmaps the image had when it was opened (the writable open cleared their
// autoclear bit: nothing here tracks writes).
Result<std::vector<BitmapDirEntry>> existing_entries(Qcow2Driver& d) {
  if (!d.header().bitmaps || d.info().bitmaps.empty()) return std::vector<BitmapDirEntry>{};  // none, or stale
  Header h = d.header();
  h.autoclear_features |= kAutoclearBitmaps;
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, d.image_file().size());
  return load_bitmap_directory(d.image_file().file(), h, file_size);
}

Status store(Qcow2Driver& d, const std::vector<DirtyBitmap>& bitmaps) {
  const Header cur = d.header();
  if (bitmaps.empty()) return Status::ok();
  // (QEMU's messages: it fails on the first bitmap it creates.)
  auto failed = [](const DirtyBitmap& b, const std::string& why) {
    return fmt::format("Failed to create bitmap {}: {}", b.name, why);
  };
  if (cur.version < 3) return Status::unsupported(failed(bitmaps[0], "Cannot store dirty bitmaps in qcow2 v2 files"));
  QCOW_ASSIGN_OR_RETURN(std::vector<BitmapDirEntry> dir, existing_entries(d));
  if (dir.size() + bitmaps.size() > 65535) return Status::limit("more than 65535 bitmaps");
  for (const DirtyBitmap& b : bitmaps) {
    if (b.name.empty() || b.name.size() > 1023 || b.granularity_bits < 9 || b.granularity_bits > 31)
      return Status::invalid(fmt::format("bitmap '{}': name or granularity out of range", b.name));
    for (const BitmapDirEntry& e : dir)
      if (e.name == b.name) return Status::invalid(failed(b, "Bitmap already exists: " + b.name));
    for (const DirtyBitmap& o : bitmaps)
      if (&o != &b && o.name == b.name) return Status::invalid(failed(b, "Bitmap already exists: " + b.name));
  }
  QCOW_TRY(d.flush());
  QCOW_ASSIGN_OR_RETURN(const uint64_t file_size, d.image_file().size());
  const uint64_t cs = d.geometry().cluster_size;
  std::vector<uint64_t> released;  // clusters the old structures leave behind
  if (cur.bitmaps && !dir.empty())
    for (uint64_t c = 0; c < div_round_up(cur.bitmaps->bitmap_directory_size, cs); ++c)
      released.push_back(cur.bitmaps->bitmap_directory_offset + c * cs);
  // An enabled bitmap the image had did not see what was just written: all of it is
  // dirty now (more than was written, never less: a backup then copies everything).
  for (BitmapDirEntry& e : dir) {
    if ((e.flags & kBitmapInUse) || !(e.flags & kBitmapAuto)) continue;
    QCOW_TRY(collect_clusters(d, e, file_size, released));
    QCOW_ASSIGN_OR_RETURN(e, store_one(d, all_dirty(e, d.size())));
  }
  for (const DirtyBitmap& b : bitmaps) {
    QCOW_ASSIGN_OR_RETURN(BitmapDirEntry e, store_one(d, b));
    dir.push_back(std::move(e));
  }
  const std::vector<uint8_t> bytes = encode_bitmap_directory(dir);
  QCOW_ASSIGN_OR_RETURN(uint64_t dir_offset, store_clusters(d, bytes));
  QCOW_TRY(d.flush());  // refcounts and every new cluster durable before the header names them
  Header h = cur;
  h.bitmaps = BitmapsExtension{uint32_t(dir.size()), bytes.size(), dir_offset};
  h.autoclear_features |= kAutoclearBitmaps;
  QCOW_TRY(d.commit_header_atomic(h));  // the commit point
  QCOW_TRY(d.image_file().flush());
  for (uint64_t off : released) QCOW_TRY(d.refcounts().update(off >> d.geometry().cluster_bits, -1));
  return d.flush();
}

}  // namespace

Result<std::vector<DirtyBitmap>> read_bitmaps(Image& image) {
  std::vector<DirtyBitmap> out;
  Qcow2Driver* d = qcow2_of(image);
  if (!d) return out;
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, d->image_file().size());
  // (The driver cleared a stale extension's autoclear bit only if it wrote; read what it read at open.)
  QCOW_ASSIGN_OR_RETURN(std::vector<BitmapDirEntry> dir, load_bitmap_directory(d->image_file().file(), d->header(), file_size));
  for (const BitmapDirEntry& e : dir) {
    DirtyBitmap b;
    b.name = e.name;
    b.granularity_bits = e.granularity_bits;
    b.auto_ = e.flags & kBitmapAuto;
    b.in_use = e.flags & kBitmapInUse;
    if (!b.in_use) {
      Status s = read_bits(*d, e, file_size, b.bits);
      if (!s.is_ok()) return s.prepend(d->path() + ": ");
    }
    out.push_back(std::move(b));
  }
  return out;
}

Status store_bitmaps(Image& image, const std::vector<DirtyBitmap>& bitmaps) {
  Qcow2Driver* d = qcow2_of(image);
  if (!d) return Status::unsupported("Format driver 'raw' does not support bitmaps");
  if (!d->writable()) return Status::error(ErrorCode::kReadOnly, d->path() + ": image is opened read-only");
  Status s = store(*d, bitmaps);
  Status c = image.close();
  return s.is_ok() ? c : s;
}

}  // namespace qcow
