// Qcow2Driver: one qcow2 layer. Split by operation across qcow2/*.cpp:
// open.cpp (open, validation, overlap registration, corruption marking, info),
// read.cpp (L2 entry access, mapping lookup, read, layer status), write.cpp
// (in-place and allocating writes, copy-on-write), zero.cpp (write_zeroes, discard),
// compressed.cpp (compressed writes), flush.cpp (flush ordering, close), resize.cpp
// and shrink.cpp (virtual size, L1 growth), create.cpp, preallocate.cpp, crypt.cpp (LUKS/AES data
// path), snapshot.cpp (snapshot table), bitmaps.cpp (bitmap directory for info).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cache/table_cache.hpp"
#include "crypto/luks.hpp"
#include "driver.hpp"
#include "format/bitmap_directory.hpp"
#include "format/header.hpp"
#include "format/snapshot_table.hpp"
#include "map/geometry.hpp"
#include "map/l2_entry.hpp"
#include "meta/header_store.hpp"
#include "meta/image_file.hpp"
#include "refcount/refcount.hpp"

namespace qcow {

// Whether a snapshot's L1 table is usable: cluster aligned, not too large, inside the file.
bool snapshot_l1_valid(const SnapshotEntry& s, uint64_t cluster_size, uint64_t file_size);
// Parses the snapshot table; *table_bytes receives its length on disk. An entry whose L1
// table is not usable fails the load, unless keep_unusable_l1 (check's opens, which report
// such an entry as QEMU's check does and leave its L1 table alone).
Result<std::vector<SnapshotEntry>> load_snapshot_table(File& file, const Header& h, uint64_t file_size,
                                                       uint64_t* table_bytes, bool keep_unusable_l1 = false);
// The bitmap directory's entries (none when the extension is absent or stale), checked.
Result<std::vector<BitmapDirEntry>> load_bitmap_directory(File& file, const Header& h, uint64_t file_size);
Result<std::vector<BitmapInfo>> load_bitmap_list(File& file, const Header& h, uint64_t file_size);

class Qcow2Driver final : public Driver {
 public:
  Qcow2Driver(std::unique_ptr<File> file, const OpenOptions& options);
  ~Qcow2Driver() override;

  Status open(int depth, std::vector<std::string>& chain);

  Format format() const override { return Format::kQcow2; }
  uint64_t size() const override { return header_->size; }
  const std::string& path() const override { return file_->path(); }
  const std::string& data_path() const override { return data_file_ ? data_path_ : file_->path(); }
  bool writable() const override { return writable_; }
  Status read(uint64_t offset, std::span<uint8_t> buf) override;
  Status write(uint64_t offset, std::span<const uint8_t> buf, Compress compress) override;
  Status write_zeroes(uint64_t offset, uint64_t length, Unmap unmap) override;
  Status store_compressed(uint64_t offset, std::span<const uint8_t> compressed) override;
  Status discard(uint64_t offset, uint64_t length) override;
  Status flush() override;
  Status resize(uint64_t new_size, const ResizeOptions& options = {}) override;
  Status close() override;
  Result<LayerRun> layer_status(uint64_t offset, uint64_t max_length) override;
  Result<LayerRun> map_status(uint64_t offset, uint64_t max_length) override;
  ImageInfo info() const override;
  Driver* backing() override { return backing_.get(); }
  CacheStats cache_stats() const override;
  // Allocates L2 tables and data clusters for the whole disk (create's preallocation).
  Status preallocate(Preallocation mode);

  // Writes a new LUKS area and its header extension (create; before any data is written).
  Status init_luks(const EncryptOptions& e, std::string_view passphrase);

  // Forgets in-memory state without writing it (after amend replaced the structures on disk).
  void abandon() { closed_ = true; }

  Refcounts::ReftableMovedFn refcounts_moved_fn();

