#include "cache/table_cache.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <new>

namespace qcow {

TableCache::TableCache(ImageFile* file, Structure what, size_t slice_size, size_t max_slices)
    : file_(file), what_(what), slice_size_(slice_size), max_slices_(std::max<size_t>(max_slices, 2)) {}

// Makes what this cache's slices may point to durable: the dependency cache's dirty
// slices, then one barrier. Our own slice writes never need a barrier between them.
Status TableCache::prepare_write() {
  if (dependency_) QCOW_TRY(dependency_->flush());
  return file_->barrier();
}

Status TableCache::write_slot(Slot& s) {
  if (!s.dirty) return Status::ok();
  Status st = file_->write_metadata(what_, s.offset, s.data);
  if (!st.is_ok()) return st.prepend(fmt::format("writing {} at {:#x}: ", structure_name(what_), s.offset));
  s.dirty = false;
  --dirty_count_;
  return Status::ok();
}

Status TableCache::make_room() {
  while (lru_.size() >= max_slices_) {
    auto victim = std::prev(lru_.end());
    if (victim->dirty) QCOW_TRY(prepare_write());
    QCOW_TRY(write_slot(*victim));
    index_.erase(victim->offset);
    lru_.erase(victim);
  }
  return Status::ok();
}

Result<TableCache::List::iterator> TableCache::lookup(uint64_t offset, bool read) {
  auto it = index_.find(offset);
  if (it != index_.end()) {
    ++hits_;
    if (it->second != lru_.begin()) lru_.splice(lru_.begin(), lru_, it->second);
    return it->second;
  }
  ++misses_;
  QCOW_TRY(make_room());
  Slot s;
  s.offset = offset;
  try {
    s.data.assign(slice_size_, 0);
  } catch (const std::bad_alloc&) {
    return Status::limit("out of memory for the metadata cache");
  }
  if (read) {
    auto got = file_->read_at(offset, s.data);
    if (!got) return got.status();
    if (*got < slice_size_)
      return Status::corrupt(fmt::format("{} at offset {:#x} lies beyond the end of the file", structure_name(what_), offset));
  }
  lru_.push_front(std::move(s));
  index_[offset] = lru_.begin();
  return lru_.begin();
}

Result<uint8_t*> TableCache::get(uint64_t offset) {
  QCOW_ASSIGN_OR_RETURN(auto it, lookup(offset, true));
  return it->data.data();
}

Result<uint8_t*> TableCache::get_empty(uint64_t offset) {
  QCOW_ASSIGN_OR_RETURN(auto it, lookup(offset, false));
  return it->data.data();
}

void TableCache::mark_dirty(uint64_t offset) {
  auto it = index_.find(offset);
  if (it != index_.end() && !it->second->dirty) {
    it->second->dirty = true;
    ++dirty_count_;
  }
}

Status TableCache::flush() {
  if (!dirty_count_) return Status::ok();
  // Write in offset order: sequential for the disk, deterministic for tests.
  std::vector<Slot*> dirty;
  for (auto& s : lru_)
    if (s.dirty) dirty.push_back(&s);
  std::sort(dirty.begin(), dirty.end(), [](Slot* a, Slot* b) { return a->offset < b->offset; });
  QCOW_TRY(prepare_write());
  for (Slot* s : dirty) QCOW_TRY(write_slot(*s));
  return Status::ok();
}

void TableCache::forget(uint64_t offset, uint64_t len) {
  for (uint64_t o = offset; o < offset + len; o += slice_size_) {
    auto it = index_.find(o);
    if (it == index_.end()) continue;
    if (it->second->dirty) --dirty_count_;
    lru_.erase(it->second);
    index_.erase(it);
  }
}

}  // namespace qcow
