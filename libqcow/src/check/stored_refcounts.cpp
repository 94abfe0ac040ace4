#include "check/stored_refcounts.hpp"

#include <fmt/format.h>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "refcount/refcount.hpp"

namespace qcow {

Status StoredRefcounts::load(uint64_t reftable_offset, uint32_t reftable_clusters) {
  QCOW_ASSIGN_OR_RETURN(file_size_, file_.size());
  uint64_t bytes = uint64_t(reftable_clusters) << geo_.cluster_bits;
  if (bytes > kMaxReftableBytes) return Status::limit("refcount table larger than 8 MiB");
  std::vector<uint8_t> raw(bytes, 0);
  if (reftable_offset < file_size_) {
    QCOW_ASSIGN_OR_RETURN(size_t got, file_.read_at(reftable_offset, std::span<uint8_t>(raw.data(),
                                                                          std::min(bytes, file_size_ - reftable_offset))));
    (void)got;
  }
  reftable_.resize(bytes / 8);
  for (size_t i = 0; i < reftable_.size(); ++i) reftable_[i] = load_be64(raw.data() + 8 * i);
  blocks_.clear();
  dirty_.clear();
  return Status::ok();
}

Result<std::vector<uint8_t>*> StoredRefcounts::block(uint64_t rt) {
  if (rt >= reftable_.size()) return static_cast<std::vector<uint8_t>*>(nullptr);
  uint64_t off = reftable_[rt] & kReftOffsetMask;
  if (!off) return static_cast<std::vector<uint8_t>*>(nullptr);
  if (off & (geo_.cluster_size - 1))
    return Status::corrupt(fmt::format("refblock offset {:#x} unaligned (reftable index: {:#x})", off, rt));
  auto it = blocks_.find(rt);
  if (it != blocks_.end()) return &it->second;
  if (blocks_.size() >= max_cached_blocks()) {
    QCOW_TRY(write_back());
    blocks_.clear();
    dirty_.clear();
  }
  std::vector<uint8_t> b(geo_.cluster_size, 0);
  if (off < file_size_) {
    QCOW_ASSIGN_OR_RETURN(size_t got, file_.read_at(off, std::span<uint8_t>(b.data(),
                                                           std::min<uint64_t>(b.size(), file_size_ - off))));
    (void)got;
  }
  return &blocks_.emplace(rt, std::move(b)).first->second;
}

Result<uint64_t> StoredRefcounts::get(uint64_t cluster) {
  QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t>* b, block(cluster >> geo_.refblock_bits));
  if (!b) return uint64_t(0);
  return get_refcount_entry(b->data(), geo_.refcount_order, cluster & (geo_.refblock_entries - 1));
}

Status StoredRefcounts::set(uint64_t cluster, uint64_t value) {
  uint64_t rt = cluster >> geo_.refblock_bits;
  QCOW_ASSIGN_OR_RETURN(std::vector<uint8_t>* b, block(rt));
  if (!b || (reftable_[rt] & kReftOffsetMask) + geo_.cluster_size > file_size_)
    return Status::internal(fmt::format("no refcount block in the file for cluster {}", cluster));
  if (value > geo_.max_refcount()) return Status::limit(fmt::format("refcount {} of cluster {} too large", value, cluster));
  set_refcount_entry(b->data(), geo_.refcount_order, cluster & (geo_.refblock_entries - 1), value);
  dirty_[rt] = true;
  return Status::ok();
}

Status StoredRefcounts::write_back() {
  for (auto& [rt, dirty] : dirty_) {
    if (!dirty) continue;
    QCOW_TRY(file_.write_metadata(Structure::kRefcountBlock, reftable_[rt] & kReftOffsetMask, blocks_.at(rt)));
    dirty = false;
  }
  return Status::ok();
}

}  // namespace qcow
