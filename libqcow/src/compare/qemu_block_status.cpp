#include "compare/qemu_block_status.hpp"

#include <algorithm>
#include <climits>

#include "qcow2/qcow2_driver.hpp"

namespace qcow {
namespace {

constexpr uint64_t kQcow2MaxRun = INT_MAX;  // qcow2_co_block_status(): bytes = MIN(INT_MAX, count)

// The run one layer reports at `offset`, bounded the way QEMU's driver bounds it.
Result<LayerRun> layer_run(Driver& d, uint64_t offset, uint64_t bytes) {
  if (auto* q = dynamic_cast<Qcow2Driver*>(&d)) {
    const Geometry& g = q->geometry();
    const uint64_t table_end = (offset / g.l2_coverage() + 1) * g.l2_coverage();
    bytes = std::min({bytes, kQcow2MaxRun, table_end - offset});
    QCOW_ASSIGN_OR_RETURN(LayerRun run, d.map_status(offset, bytes));
    if (run.kind == LayerRun::kCompressed)
      run.length = std::min(run.length, (offset / g.cluster_size + 1) * g.cluster_size - offset);
    return run;
  }
  // A raw file: QEMU reports a hole up to the next data or the end of the
  // image, where our driver may stop at the end of the file first.
  QCOW_ASSIGN_OR_RETURN(LayerRun run, d.map_status(offset, bytes));
  while (run.length < bytes) {
    QCOW_ASSIGN_OR_RETURN(LayerRun next, d.map_status(offset + run.length, bytes - run.length));
    if (next.kind != run.kind) break;
    run.length += next.length;
  }
  return run;
}

// bdrv_co_block_status() of one layer, before the chain is consulted.
uint32_t layer_flags(const LayerRun& r) {
  const uint32_t offset_valid = r.has_host ? kBlockOffsetValid : 0;
  switch (r.kind) {
    case LayerRun::kData: return kBlockData | kBlockAllocated | offset_valid | (r.file_zero ? kBlockZero : 0);
    case LayerRun::kCompressed: return kBlockData | kBlockAllocated;
    case LayerRun::kZero: return kBlockZero | kBlockAllocated | offset_valid;
    case LayerRun::kUnallocated: return offset_valid;
  }
  return 0;
}

}  // namespace

Result<QemuBlockStatus> qemu_block_status_above(Driver& top, uint64_t offset, uint64_t bytes) {
  if (offset >= top.size() || bytes == 0) return Status::internal("block status request outside the image");
  QemuBlockStatus st;
  st.length = std::min(bytes, top.size() - offset);
  for (Driver* d = &top;; d = d->backing()) {
    if (offset >= d->size()) {
      // Past the end of a shorter backing file: zeros, as if allocated there.
      st.flags = kBlockZero | kBlockAllocated;
      break;
    }
    QCOW_ASSIGN_OR_RETURN(LayerRun run, layer_run(*d, offset, std::min(st.length, d->size() - offset)));
    st.flags = layer_flags(run);
    st.length = run.length;
    if (st.flags & kBlockAllocated) break;
    if (!d->backing()) {
      st.flags |= kBlockZero;  // unallocated without a backing file reads as zeros
      break;
    }
  }
  if (offset + st.length == top.size()) st.flags |= kBlockEof;
  return st;
}

}  // namespace qcow