  // For check/amend/map: read-only access to the parsed structures.
  const Header& header() const { return header_.get(); }
  const Geometry& geometry() const { return geo_; }
  const std::vector<uint64_t>& l1_table() const { return l1_; }
  const std::vector<SnapshotEntry>& snapshots() const { return snapshots_; }
  uint64_t snapshot_table_bytes() const { return snapshot_table_bytes_; }
  // The host file: every write goes through it (overlap checks, sticky errors).
  ImageFile& image_file() { return io_; }
  // Guest data lives in an external data file (incompatible bit 2): host offsets of data
  // clusters are guest offsets in that file, and data clusters have no refcounts.
  bool external_data() const { return data_file_ != nullptr; }
  // ... which is also a consistent raw image by itself (autoclear bit 1, data_file_raw).
  bool raw_data() const { return external_data() && (header_->autoclear_features & kAutoclearDataFileRaw); }
  // Sets or clears incompatible feature bits (version 3), after a barrier, and flushes.
  Status update_incompatible(uint64_t set, uint64_t clear);
  // Offline rewrites (amend): the allocator, and the whole-header write that commits a
  // rewrite. The caller abandons the driver afterwards.
  Refcounts& refcounts() { return *refcounts_; }
  Status commit_header(const Header& h) { return header_.commit(h); }
  // The same, safe against a write torn into sectors (HeaderStore::rewrite_atomic; rebase).
  Status commit_header_atomic(const Header& h) { return header_.rewrite_atomic(h); }
  // The commit point of a change prepared in fresh clusters (snapshot/): the named
  // fields in one header write (no flush).
  Status commit_fields(std::initializer_list<HeaderField> fields, const std::function<void(Header&)>& change) {
    return header_.update(fields, change);
  }
  // Switches to refcount structures written elsewhere in the file (check's and amend's
  // rebuild): flushes them, commits the header fields (with a new refcount width when
  // given) in one write, and reloads the refcounts. The commit point of a rebuild.
  Status install_refcounts(uint64_t table_offset, uint32_t table_clusters, std::optional<uint32_t> new_order);

  // The one choke point for L2 entries (guest offset -> entry of its cluster).
  Result<L2Entry> get_l2_entry(uint64_t guest_offset);
  Status set_l2_entry(uint64_t guest_offset, L2Entry e);
  // What a caller of set_l2_entry() needs (commit's make_image_empty): the L2 table of
  // a guest offset made ours alone (copied when a snapshot shares it), and the old host
  // cluster(s) of a replaced entry scheduled for freeing at the next flush.
  Result<uint64_t> ensure_l2_writable(uint64_t guest_offset);
  Status release_host(L2Entry old);

 private:
  // Steps of open().
  Status check_features() const;
  Status open_data_file();
  Status load_l1();
  Status create_caches();
  Status open_backing(int depth, std::vector<std::string>& chain);
  Status prepare_for_writing();

