// FaultFile, RecordingFile and replay(): see fault_file.hpp.

#include "io/fault_file.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <random>

#include <fmt/format.h>

namespace qcow {
namespace {

Status injected(const std::string& path, std::string_view what, uint64_t index, int e) {
  ErrorCode code = e == ENOSPC ? ErrorCode::kNoSpace : ErrorCode::kIo;
  return Status::error(code, fmt::format("{}: {} (injected fault #{}): {}", path, what, index, std::strerror(e)), e);
}

Status log_oom(const std::string& path) {
  return Status::io(fmt::format("{}: recording: out of memory for the write log", path), ENOMEM);
}

}  // namespace

Status FaultFile::check_grow(uint64_t end, std::string_view what) {
  auto size = inner_->size();
  if (!size || end <= *size) return Status::ok();
  uint64_t index = plan_->grows++;
  if (!plan_->grow.fires(index)) return Status::ok();
  plan_->injected++;
  return injected(path(), fmt::format("{} growing the file to {:#x} failed", what, end), index, plan_->grow.error);
}

Status FaultFile::write_at(uint64_t o, std::span<const uint8_t> b) {
  uint64_t index = plan_->writes++;
  QCOW_TRY(check_grow(o + b.size(), "write"));
  if (plan_->write.fires(index)) {
    plan_->injected++;
    Status st = injected(path(), fmt::format("write at offset {:#x} failed", o), index, plan_->write.error);
    if (plan_->write.short_write) {  // half of it, in whole sectors from the start of the file, landed
      uint64_t landed = ((o + b.size() / 2) & ~uint64_t(511)) > o ? ((o + b.size() / 2) & ~uint64_t(511)) - o : 0;
      if (landed) QCOW_TRY(inner_->write_at(o, b.first(landed)));
    }
    return st;
  }
  return inner_->write_at(o, b);
}

Status FaultFile::truncate(uint64_t s) {
  uint64_t index = plan_->truncates++;
  QCOW_TRY(check_grow(s, "truncate"));
  if (plan_->truncate.fires(index)) {
    plan_->injected++;
    return injected(path(), fmt::format("truncate to {:#x} failed", s), index, plan_->truncate.error);
  }
  return inner_->truncate(s);
}

Status FaultFile::zero_range(uint64_t o, uint64_t l) {
  uint64_t index = plan_->allocates++;
  QCOW_TRY(check_grow(o + l, "zero range"));
  if (plan_->allocate.fires(index)) {
    plan_->injected++;
    return injected(path(), fmt::format("fallocate (zero range) at offset {:#x} length {:#x} failed", o, l), index,
                    plan_->allocate.error);
  }
  return inner_->zero_range(o, l);
}

Status FaultFile::flush() {
  uint64_t index = plan_->flushes++;
  if (plan_->flush.fires(index)) {
    plan_->injected++;
    return injected(path(), "fdatasync failed", index, plan_->flush.error);
  }
  return inner_->flush();
}

Status FaultFile::allocate(uint64_t o, uint64_t l) {
  uint64_t index = plan_->allocates++;
  QCOW_TRY(check_grow(o + l, "fallocate"));
  if (plan_->allocate.fires(index)) {
    plan_->injected++;
    return injected(path(), fmt::format("fallocate at offset {:#x} length {:#x} failed", o, l), index,
                    plan_->allocate.error);
  }
  return inner_->allocate(o, l);
}

size_t WriteLog::flush_count() const {
  return static_cast<size_t>(
      std::count_if(ops.begin(), ops.end(), [](const LoggedOp& op) { return op.kind == LoggedOp::Kind::kFlush; }));
}

size_t WriteLog::after_flush(size_t k) const {
  for (size_t i = 0; i < ops.size(); i++) {
    if (ops[i].kind == LoggedOp::Kind::kFlush && k-- == 0) return i + 1;
  }
  return ops.size();
}

Status RecordingFile::write_at(uint64_t o, std::span<const uint8_t> b) {
  Status st = inner_->write_at(o, b);
  // Even a failed write may have reached part of the file, so log it too:
  // replaying it models the worst case (all of it landed).
  try {
    LoggedOp op;
    op.kind = LoggedOp::Kind::kWrite;
    op.offset = o;
    op.length = b.size();
    op.data.assign(b.begin(), b.end());
    log_->ops.push_back(std::move(op));
  } catch (const std::bad_alloc&) {
    return log_oom(path());
  }
  return st;
}

Status RecordingFile::flush() {
  QCOW_TRY(inner_->flush());
  try {
    log_->ops.push_back(LoggedOp{LoggedOp::Kind::kFlush, 0, 0, {}});
  } catch (const std::bad_alloc&) {
    return log_oom(path());
  }
  return Status::ok();
}

Status RecordingFile::truncate(uint64_t s) {
  QCOW_TRY(inner_->truncate(s));
  try {
    log_->ops.push_back(LoggedOp{LoggedOp::Kind::kTruncate, s, 0, {}});
  } catch (const std::bad_alloc&) {
    return log_oom(path());
  }
  return Status::ok();
}

Status RecordingFile::allocate(uint64_t o, uint64_t l) {
  QCOW_TRY(inner_->allocate(o, l));
  try {
    log_->ops.push_back(LoggedOp{LoggedOp::Kind::kAllocate, o, l, {}});
  } catch (const std::bad_alloc&) {
    return log_oom(path());
  }
  return Status::ok();
}

Status RecordingFile::punch_hole(uint64_t o, uint64_t l) {
  QCOW_TRY(inner_->punch_hole(o, l));
  try {
    log_->ops.push_back(LoggedOp{LoggedOp::Kind::kPunchHole, o, l, {}});
  } catch (const std::bad_alloc&) {
    return log_oom(path());
  }
  return Status::ok();
}

namespace {

Status apply(const LoggedOp& op, File& target) {
  switch (op.kind) {
    case LoggedOp::Kind::kWrite: return target.write_at(op.offset, op.data);
    case LoggedOp::Kind::kFlush: return Status::ok();  // a marker only
    case LoggedOp::Kind::kTruncate: return target.truncate(op.offset);
    case LoggedOp::Kind::kAllocate: return target.allocate(op.offset, op.length);
    case LoggedOp::Kind::kPunchHole: return target.punch_hole(op.offset, op.length);
  }
  return Status::internal("replay: unknown logged op kind");
}

// A write cut by the power failure: each 512-byte sector of the file it touches
// holds either the old or the new bytes (disks write sectors atomically).
Status apply_torn(const LoggedOp& op, File& target, std::mt19937_64& rng) {
  uint64_t pos = op.offset;
  const uint64_t end = op.offset + op.data.size();
  while (pos < end) {
    const uint64_t sector_end = std::min(end, (pos | 511) + 1);
    if (rng() >> 63) {
      QCOW_TRY(target.write_at(pos, std::span<const uint8_t>(op.data.data() + (pos - op.offset), sector_end - pos)));
    }
    pos = sector_end;
  }
  return Status::ok();
}

}  // namespace

Status replay(const WriteLog& log, size_t prefix_ops, File& target, PowerCut mode) {
  const size_t prefix = std::min(prefix_ops, log.ops.size());
  // Everything up to the last flush in the prefix is durable in every mode.
  size_t durable = prefix;
  if (mode.kind != CutKind::kProcessKill) {
    durable = 0;
    for (size_t i = prefix; i > 0; i--) {
      if (log.ops[i - 1].kind == LoggedOp::Kind::kFlush) {
        durable = i;
        break;
      }
    }
  }
  for (size_t i = 0; i < durable; i++) {
    Status st = apply(log.ops[i], target);
    if (!st.is_ok()) return st.prepend(fmt::format("replay op {}: ", i));
  }
  if (mode.kind == CutKind::kPowerCutReorder || mode.kind == CutKind::kPowerCutTorn) {
    // Any subset of the unflushed ops may have reached the disk; applying
    // the chosen ones in log order also covers "the older of two overlapping
    // writes won" (choose only the older one). mt19937_64's output is fixed
    // by the standard, so a seed names the same subset everywhere.
    std::mt19937_64 rng(mode.seed);
    for (size_t i = durable; i < prefix; i++) {
      const LoggedOp& op = log.ops[i];
      const uint64_t choice = mode.kind == CutKind::kPowerCutTorn ? rng() % 3 : (rng() >> 63);
      if (choice == 0) continue;
      Status st = choice == 2 && op.kind == LoggedOp::Kind::kWrite ? apply_torn(op, target, rng) : apply(op, target);
      if (!st.is_ok()) return st.prepend(fmt::format("replay op {}: ", i));
    }
  }
  return Status::ok();
}

}  // namespace qcow
