// The snapshot table (spec: "Snapshots"): entries <-> bytes, no I/O.
//
// Each entry is a 40-byte fixed part, extra data (whose first 24 bytes QEMU
// defines: 64-bit vm_state_size, disk_size, icount), the id and the name,
// padded to 8 bytes. Extra data is kept verbatim, so a rewritten table keeps
// what a newer writer stored there.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "qcow/info.hpp"
#include "qcow/status.hpp"

namespace qcow {

struct SnapshotEntry {
  uint64_t l1_table_offset = 0;
  uint32_t l1_size = 0;
  std::string id;
  std::string name;
  uint32_t date_sec = 0;
  uint32_t date_nsec = 0;
  uint64_t vm_clock_nsec = 0;
  uint32_t vm_state_size32 = 0;  // the fixed part's 32-bit field
  std::vector<uint8_t> extra;    // extra data as stored (at most kMaxSnapshotExtraData bytes)

  SnapshotInfo info() const;
};

inline constexpr uint32_t kSnapshotFixedBytes = 40;

// The length of the entry whose fixed part is `fixed` (40 bytes): fixed part, extra
// data, id and name, padded to 8. Fails when the extra data exceeds QEMU's limit.
Result<uint64_t> snapshot_entry_length(std::span<const uint8_t> fixed);
// Parses one entry; `bytes` holds at least snapshot_entry_length() bytes.
SnapshotEntry parse_snapshot_entry(std::span<const uint8_t> bytes);
// Encodes the table: the entries back to back, each padded to 8 bytes.
std::vector<uint8_t> encode_snapshot_table(const std::vector<SnapshotEntry>& entries);

}  // namespace qcow