  Status check_writable() const;
  Status load_snapshot_l1(const std::string& id_or_name);
  Status check_range(uint64_t offset, uint64_t length) const;
  // Reads the guest view, zero-filling past the virtual size (copy-on-write fills use this).
  Status read_view(uint64_t offset, std::span<uint8_t> buf);
  Status read_compressed(L2Entry e, uint64_t guest_cluster, std::span<uint8_t> out, uint64_t in_cluster);
  Status check_external_entry(L2Entry e, uint64_t guest_offset, uint64_t l2_offset) const;
  Result<uint64_t> l2_slice_position(uint64_t l2_offset, uint64_t guest_offset, uint64_t* in_slice);
  bool can_write_in_place(L2Entry e) const;
  Status write_guest(uint64_t offset, std::span<const uint8_t> buf, Compress compress);  // write() without guard()
  Status write_in_place(uint64_t offset, std::span<const uint8_t> buf, uint64_t* done);
  Status write_allocating(uint64_t offset, std::span<const uint8_t> buf, uint64_t* done);
  Status write_compressed_cluster(uint64_t guest_cluster, std::span<const uint8_t> data);
  // The public operations without guard() (they call each other).
  Status read_guest(uint64_t offset, std::span<uint8_t> buf);
  Status zero_guest(uint64_t offset, uint64_t length, Unmap unmap);
  Status discard_guest(uint64_t offset, uint64_t length);
  Status store_compressed_cluster(uint64_t offset, std::span<const uint8_t> compressed);
  Result<uint64_t> alloc_compressed_bytes(uint64_t size);
  Status zero_units(uint64_t offset, uint64_t length, Unmap unmap);
  Status grow_l1(uint64_t entries);
  // Host clusters for n guest clusters from the cluster-aligned guest offset: from the
  // allocator, or the same offsets in the external data file.
  Result<uint64_t> alloc_data_clusters(uint64_t guest, uint64_t n);
  // Data written or reserved up to host offset `end` (in the image file unless external).
  void note_data_end(uint64_t end);
  // resize (resize.cpp, shrink.cpp).
  Status grow_to(uint64_t new_size, Preallocation mode);
  Status shrink_to(uint64_t new_size);
  Status preallocate_range(uint64_t from, uint64_t to, Preallocation mode, uint64_t bitmap);
  Status zero_grown(uint64_t old_size, uint64_t end);
  Status zero_tail(uint64_t from, uint64_t to);
  Status past_the_end(uint64_t size, const std::function<Status()>& op);
  // Drops every cluster mapped at or past the cluster-aligned guest offset `from`.
  Status clear_beyond(uint64_t from);
  Status truncate_unused_tail();
  Status flush_metadata();  // flush() without the corruption guard (used inside operations)
  // The one writer of the in-memory active L1 table: keeps the overlap map in step.
  void set_l1_entry(uint64_t index, uint64_t entry);
  // Registers the structures the header points at (see meta/overlap.hpp).
  Status register_metadata();
  // Marks the image corrupt (once) and builds the error for `what` (QEMU's qcow2_signal_corruption).
  Status signal_corruption(const std::string& what);
  // Marks the image corrupt when `s` reports corruption found while the image is writable.
  Status guard(Status s);
  // Encryption (crypt.cpp): header checks and unlocking at open, and the data path.
  Status open_crypto();
  bool encrypted_io() const { return header_->crypt_method != 0; }
  // Decrypts/encrypts data at guest offset `guest` stored at host offset `host` (512-aligned).
  Status crypt_data(bool encrypt, uint64_t guest, uint64_t host, std::span<uint8_t> buf);
  Status read_encrypted(uint64_t guest, uint64_t host, std::span<uint8_t> out);

  std::unique_ptr<File> file_;
  std::unique_ptr<File> data_file_;  // external data file, when the image has one
  std::string data_path_;
  OpenOptions options_;
  ImageFile io_;
  bool writable_ = false;
  HeaderStore header_;
  Geometry geo_;
  bool corruption_signalled_ = false;
  std::unique_ptr<TableCache> l2_cache_;
  std::unique_ptr<Refcounts> refcounts_;
  uint64_t refcount_cache_slices_ = 4;
  std::vector<uint64_t> l1_;
  bool l1_dirty_ = false;
  std::unique_ptr<Driver> backing_;
  std::string backing_path_;
  std::vector<SnapshotEntry> snapshots_;
  std::vector<BitmapInfo> bitmaps_;  // for info; empty when the directory is stale or broken
  uint64_t snapshot_table_bytes_ = 0;
  uint64_t file_size_ = 0;        // host file size as last known
  uint64_t alloc_end_ = 0;        // end of the highest cluster we allocated
  // The last decompressed cluster (sequential reads of compressed images touch each many times).
  uint64_t decompressed_word_ = 0;  // its L2 entry
  bool decompressed_valid_ = false;
  std::vector<uint8_t> decompressed_;
  uint64_t compressed_next_ = 0;  // next free byte for packing compressed clusters (0: none)
  bool closed_ = false;
  bool opened_ = false;           // open() completed; only then may close() flush
  int metadata_preallocation_ = -1;  // QEMU's heuristic, computed on first map_status (-1: not yet)
  Result<bool> detect_metadata_preallocation();
  std::vector<uint8_t> scratch_;  // copy-on-write assembly buffer, reused across writes
  std::optional<crypto::LuksHeader> luks_;
  std::unique_ptr<crypto::SectorCipher> cipher_;  // set once unlocked
};

}  // namespace qcow
