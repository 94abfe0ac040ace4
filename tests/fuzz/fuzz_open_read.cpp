// libFuzzer target: open + read + block status of an image held in memory, then
// (crosvm style) guest operations on a writable open, each checked against a
// model: what a successful write, zero or discard made a cluster read is what a
// read returns right after it, and after a flush, a close and a reopen.
//
// Operations stay inside one guest cluster each, so no hostile mapping (two L2
// entries sharing a host cluster, say) can make a correct library fail the
// oracle: within one cluster every byte has one host location. The script comes
// from the input's last bytes (data clusters, usually), the image from all of it.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "fuzz_common.hpp"

namespace {

using qcow_fuzz::no_internal;
using qcow_fuzz::oracle_failed;

void read_only_pass(const uint8_t* data, size_t size) {
  auto mem = qcow_fuzz::memory_file(data, size);
  auto d = no_internal(qcow_fuzz::open_file(mem.get(), false));
  if (!d.is_ok()) return;
  qcow::Driver& drv = **d;
  uint64_t end = std::min<uint64_t>(drv.size(), qcow_fuzz::kWindow);
  std::vector<uint8_t> buf(64 << 10);
  for (uint64_t off = 0; off < end; off += buf.size()) {
    uint64_t n = std::min<uint64_t>(buf.size(), end - off);
    if (!no_internal(drv.read(off, std::span<uint8_t>(buf.data(), n))).is_ok()) break;
  }
  for (uint64_t off = 0; off < end;) {
    auto r = no_internal(drv.map_status(off, end - off));
    if (!r.is_ok() || r->length == 0) break;
    off += r->length;
  }
  drv.info();
}

struct Op {
  enum Kind { kWrite, kZero, kDiscard, kCompressed } kind;
  uint64_t off, len;
  uint8_t pattern;
  qcow::Unmap unmap;
};

// What the cluster holding [off, off+len) reads as after the op, per the op's contract.
void expected(const Op& op, uint64_t cluster_size, bool discard_keeps, std::vector<uint8_t>& cluster, uint64_t cstart) {
  uint8_t* p = cluster.data() + (op.off - cstart);
  switch (op.kind) {
    case Op::kWrite:
    case Op::kCompressed: std::memset(p, op.pattern, op.len); break;
    case Op::kZero: std::memset(p, 0, op.len); break;
    case Op::kDiscard:  // whole clusters only; the rest is left alone
      if (!discard_keeps && op.off == cstart && op.len == cluster.size()) std::memset(p, 0, op.len);
      break;
  }
}

void writable_pass(const uint8_t* data, size_t size) {
  if (size < 64) return;
  auto mem = qcow_fuzz::memory_file(data, size);
  auto d = no_internal(qcow_fuzz::open_file(mem.get(), true));
  if (!d.is_ok() || !(*d)->size()) return;
  qcow::Driver& drv = **d;
  const qcow::ImageInfo info = drv.info();
  const uint64_t cs = info.cluster_size, disk = drv.size();
  // Version 2 cannot mark clusters zero: with a backing file a discard keeps the data.
  const bool discard_keeps = info.version < 3 && !info.backing_filename.empty();
  const uint8_t* script = data + size - 64;
  std::vector<uint8_t> cluster, back;
  uint64_t last_start = 0;
  bool checked_any = false;
  for (int i = 0; i < 8; ++i) {
    const uint8_t* s = script + 8 * i;
    Op op;
    op.kind = Op::Kind(s[0] % 4);
    const uint64_t cstart = ((uint64_t(s[1]) << 16 | uint64_t(s[2]) << 8 | s[3]) * cs) % std::min(disk, qcow_fuzz::kWindow)
                            / cs * cs;
    const uint64_t clen = std::min(cs, disk - cstart);
    op.off = cstart + (uint64_t(s[4]) << 8 | s[5]) * 512 % clen;
    op.len = std::min<uint64_t>(clen - (op.off - cstart), (uint64_t(s[6]) + 1) * 512);
    op.pattern = s[7];
    op.unmap = s[0] & 4 ? qcow::Unmap::kYes : qcow::Unmap::kNo;
    if (op.kind == Op::kCompressed || (op.kind == Op::kDiscard && (s[0] & 8))) op.off = cstart, op.len = clen;
    cluster.assign(clen, 0);
    if (!no_internal(drv.read(cstart, cluster)).is_ok()) return;
    qcow::Status st;
    std::vector<uint8_t> payload(op.kind == Op::kCompressed ? clen : op.len, op.pattern);
    switch (op.kind) {
      case Op::kWrite: st = drv.write(op.off, payload, qcow::Compress::kNo); break;
      case Op::kCompressed: st = drv.write(op.off, payload, qcow::Compress::kYes); break;
      case Op::kZero: st = drv.write_zeroes(op.off, op.len, op.unmap); break;
      case Op::kDiscard: st = drv.discard(op.off, op.len); break;
    }
    if (!no_internal(st).is_ok()) return;  // the image's state is not ours to predict any more
    expected(op, cs, discard_keeps, cluster, cstart);
    back.assign(clen, 0);
    if (!no_internal(drv.read(cstart, back)).is_ok()) return;
    if (back != cluster) oracle_failed("read after " + std::to_string(int(op.kind)) + " differs");
    last_start = cstart;
    checked_any = true;
  }
  if (!checked_any || !no_internal(drv.flush()).is_ok() || !no_internal(drv.close()).is_ok()) return;
  // The last cluster written must read the same from a fresh open of the flushed file.
  auto again = no_internal(qcow_fuzz::open_file(mem.get(), false));
  if (!again.is_ok()) oracle_failed("reopen after a clean close failed: " + again.status().message());
  back.assign(cluster.size(), 0);
  if (!no_internal((*again)->read(last_start, back)).is_ok()) oracle_failed("read after reopen failed");
  if (back != cluster) oracle_failed("data changed across close and reopen");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  read_only_pass(data, size);
  writable_pass(data, size);
  return 0;
}
