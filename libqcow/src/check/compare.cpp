// Comparing stored with recomputed refcounts, and the OFLAG_COPIED check.
#include <fmt/format.h>

#include "check/check_internal.hpp"
#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"

namespace qcow {
namespace {

Status compare_range(StoredRefcounts& stored, const ClusterCounts& counts, uint64_t first, uint64_t last, Repair fix,
                     CheckTally& t, std::vector<std::string>& messages);

}  // namespace

Status compare_refcounts(StoredRefcounts& stored, const ClusterCounts& counts, Repair fix, CheckTally& t,
                         std::vector<std::string>& messages) {
  // Every cluster of the file and every referenced one, a refcount block's range at a
  // time: a range with neither a block nor a reference is all zeros on both sides, so a
  // sparse file costs what its metadata covers.
  const uint64_t end = std::max(counts.end(), stored.file_clusters());
  const uint64_t range = stored.clusters_per_block();
  for (uint64_t base = 0; base < end; base += range) {
    const uint64_t stop = std::min(end, base + range);
    if (!stored.has_block(base / range) && !counts.any_in(base, stop)) continue;
    QCOW_TRY(compare_range(stored, counts, base, stop, fix, t, messages));
  }
  return Status::ok();
}

namespace {

Status compare_range(StoredRefcounts& stored, const ClusterCounts& counts, uint64_t first, uint64_t last, Repair fix,
                     CheckTally& t, std::vector<std::string>& messages) {
  for (uint64_t i = first; i < last; ++i) {
    auto r = stored.get(i);
    if (!r) {
      messages.push_back(fmt::format("Can't get refcount for cluster {}: {}", i, r.status().message()));
      ++t.check_errors;
      continue;
    }
    const uint64_t refcount = *r, reference = counts.get(i);
    if (refcount || reference) t.highest_cluster = i;
    if (refcount == reference) continue;
    uint64_t* fixed = nullptr;
    if (refcount == 0) {
      t.rebuild = true;
    } else if (refcount > reference && fix != Repair::kNone) {
      fixed = &t.leaks_fixed;
    } else if (refcount < reference && fix == Repair::kAll) {
      fixed = &t.corruptions_fixed;
    }
    messages.push_back(fmt::format("{} cluster {} refcount={} reference={}",
                                   fixed ? "Repairing" : refcount < reference ? "ERROR" : "Leaked", i, refcount, reference));
    if (fixed) {
      QCOW_TRY(stored.set(i, reference));
      ++*fixed;
      continue;
    }
    if (refcount < reference) {
      ++t.corruptions;
      ++t.refcount_corruptions;
    } else {
      ++t.leaks;
    }
  }
  return Status::ok();
}

}  // namespace

Status check_copied(Qcow2Driver& d, StoredRefcounts& stored, bool repair, CheckTally& t,
                    std::vector<std::string>& messages) {
  const Header& h = d.header();
  const Geometry& g = d.geometry();
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, d.image_file().size());
  auto read_zero_filled = [&](uint64_t offset, std::vector<uint8_t>& buf) -> Status {
    std::fill(buf.begin(), buf.end(), 0);
    if (offset >= file_size) return Status::ok();
    QCOW_ASSIGN_OR_RETURN(size_t got, d.image_file().read_at(offset, std::span<uint8_t>(buf.data(),
                                                               std::min<uint64_t>(buf.size(), file_size - offset))));
    (void)got;
    return Status::ok();
  };
  const char* verb = repair ? "Repairing" : "ERROR";
  const bool external = h.incompatible_features & kIncompatDataFile;
  std::vector<uint8_t> l2(g.cluster_size);
  auto check_l2 = [&](uint64_t l2_offset) -> Status {
    QCOW_TRY(read_zero_filled(l2_offset, l2));
    for (uint64_t j = 0; j < g.l2_entries; ++j) {
      const L2Entry entry = load_l2_entry(l2.data(), g, j);
      const uint64_t e = entry.word, off = e & kL2eOffsetMask;
      if (!has_host(g, entry)) continue;  // only QEMU's NORMAL and ZERO_ALLOC clusters
      // An external data file's clusters have an implicit refcount of 1 (spec).
      auto drc = external ? Result<uint64_t>(uint64_t(1)) : stored.get(off >> g.cluster_bits);
      if (!drc) continue;
      if ((*drc == 1) == bool(e & kOflagCopied)) continue;
      messages.push_back(fmt::format("{} OFLAG_COPIED data cluster: l2_entry={:x} refcount={}", verb, e, *drc));
      if (repair) {
        L2Entry fixed = entry;
        fixed.word = *drc == 1 ? e | kOflagCopied : e & ~kOflagCopied;
        QCOW_TRY(repair_l2_entry(d.image_file(), g, l2_offset, j, fixed));
        ++t.corruptions_fixed;
      } else {
        ++t.corruptions;
      }
    }
    return Status::ok();
  };
  auto check_l1_entry = [&](uint32_t i, uint64_t l1e) -> Status {
    const uint64_t l2_offset = l1e & kL1eOffsetMask;
    if (!l2_offset) return Status::ok();
    auto rc = stored.get(l2_offset >> g.cluster_bits);
    if (!rc) return Status::ok();  // QEMU: no message, no check error
    if ((*rc == 1) != bool(l1e & kOflagCopied)) {
      messages.push_back(fmt::format("{} OFLAG_COPIED L2 cluster: l1_index={} l1_entry={:x} refcount={}", verb, i, l1e, *rc));
      if (repair) {
        QCOW_TRY(repair_l1_entry(d.image_file(), h.l1_table_offset, i, *rc == 1 ? l1e | kOflagCopied : l1e & ~kOflagCopied));
        ++t.corruptions_fixed;
      } else {
        ++t.corruptions;
      }
    }
    return check_l2(l2_offset);
  };
  // The L1 table in slices of 64 KiB: the driver holds it already (see walk.cpp).
  constexpr uint32_t kSliceEntries = 8192;
  std::vector<uint8_t> l1;
  for (uint32_t first = 0; first < h.l1_size; first += kSliceEntries) {
    const uint32_t n = std::min(kSliceEntries, h.l1_size - first);
    l1.resize(uint64_t(n) * 8);
    QCOW_TRY(read_zero_filled(h.l1_table_offset + uint64_t(first) * 8, l1));
    for (uint32_t k = 0; k < n; ++k) QCOW_TRY(check_l1_entry(first + k, load_be64(l1.data() + 8 * k)));
  }
  if (repair) QCOW_TRY(d.image_file().flush());
  return Status::ok();
}

}  // namespace qcow
