// create_snapshot, delete_snapshot, apply_snapshot (include/qcow/snapshot.hpp): the
// lookups and QEMU's rules, then one L1Change (snapshot/commit.hpp) each.
#include "qcow/snapshot.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <functional>

#include "codec/bytes.hpp"
#include "format/constants.hpp"
#include "meta/tables.hpp"
#include "snapshot/commit.hpp"

namespace qcow {

namespace {

// Opens `path` writable without its backing chain, runs `fn` on the qcow2 driver and
// lets the driver go without writing its (now stale) in-memory state.
Status with_driver(const std::string& path, const SnapshotOptions& o, const std::function<Status(Qcow2Driver&)>& fn) {
  try {
    OpenOptions oo;
    oo.writable = true;
    oo.open_backing = false;
    oo.wrap_file = o.wrap_file;
    oo.key_secret = o.key_secret;
    oo.overlap_check = o.overlap_check;
    QCOW_ASSIGN_OR_RETURN(auto drv, open_driver(path, oo, 0));
    if (drv->format() != Format::kQcow2) {
      drv->close().ignore();
      return Status::unsupported(path + ": raw images have no internal snapshots");
    }
    auto* d = static_cast<Qcow2Driver*>(drv.get());
    Status s = fn(*d);
    d->abandon();
    if (!s.is_ok() && s.message().rfind(path, 0) != 0) s.prepend(path + ": ");
    return s;
  } catch (const std::bad_alloc&) {
    return Status::limit(path + ": out of memory");
  }
}

// The spec rules internal snapshots out with an external data file (its clusters cannot
// be shared); QEMU refuses to create or apply them (ENOTSUP).
Status refuse_external_data(const Qcow2Driver& d) {
  if (!(d.header().incompatible_features & kIncompatDataFile)) return Status::ok();
  return Status::error(ErrorCode::kUnsupported, "internal snapshots are not supported with an external data file", ENOTSUP);
}

Result<size_t> find(const Qcow2Driver& d, const std::string& which, SnapshotMatch match) {
  const std::vector<SnapshotEntry>& all = d.snapshots();
  if (match == SnapshotMatch::kIdOrName)
    for (size_t i = 0; i < all.size(); ++i)
      if (all[i].id == which) return i;
  for (size_t i = 0; i < all.size(); ++i)
    if (all[i].name == which) return i;
  return Status::error(ErrorCode::kNotFound, fmt::format("snapshot '{}' not found", which), ENOENT);
}

// QEMU's find_new_snapshot_id(): one more than the largest id read as a number.
std::string next_id(const std::vector<SnapshotEntry>& all) {
  unsigned long largest = 0;
  for (const SnapshotEntry& s : all) largest = std::max(largest, std::strtoul(s.id.c_str(), nullptr, 10));
  return std::to_string(largest + 1);
}

// What qemu-img snapshot -c records: the time (microseconds, as nanoseconds), the disk
// size in the extra data (vm_state_size, disk_size, icount: 24 bytes), no VM state.
SnapshotEntry new_entry(const std::vector<SnapshotEntry>& all, const std::string& name, uint64_t disk_size) {
  SnapshotEntry e;
  e.id = next_id(all);
  e.name = name;
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  const auto usec = std::chrono::duration_cast<std::chrono::microseconds>(now).count();
  e.date_sec = uint32_t(usec / 1000000);
  e.date_nsec = uint32_t(usec % 1000000 * 1000);
  e.extra.assign(24, 0);
  store_be64(e.extra.data() + 8, disk_size);
  return e;
}

}  // namespace

Result<SnapshotInfo> create_snapshot(const std::string& path, const std::string& name, const SnapshotOptions& o) {
  if (name.size() > 0xffff) return Status::invalid(fmt::format("{}: snapshot name longer than 65535 bytes", path));
  SnapshotInfo created;
  QCOW_TRY(with_driver(path, o, [&](Qcow2Driver& d) -> Status {
    QCOW_TRY(refuse_external_data(d));
    const std::vector<SnapshotEntry>& all = d.snapshots();
    if (all.size() >= kMaxSnapshots) return Status::error(ErrorCode::kLimit, "too many snapshots", EFBIG);
    L1Change c;
    c.size = d.size();
    c.snapshots = all;
    c.snapshots.push_back(new_entry(all, name, d.size()));
    c.copy_of_active = all.size();
    QCOW_TRY(commit_l1_change(d, c));
    created = c.snapshots.back().info();
    return Status::ok();
  }));
  return created;
}

Status delete_snapshot(const std::string& path, const std::string& which, SnapshotMatch match, const SnapshotOptions& o) {
  return with_driver(path, o, [&](Qcow2Driver& d) -> Status {
    QCOW_ASSIGN_OR_RETURN(size_t index, find(d, which, match));
    L1Change c;
    c.size = d.size();
    c.snapshots = d.snapshots();
    c.dropped.push_back(c.snapshots[index]);
    c.snapshots.erase(c.snapshots.begin() + ptrdiff_t(index));
    return commit_l1_change(d, c);
  });
}

Status apply_snapshot(const std::string& path, const std::string& which, SnapshotMatch match, const SnapshotOptions& o) {
  return with_driver(path, o, [&](Qcow2Driver& d) -> Status {
    QCOW_TRY(refuse_external_data(d));
    QCOW_ASSIGN_OR_RETURN(size_t index, find(d, which, match));
    const SnapshotEntry& s = d.snapshots()[index];
    const uint64_t disk_size = s.info().disk_size.value_or(d.size());
    if (disk_size != d.size() && d.header().version < 3)
      return Status::error(ErrorCode::kUnsupported, "Can't resize a v2 image which has snapshots", ENOTSUP);
    const uint64_t needed = d.geometry().l1_entries_for(disk_size);
    if (disk_size > (uint64_t(1) << 62) || needed > kMaxL1Bytes / 8)
      return Status::limit(fmt::format("snapshot '{}' disk size {} is too large", s.name, disk_size));
    QCOW_ASSIGN_OR_RETURN(std::vector<uint64_t> l1, load_table(d.image_file(), s.l1_table_offset, s.l1_size,
                                                               fmt::format("snapshot '{}' L1 table", s.name)));
    L1Change c;
    c.active = std::move(l1);
    c.active_l1_size = uint32_t(std::max<uint64_t>(needed, s.l1_size));
    c.size = disk_size;
    c.snapshots = d.snapshots();
    return commit_l1_change(d, c);
  });
}

}  // namespace qcow
