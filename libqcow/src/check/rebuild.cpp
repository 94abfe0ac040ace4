// Rebuilding the refcount structures from scratch (dirty images, check -r all).
//
// The new refcount blocks and table go to fresh clusters past the end of the
// file; the header switch (one 12-byte write) is the commit point, so a crash
// before it leaves the old structures in charge and after it the new ones.
#include <fmt/format.h>

#include <optional>

#include "check/rebuild.hpp"
#include "check/walk.hpp"
#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"

namespace qcow {

Status rebuild_refcounts(Qcow2Driver& d, uint64_t memory_limit) {
  RefcountWalk w(memory_limit);
  QCOW_TRY(walk_refcounts(d, WalkRefcountStructures::kExclude, w));
  const Geometry g = d.geometry();
  const uint64_t cs = g.cluster_size, rbe = g.refblock_entries;
  QCOW_ASSIGN_OR_RETURN(uint64_t file_size, d.image_file().size());
  const uint64_t E = std::max<uint64_t>(w.counts.end(), div_round_up(file_size, cs));
  ClusterCounts& counts = w.counts;
  uint64_t too_many = 0;
  counts.for_each_page([&](uint64_t first) {
    for (uint64_t c = first; c < first + ClusterCounts::kPageClusters; ++c) too_many = std::max(too_many, counts.get(c));
  });
  if (too_many > g.max_refcount())
    return Status::limit(fmt::format("a cluster is referenced {} times, more than {}-bit refcounts can hold", too_many,
                                     g.refcount_bits));

  auto range_used = [&](uint64_t rt, uint64_t area_end) {
    uint64_t lo = rt * rbe, hi = (rt + 1) * rbe;
    if (hi > E && lo < area_end) return true;
    return counts.any_in(lo, std::min(hi, E));
  };
  uint64_t B = 0, T = 1;
  std::vector<uint64_t> needed;
  for (int iter = 0;; ++iter) {
    if (iter > 64) return Status::internal("refcount rebuild did not converge");
    uint64_t N = E + B + T;
    uint64_t nrt = div_round_up(N, rbe);
    needed.clear();
    for (uint64_t rt = 0; rt < nrt; ++rt)
      if (range_used(rt, N)) needed.push_back(rt);
    uint64_t t_need = div_round_up(nrt * 8, cs);
    if (needed.size() <= B && t_need <= T) break;
    B = std::max<uint64_t>(B, needed.size());
    T = std::max(T, t_need);
  }
  if ((T * cs) > kMaxReftableBytes) return Status::limit("rebuilt refcount table would exceed 8 MiB");
  const uint64_t table_cluster = E + B;
  for (uint64_t j = 0; j < needed.size(); ++j) QCOW_TRY(counts.set(E + j, 1));
  for (uint64_t c = table_cluster; c < table_cluster + T; ++c) QCOW_TRY(counts.set(c, 1));

  ImageFile& file = d.image_file();
  std::vector<uint8_t> block(cs);
  std::vector<uint64_t> table(T * cs / 8, 0);
  for (uint64_t j = 0; j < needed.size(); ++j) {
    uint64_t rt = needed[j];
    std::fill(block.begin(), block.end(), 0);
    for (uint64_t i = 0; i < rbe; ++i)
      if (uint64_t v = counts.get(rt * rbe + i)) set_refcount_entry(block.data(), g.refcount_order, i, v);
    QCOW_TRY(file.write_metadata(Structure::kRefcountBlock, (E + j) * cs, block));
    table[rt] = (E + j) * cs;
  }
  QCOW_TRY(store_table(file, Structure::kRefcountTable, table_cluster * cs, table, T * cs));
  // The driver commits the switch (one header write) and reloads its refcounts.
  return d.install_refcounts(table_cluster * cs, uint32_t(T), std::nullopt);
}

}  // namespace qcow
