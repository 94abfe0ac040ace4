// TableCache: LRU cache of metadata slices (L2 slices, refcount blocks) keyed by host offset.
//
// Slices stay in on-disk (big-endian) form, so writing one back is a plain write.
// Callers never keep a pointer across another cache call: every access is a
// lookup by offset (get_* / set_* helpers on top), which is what makes eviction
// safe without pinning in a single-threaded engine.
//
// Write ordering is encoded here, not in callers (QEMU's qcow2_cache_set_dependency):
// before a dirty slice of this cache is written, the dependency cache is flushed and
// the ImageFile's barrier makes everything written so far durable. Slices are
// written as the metadata structure the cache holds, so the overlap checks see them.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "meta/image_file.hpp"
#include "qcow/status.hpp"

namespace qcow {

class TableCache {
 public:
  TableCache(ImageFile* file, Structure what, size_t slice_size, size_t max_slices);

  // Slice data for the slice-aligned host offset, read from the file on a miss.
  Result<uint8_t*> get(uint64_t offset);
  // Like get, but a miss installs a zero-filled slice without reading (a new table).
  Result<uint8_t*> get_empty(uint64_t offset);
  void mark_dirty(uint64_t offset);
  Status flush();
  // Forgets slices in [offset, offset+len) without writing them (the clusters were freed).
  void forget(uint64_t offset, uint64_t len);
  void set_dependency(TableCache* dep) { dependency_ = dep; }
  bool has_dirty() const { return dirty_count_ > 0; }
  size_t slice_size() const { return slice_size_; }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  struct Slot {
    uint64_t offset = 0;
    bool dirty = false;
    std::vector<uint8_t> data;
  };
  using List = std::list<Slot>;
  Result<List::iterator> lookup(uint64_t offset, bool read);
  Status prepare_write();
  Status write_slot(Slot& s);
  Status make_room();

  ImageFile* file_;
  Structure what_;
  size_t slice_size_;
  size_t max_slices_;
  TableCache* dependency_ = nullptr;
  List lru_;  // front = most recently used
  std::unordered_map<uint64_t, List::iterator> index_;
  size_t dirty_count_ = 0;
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace qcow
