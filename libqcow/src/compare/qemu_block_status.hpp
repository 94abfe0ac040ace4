// Block status with QEMU's flags and run lengths, for comparisons that must
// agree with qemu-img run by run (compare -s reports the first run whose
// status differs, and a run's status includes "reaches the end of the image").
//
// Image::block_status merges runs into maximal extents; QEMU does not. Its
// qcow2 driver answers at most one L2 table (the default L2 cache entry is a
// whole cluster) and INT_MAX bytes per call, stops at every change of
// subcluster type or host contiguity, and returns each compressed cluster on
// its own; its file driver returns whole data extents and holes.
#pragma once

#include <cstdint>

#include "driver.hpp"
#include "qcow/status.hpp"

namespace qcow {

// QEMU's BDRV_BLOCK_* bits (include/block/block-common.h) that survive
// bdrv_block_status_above().
constexpr uint32_t kBlockData = 0x01;
constexpr uint32_t kBlockZero = 0x02;
constexpr uint32_t kBlockOffsetValid = 0x04;
constexpr uint32_t kBlockAllocated = 0x10;
constexpr uint32_t kBlockEof = 0x20;

struct QemuBlockStatus {
  uint32_t flags = 0;
  uint64_t length = 0;  // > 0
};

// bdrv_block_status_above(top, NULL, offset, bytes) with want_zero: the
// status of the run at `offset` through the whole backing chain.
// Requires offset < top.size() and bytes > 0.
Result<QemuBlockStatus> qemu_block_status_above(Driver& top, uint64_t offset, uint64_t bytes);

}  // namespace qcow
