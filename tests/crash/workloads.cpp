// The crash workloads: what the image code does to a file, each kept small so
// that thousands of crash states can be judged by qemu-img in minutes. Base
// images are made by qemu-img and qemu-io, so what is judged starts from an
// image libqcow did not write.
#include <fmt/format.h>

#include <filesystem>
#include <optional>
#include <random>
#include <stdexcept>

#include "crash/harness.hpp"
#include "crash/tools.hpp"
#include "qcow/amend.hpp"
#include "qcow/bitmaps.hpp"
#include "qcow/chain.hpp"
#include "qcow/check.hpp"
#include "qcow/commit.hpp"
#include "qcow/rebase.hpp"
#include "qcow/snapshot.hpp"

namespace crash {
namespace {

using qcow::Unmap;

void tool(const std::vector<std::string>& argv) {
  std::string out;
  if (run_tool(argv, &out) != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    throw std::runtime_error("failed: " + cmd + "\n" + out);
  }
}

// qemu-img create -f qcow2 [-o opts] path size
std::string qcow2(const std::string& dir, const std::string& opts, uint64_t size, const std::string& name = "base.qcow2") {
  std::string path = dir + "/" + name;
  std::vector<std::string> argv = {"qemu-img", "create", "-q", "-f", "qcow2"};
  if (!opts.empty()) argv.insert(argv.end(), {"-o", opts});
  argv.insert(argv.end(), {path, std::to_string(size)});
  tool(argv);
  return path;
}

void qemu_io(const std::string& path, const std::vector<std::string>& cmds) {
  std::vector<std::string> argv = {"qemu-io", "-f", "qcow2"};
  for (const auto& c : cmds) argv.insert(argv.end(), {"-c", c});
  argv.push_back(path);
  tool(argv);
}

// A raw backing file with varied contents (not zeros, unlike unwritten clusters).
std::string raw_backing(const std::string& dir, uint64_t size) {
  Bytes b(size);
  std::mt19937_64 rng(4242);
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(rng() >> 56 | 1);
  std::string path = dir + "/backing.raw";
  write_file(path, b);
  return path;
}

struct Window {
  uint64_t start, end;
};

struct Gen {
  std::mt19937_64 rng;
  explicit Gen(uint64_t seed) : rng(seed) {}
  uint64_t rnd(uint64_t n) { return n ? rng() % n : 0; }
  Step write_in(const Window& w, uint64_t max_len, uint64_t align = 1) {
    Step s;
    s.kind = Step::kWrite;
    s.off = (w.start + rnd(w.end - w.start)) / align * align;
    s.len = std::min<uint64_t>(w.end - s.off, align > 1 ? (1 + rnd(max_len / align)) * align : 1 + rnd(max_len));
    if (!s.len) s.len = std::min<uint64_t>(align, w.end - w.start), s.off = w.start;
    s.seed = rng();
    return s;
  }
  Step range(Step::Kind k, const Window& w, uint64_t max_len, Unmap unmap = Unmap::kNo) {
    Step s;
    s.kind = k;
    s.off = w.start + rnd(w.end - w.start);
    s.len = 1 + rnd(std::min<uint64_t>(max_len, w.end - s.off));
    s.unmap = unmap;
    return s;
  }
};

Step flush() { return Step{Step::kFlush}; }

qcow::OpenOptions caches(uint64_t l2_bytes, uint64_t l2_entry, uint64_t refcount_bytes) {
  qcow::OpenOptions o;
  o.l2_cache_size = l2_bytes;
  o.l2_cache_entry_size = l2_entry;
  o.refcount_cache_size = refcount_bytes;
  return o;
}

// Random writes in windows, a flush every `every` steps.
std::vector<Step> writes(Gen& g, const std::vector<Window>& windows, int n, uint64_t max_len, uint64_t align, int every) {
  std::vector<Step> steps;
  for (int i = 0; i < n; ++i) {
    steps.push_back(g.write_in(windows[g.rnd(windows.size())], max_len, i % 3 == 0 ? align : 1));
    if (i % every == every - 1) steps.push_back(flush());
  }
  return steps;
}

Workload allocating(const std::string& name, const std::string& opts, uint64_t size, uint64_t max_len, uint64_t align,
                    qcow::OpenOptions open, uint64_t seed) {
  Workload w;
  w.name = name;
  w.what = fmt::format("allocating writes, {}", opts);
  w.prepare = [=](const std::string& d) { return qcow2(d, opts, size); };
  Gen g(seed);
  w.steps = writes(g, {{0, size}}, 30, max_len, align, 6);
  w.open = open;
  return w;
}

Workload over_backing(const std::string& name, const std::string& opts, uint64_t size, uint64_t backing_size,
                      qcow::OpenOptions open, uint64_t seed, bool zero_and_discard) {
  Workload w;
  w.name = name;
  w.what = fmt::format("copy-on-write over a raw backing file, {}", opts);
  w.prepare = [=](const std::string& d) {
    std::string b = raw_backing(d, backing_size);
    return qcow2(d, "backing_file=" + b + ",backing_fmt=raw" + (opts.empty() ? "" : "," + opts), size);
  };
  Gen g(seed);
  for (int i = 0; i < 30; ++i) {
    const uint64_t r = g.rnd(10);
    if (r < 6 || !zero_and_discard) w.steps.push_back(g.write_in({0, size}, 6000, 2048));
    else if (r < 7) w.steps.push_back(g.write_in({0, size}, 40000));
    else if (r < 9) w.steps.push_back(g.range(Step::kZero, {0, size}, 150000, g.rnd(2) ? Unmap::kYes : Unmap::kNo));
    else w.steps.push_back(g.range(Step::kDiscard, {0, size}, 200000));
    if (i % 6 == 5) w.steps.push_back(flush());
  }
  w.open = open;
  return w;
}

Workload compressed() {
  Workload w;
  w.name = "compressed";
  w.what = "compressed writes, partial overwrites of compressed clusters (64 KiB, zstd)";
  const uint64_t cs = 65536, size = 16 * cs + 4096;
  w.prepare = [=](const std::string& d) { return qcow2(d, "compression_type=zstd", size); };
  Gen g(31);
  for (int i = 0; i < 32; ++i) {
    Step s;
    if (g.rnd(10) < 6) {
      s.kind = Step::kCompressed;
      uint64_t c = g.rnd(17);
      s.off = c * cs;
      s.len = c == 16 ? 4096 : std::min<uint64_t>((1 + g.rnd(2)) * cs, 16 * cs - s.off);
      s.seed = g.rng();
      s.compressible = g.rnd(5) != 0;
    } else {
      s = g.write_in({0, size}, 30000);
    }
    w.steps.push_back(s);
    if (i % 5 == 4) w.steps.push_back(flush());
  }
  return w;
}

Workload zeroes(const std::string& name, const std::string& opts, uint64_t size, uint64_t seed) {
  Workload w;
  w.name = name;
  w.what = fmt::format("write_zeroes with and without unmap over data, {}", opts);
  w.prepare = [=](const std::string& d) {
    std::string p = qcow2(d, opts, size);
    qemu_io(p, {fmt::format("write -P 0x61 0 {}", size)});
    return p;
  };
  Gen g(seed);
  for (int i = 0; i < 24; ++i) {
    if (i % 3 == 2) w.steps.push_back(g.write_in({0, size}, 30000));
    else w.steps.push_back(g.range(Step::kZero, {0, size}, 120000, i % 4 == 3 ? Unmap::kNo : Unmap::kYes));
    if (i % 4 == 3) w.steps.push_back(flush());
  }
  w.open = caches(4 * 4096, 0, 4 * 4096);
  return w;
}

Workload discards(const std::string& name, const std::string& opts, bool backing, uint64_t seed) {
  Workload w;
  const uint64_t size = 512 << 10;
  w.name = name;
  w.what = fmt::format("discards and reuse of freed clusters, {}{}", opts, backing ? ", over a backing file" : "");
  w.v2_with_backing = backing && opts.find("compat=0.10") != std::string::npos;
  w.prepare = [=](const std::string& d) {
    std::string o = opts;
    if (backing) o += ",backing_file=" + raw_backing(d, size) + ",backing_fmt=raw";
    std::string p = qcow2(d, o, size);
    qemu_io(p, {fmt::format("write -P 0x62 0 {}", size / 2), fmt::format("write -P 0x63 {} 64k", size - (64 << 10))});
    return p;
  };
  Gen g(seed);
  for (int i = 0; i < 24; ++i) {
    if (i % 3 == 2) w.steps.push_back(g.write_in({0, size}, 40000));
    else w.steps.push_back(g.range(Step::kDiscard, {0, size}, 150000));
    if (i % 4 == 3) w.steps.push_back(flush());
  }
  return w;
}

// 512-byte clusters with 64-bit refcounts: a block covers 64 clusters and a one-cluster
// table 64 blocks, so allocation creates blocks and moves the refcount table.
Workload refcount_growth() {
  Workload w;
  w.name = "refcount-growth";
  w.what = "refcount block creation and refcount table growth (512 B clusters, refcount_bits=64)";
  const uint64_t size = 3 << 20;
  w.prepare = [=](const std::string& d) { return qcow2(d, "cluster_size=512,refcount_bits=64", size); };
  Gen g(61);
  for (int i = 0; i < 24; ++i) {
    Step s;
    s.kind = Step::kWrite;
    s.len = (96 << 10) + g.rnd(40000);
    s.off = g.rnd(size - s.len);
    s.seed = g.rng();
    w.steps.push_back(s);
    if (i % 5 == 4) w.steps.push_back(flush());
  }
  w.open = caches(8 * 512, 0, 4 * 512);
  return w;
}

// 512-byte clusters: each L1 entry maps 32 KiB, so every resize grows the L1 table.
Workload resize() {
  Workload w;
  w.name = "resize-l1-growth";
  w.what = "resize growing the L1 table, writes across the old end (512 B clusters)";
  const uint64_t sizes[] = {200 << 10, 700 << 10, 1536 << 10};
  w.prepare = [=](const std::string& d) { return qcow2(d, "cluster_size=512", sizes[0]); };
  Gen g(71);
  for (int phase = 0; phase < 3; ++phase) {
    if (phase > 0) {
      Step r;
      r.kind = Step::kResize;
      r.off = sizes[phase];
      w.steps.push_back(r);
      if (phase == 1) w.steps.push_back(flush());
    }
    const Window win{phase ? sizes[phase - 1] - 4096 : 0, sizes[phase]};
    for (int i = 0; i < 8; ++i) w.steps.push_back(g.write_in(win, 30000));
    w.steps.push_back(flush());
  }
  return w;
}

// Writes into clusters and L2 tables an internal snapshot shares (refcount 2): every
// first write copies them; the snapshot must read as before in every state.
Workload snapshot_sharing(const std::string& name, const std::string& opts, uint64_t seed) {
  Workload w;
  const uint64_t size = 2 << 20;
  w.name = name;
  w.what = fmt::format("writes, zeroes and discards sharing clusters with an internal snapshot, {}", opts);
  w.snapshots = {"s1", "s2"};
  w.prepare = [=](const std::string& d) {
    std::string p = qcow2(d, opts, size);
    qemu_io(p, {"write -P 0x71 0 1M", "write -c -P 0x72 1M 128k", "write -z 1536k 64k"});
    tool({"qemu-img", "snapshot", "-c", "s1", p});
    qemu_io(p, {"write -P 0x73 256k 64k"});
    tool({"qemu-img", "snapshot", "-c", "s2", p});
    return p;
  };
  Gen g(seed);
  for (int i = 0; i < 26; ++i) {
    const uint64_t r = g.rnd(10);
    if (r < 7) w.steps.push_back(g.write_in({0, size}, 20000, 4096));
    else if (r < 9) w.steps.push_back(g.range(Step::kZero, {0, size}, 100000, Unmap::kYes));
    else w.steps.push_back(g.range(Step::kDiscard, {0, size}, 200000));
    if (i % 5 == 4) w.steps.push_back(flush());
  }
  return w;
}

// Shrinking and growing again with an internal snapshot sharing clusters (its
// references survive the shrink); shrinks to an end inside a cluster keep that
// cluster's tail, as QEMU does. 4 KiB clusters: several L2 tables lie past each end.
Workload shrink(const std::string& name, const std::string& opts, uint64_t cluster, uint64_t seed) {
  Workload w;
  const uint64_t size = 12 * cluster * 512;  // 6 L2 tables (3 with extended L2)
  w.name = name;
  w.what = fmt::format("shrink and grow again, writes across the ends, an internal snapshot sharing clusters, {}", opts);
  w.snapshots = {"s1"};
  w.prepare = [=](const std::string& d) {
    std::string p = qcow2(d, opts, size);
    qemu_io(p, {fmt::format("write -P 0x31 0 {}", size / 2), fmt::format("write -c -P 0x32 {} {}", size / 2, 4 * cluster),
                fmt::format("write -z {} {}", size / 2 + 8 * cluster, 8 * cluster),
                fmt::format("write -P 0x33 {} {}", size - 16 * cluster, 16 * cluster)});
    tool({"qemu-img", "snapshot", "-c", "s1", p});
    qemu_io(p, {fmt::format("write -P 0x34 {} {}", size / 4, 8 * cluster), fmt::format("write -P 0x35 {} {}", size - 4 * cluster, cluster)});
    return p;
  };
  Gen g(seed);
  auto resize_to = [&](uint64_t n) {
    Step r;
    r.kind = Step::kResize;
    r.off = n;
    w.steps.push_back(r);
  };
  const uint64_t small = size / 3 + 3 * cluster + 512, medium = size * 2 / 3, tiny = 2 * cluster * 64;
  for (int i = 0; i < 4; ++i) w.steps.push_back(g.write_in({0, size}, 3 * cluster, 512));
  w.steps.push_back(flush());
  resize_to(small);
  for (int i = 0; i < 4; ++i) w.steps.push_back(g.write_in({small / 2, small}, 2 * cluster, 512));
  w.steps.push_back(flush());
  resize_to(medium);
  for (int i = 0; i < 4; ++i) w.steps.push_back(g.write_in({small - cluster, medium}, 2 * cluster, 512));
  resize_to(tiny);
  w.steps.push_back(g.write_in({0, tiny}, 2 * cluster, 512));
  w.steps.push_back(flush());
  resize_to(size);
  w.steps.push_back(g.write_in({tiny, size}, 2 * cluster, 512));
  return w;
}

// Growth over a longer raw backing file (the new part must read zeros: zero flags,
// explicit zeros for a partial unit) and growth with preallocation.
Workload grow(const std::string& name, const std::string& opts, bool backing, uint64_t seed) {
  Workload w;
  const uint64_t size = 640 << 10;
  w.name = name;
  w.what = fmt::format("growth {}, shrinks in between, {}", backing ? "over a longer raw backing file" : "with preallocation", opts);
  w.grows_over_backing = backing;
  w.prepare = [=](const std::string& d) {
    std::string o = opts;
    if (backing) o += std::string(o.empty() ? "" : ",") + "backing_file=" + raw_backing(d, 4 << 20) + ",backing_fmt=raw";
    std::string p = qcow2(d, o, size);
    qemu_io(p, {"write -P 0x41 0 100k", "write -P 0x42 500k 100k"});
    return p;
  };
  Gen g(seed);
  // Metadata preallocation last: after a shrink freed clusters that still hold data.
  const qcow::Preallocation modes[] = {qcow::Preallocation::kFalloc, qcow::Preallocation::kFull,
                                       qcow::Preallocation::kOff, qcow::Preallocation::kMetadata};
  const uint64_t sizes[] = {(1 << 20) + 4096, 3 << 20, 1 << 20, (2 << 20) + 65536};
  uint64_t current = size;
  for (int i = 0; i < 4; ++i) {
    Step r;
    r.kind = Step::kResize;
    r.off = sizes[i];
    if (!backing && sizes[i] > current) r.prealloc = modes[i];
    w.steps.push_back(r);
    const uint64_t end = std::min(current, sizes[i]);  // writes across the old end, or the new one
    w.steps.push_back(g.write_in({end - std::min<uint64_t>(end, 8192), sizes[i]}, 20000, 512));
    if (i % 2) w.steps.push_back(flush());
    current = sizes[i];
  }
  return w;
}

// ---- offline operations ----

// Many small L2 tables (16 KiB clusters: one table maps 32 MiB, 16 MiB with extended L2),
// each with data, zeroes and partial clusters, so an amend writes hundreds of tables
// between two flushes; plus compressed clusters, and a snapshot sharing most of them.
std::string filled_for_amend(const std::string& d, const std::string& opts, bool backing, bool snapshot,
                             bool compressed) {
  const uint64_t size = 4ull << 30;
  std::string o = opts.find("cluster_size=") == std::string::npos ? "cluster_size=16k" : "";
  if (!opts.empty()) o += (o.empty() ? "" : ",") + opts;
  if (backing) o += ",backing_file=" + raw_backing(d, 1 << 20) + ",backing_fmt=raw";
  std::string p = qcow2(d, o, size);
  std::vector<std::string> cmds;
  for (uint64_t off = 0, i = 0; off < size; off += 16ull << 20, ++i) {
    cmds.push_back(fmt::format("write -q -P {} {} 2k", 0x40 + i % 64, off + (i % 7) * 4096));
    if (i % 3 == 0) cmds.push_back(fmt::format("write -q -z {} 16k", off + (1 << 20)));
    if (i % 5 == 0 && compressed)  // packed: several share a host cluster
      cmds.push_back(fmt::format("write -q -c -P {} {} 16k", 0x80 + i % 64, off + (2 << 20)));
  }
  cmds.push_back("write -q -P 0x45 0 40k");  // over the backing file's data
  qemu_io(p, cmds);
  if (snapshot) {
    tool({"qemu-img", "snapshot", "-c", "s1", p});
    qemu_io(p, {"write -q -P 0x46 0 20k", "write -q -P 0x47 64M 16k", "write -q -z 1G 32k"});
  }
  return p;
}

Workload amend(const std::string& name, const std::string& opts, bool backing, bool snapshot,
               std::function<void(qcow::AmendOptions&)> set, const std::string& change, bool compressed = true) {
  Workload w;
  w.name = name;
  w.what = fmt::format("amend {} ({}{}{})", change, opts.empty() ? "defaults" : opts, backing ? ", backing file" : "",
                       snapshot ? ", internal snapshot" : "");
  if (snapshot) w.snapshots = {"s1"};
  w.prepare = [=](const std::string& d) { return filled_for_amend(d, opts, backing, snapshot, compressed); };
  w.operation = [set](const std::string& path, const qcow::FileWrapFn& wrap) {
    qcow::AmendOptions a;
    set(a);
    a.wrap_file = wrap;
    return qcow::amend_image(path, a);
  };
  return w;
}

// Data, compressed and zero clusters spread over several L2 tables (the callers' cluster
// sizes give 4 to 40 of them), two snapshots and writes after each, so the snapshots
// share some clusters with each other and the active image, and not others. With
// `resized`, the image grows between the snapshots (applying s1 shrinks it back).
std::string with_snapshots(const std::string& d, const std::string& opts, uint64_t size, bool resized) {
  std::string p = qcow2(d, opts, size);
  std::vector<std::string> cmds;
  for (uint64_t off = 0, i = 0; off + (96 << 10) <= size; off += size / 16, ++i) {
    cmds.push_back(fmt::format("write -q -P {} {} 40k", 0x50 + i, off + (i % 3) * 4096));
    if (i % 4 == 1) cmds.push_back(fmt::format("write -q -c -P {} {} 32k", 0x70 + i, off + (64 << 10)));
    if (i % 4 == 2) cmds.push_back(fmt::format("write -q -z {} 32k", off + (64 << 10)));
  }
  qemu_io(p, cmds);
  tool({"qemu-img", "snapshot", "-c", "s1", p});
  qemu_io(p, {"write -q -P 0x61 0 24k", fmt::format("write -q -P 0x62 {} 8k", size / 2)});
  if (resized) tool({"qemu-img", "resize", "-q", p, std::to_string(size + size / 2)});
  tool({"qemu-img", "snapshot", "-c", "s2", p});
  qemu_io(p, {"write -q -P 0x63 4k 8k", fmt::format("write -q -z {} 16k", size / 4)});
  return p;
}

// qcow::create_snapshot / delete_snapshot / apply_snapshot as offline operations.
Workload snapshot_op(const std::string& name, const std::string& opts, uint64_t size, const std::string& op,
                     Workload::After after) {
  Workload w;
  w.name = name;
  w.what = fmt::format("snapshot {} ({}), two snapshots sharing clusters with the active image", op, opts);
  w.snapshots = {"s1", "s2"};
  const bool apply = op.rfind("apply", 0) == 0;
  w.prepare = [=](const std::string& d) { return with_snapshots(d, opts, size, apply); };
  w.after = std::move(after);
  w.operation = [op](const std::string& path, const qcow::FileWrapFn& wrap) -> qcow::Status {
    qcow::SnapshotOptions o;
    o.wrap_file = wrap;
    const std::string arg = op.substr(op.find(' ') + 1);
    if (op.rfind("create", 0) == 0) return qcow::create_snapshot(path, arg, o).status();
    if (op.rfind("delete", 0) == 0) return qcow::delete_snapshot(path, arg, qcow::SnapshotMatch::kName, o);
    return qcow::apply_snapshot(path, arg, qcow::SnapshotMatch::kIdOrName, o);
  };
  return w;
}

// qcow::store_bitmaps (convert --bitmaps' last step): two bitmaps added to an image that
// has an enabled one of its own (rewritten all dirty), the old structures freed after the
// header commit. Guest content never changes; the bitmaps appear whole or not at all.
Workload bitmaps_store(const std::string& name, const std::string& opts) {
  Workload w;
  w.name = name;
  w.what = fmt::format("store two persistent bitmaps beside an enabled one ({})", opts);
  w.prepare = [=](const std::string& d) {
    std::string p = qcow2(d, opts, 4 << 20);
    tool({"qemu-img", "bitmap", "--add", "-g", "4k", p, "old"});
    qemu_io(p, {"write -q -P 0x41 0 300k", "write -q -P 0x42 2M 64k"});
    return p;
  };
  w.operation = [](const std::string& path, const qcow::FileWrapFn& wrap) -> qcow::Status {
    qcow::OpenOptions o;
    o.writable = true;
    o.wrap_file = wrap;
    auto img = qcow::Image::open(path, o);
    if (!img) return img.status();
    std::vector<qcow::DirtyBitmap> b(2);
    b[0].name = "fine";
    b[0].granularity_bits = 9;  // 8 KiB of bits: several clusters of data
    b[0].bits.assign(((4 << 20) >> 9) / 8, 0);
    for (size_t i = 0; i < b[0].bits.size(); i += 3) b[0].bits[i] = uint8_t(0x5a + i);
    b[1].name = "coarse";
    b[1].granularity_bits = 20;
    b[1].auto_ = true;
    b[1].bits = {0x05};
    return qcow::store_bitmaps(*img, b);
  };
  return w;
}

// Damage: a data cluster's refcount set to 0 (a corruption: the repair must raise it, or
// rebuild) and the header cluster's set to 3 (a leak).
Workload repair(const std::string& name, const std::string& opts) {
  Workload w;
  w.name = name;
  w.what = fmt::format("check -r all of a damaged image (refcount 0 on a data cluster, a leak), {}", opts);
  w.verdict = Verdict::kRepairable;
  w.prepare = [=](const std::string& d) {
    std::string p = qcow2(d, opts, 16 << 20);
    qemu_io(p, {"write -P 0x51 1M 256k", "write -P 0x52 9M 8k", "write -z 12M 64k"});
    Bytes f = read_file(p);
    auto be64 = [&](uint64_t off) {
      uint64_t v = 0;
      for (int i = 0; i < 8; ++i) v = v << 8 | f[off + i];
      return v;
    };
    const uint64_t cs = image_cluster_size(f);
    const uint64_t reftable = be64(48), block = be64(reftable) & ~0x1ffull;
    // The data at 1 MiB: the first allocated data cluster after the metadata (L2 table).
    const uint64_t l2 = be64(be64(40)) & 0x00fffffffffffe00ull;
    const uint64_t entry = (1 << 20) / cs * (opts.find("extended_l2=on") != std::string::npos ? 16 : 8);
    const uint64_t data_cluster = (be64(l2 + entry) & 0x00fffffffffffe00ull) / cs;
    f[block + 2 * data_cluster] = 0;
    f[block + 2 * data_cluster + 1] = 0;
    f[block] = 0;
    f[block + 1] = 3;
    write_file(p, f);
    return p;
  };
  w.operation = [](const std::string& path, const qcow::FileWrapFn& wrap) -> qcow::Status {
    qcow::CheckOptions o;
    o.repair = qcow::Repair::kAll;
    o.wrap_file = wrap;
    auto r = qcow::check_image(path, o);
    return r.status();
  };
  return w;
}

// ---- rebase and commit ----

// Guest data of the rebase and commit images: pattern writes (some partial and
// unaligned), zeros, and a discard, so that layers differ in every way.
std::vector<std::string> layer_data(uint64_t size, int seed) {
  std::vector<std::string> cmds;
  Gen g(uint64_t(seed) * 7919);
  for (int i = 0; i < 14; ++i) {
    const uint64_t len = 512 + g.rnd(90000), off = g.rnd(size - len);
    if (i % 5 == 4) cmds.push_back(fmt::format("write -q -z {} {}", off, len));
    else cmds.push_back(fmt::format("write -q -P {} {} {}", 0x20 + seed * 16 + i, off, len));
  }
  return cmds;
}

qcow::Result<qcow::Image> open_image(const std::string& path, qcow::OpenOptions o) { return qcow::Image::open(path, o); }

// Rebase of the image (an overlay of old.qcow2) onto `new_name` ("" flattens): the
// image must read the same in every state, through whichever backing file its header names.
Workload rebase(const std::string& name, const std::string& overlay_opts, const std::string& old_opts,
                const std::string& new_opts, const std::string& new_name, bool compress) {
  Workload w;
  w.name = name;
  w.what = fmt::format("rebase{} of an overlay ({}) from old.qcow2 ({}) onto {}", compress ? " -c" : "", overlay_opts,
                       old_opts, new_name.empty() ? "nothing (flatten)" : new_name + " (" + new_opts + ")");
  const uint64_t size = 2 << 20;
  w.prepare = [=](const std::string& d) {
    const std::string old_path = qcow2(d, old_opts, size, "old.qcow2");
    qemu_io(old_path, layer_data(size, 1));
    if (!new_name.empty()) {
      const std::string new_path = qcow2(d, new_opts, size, new_name);
      // Much the same data with some differences: only those units must be copied.
      std::vector<std::string> cmds = layer_data(size, 1);
      cmds.resize(7);
      for (int i = 0; i < 6; ++i) cmds.push_back(fmt::format("write -q -P {} {} {}", 0x70 + i, 300000 * i + 4000, 5000 + 9000 * i));
      qemu_io(new_path, cmds);
    }
    const std::string p = qcow2(d, "backing_file=old.qcow2,backing_fmt=qcow2," + overlay_opts, size);
    std::vector<std::string> own = layer_data(size, 3);
    own.resize(5);
    qemu_io(p, own);
    return p;
  };
  w.operation = [new_name, compress](const std::string& path, const qcow::FileWrapFn& wrap) -> qcow::Status {
    std::lock_guard lock(spawn_mutex());  // no child may inherit (and keep) a locked descriptor
    const std::string dir = std::filesystem::path(path).parent_path().string();
    qcow::OpenOptions o;
    o.writable = true;
    o.wrap_file = wrap;
    QCOW_ASSIGN_OR_RETURN(qcow::Image img, open_image(path, o));
    std::optional<qcow::Image> nb;
    qcow::RebaseOptions r;
    r.compress = compress ? qcow::Compress::kYes : qcow::Compress::kNo;
    if (!new_name.empty()) {
      r.new_backing_layer = qcow::find_backing_image(img.chain_info(), qcow::backing_file_path(path, new_name));
      QCOW_ASSIGN_OR_RETURN(qcow::Image n, open_image(dir + "/" + new_name, {}));
      nb.emplace(std::move(n));
    }
    QCOW_TRY(qcow::rebase_copy_differences(img, nb ? &*nb : nullptr, r).status());
    QCOW_TRY(qcow::set_backing_file(img, new_name, new_name.empty() ? std::nullopt : std::optional<std::string>("qcow2")));
    return img.close();
  };
  return w;
}

// Commit of top.qcow2 (an overlay of the judged image) into the judged image, then
// top emptied: the base reads as before or as top read, byte by byte, until done.
Workload commit(const std::string& name, const std::string& base_opts, uint64_t base_size, const std::string& top_opts,
                uint64_t top_size, bool snapshot) {
  Workload w;
  w.name = name;
  w.what = fmt::format("commit of an overlay ({}, {} KiB) into its base ({}, {} KiB{})", top_opts, top_size >> 10,
                       base_opts, base_size >> 10, snapshot ? ", internal snapshot" : "");
  w.operation_result = "top.qcow2";
  if (snapshot) w.snapshots = {"s1"};
  w.prepare = [=](const std::string& d) {
    const std::string p = qcow2(d, base_opts, base_size);
    qemu_io(p, layer_data(base_size, 1));
    if (snapshot) {
      tool({"qemu-img", "snapshot", "-c", "s1", p});
      qemu_io(p, {"write -q -P 0x66 64k 100k"});
    }
    write_file(d + "/work.qcow2", read_file(p));  // the judged copy, which top.qcow2 names
    const std::string top = qcow2(d, "backing_file=work.qcow2,backing_fmt=qcow2," + top_opts, top_size, "top.qcow2");
    qemu_io(top, layer_data(top_size, 2));
    write_file(d + "/top.orig", read_file(top));
    return p;
  };
  w.operation = [](const std::string& path, const qcow::FileWrapFn& wrap) -> qcow::Status {
    std::lock_guard lock(spawn_mutex());
    const std::string dir = std::filesystem::path(path).parent_path().string(), top = dir + "/top.qcow2";
    write_file(top, read_file(dir + "/top.orig"));  // each run starts from the same overlay
    qcow::OpenOptions lo;
    lo.writable = true;
    lo.open_backing = false;
    QCOW_ASSIGN_OR_RETURN(qcow::Image image, open_image(top, lo));
    qcow::OpenOptions vo;
    vo.force_share = true;
    QCOW_ASSIGN_OR_RETURN(qcow::Image view, open_image(top, vo));
    qcow::OpenOptions bo;
    bo.writable = true;
    bo.format = qcow::Format::kQcow2;
    bo.wrap_file = wrap;
    QCOW_ASSIGN_OR_RETURN(qcow::Image base, open_image(path, bo));
    QCOW_TRY(qcow::commit_into_base(view, base, 1).status());
    QCOW_TRY(base.close());
    QCOW_TRY(qcow::make_image_empty(image));
    return image.close();
  };
  return w;
}

}  // namespace

std::vector<Workload> all_workloads() {
  std::vector<Workload> w;
  // Allocation: 512 B to 2 MiB clusters, standard and extended L2, small caches that evict mid-request.
  w.push_back(allocating("alloc-512", "cluster_size=512", 1 << 20, 6000, 512, caches(4 * 512, 0, 4 * 512), 11));
  w.push_back(allocating("alloc-4k", "cluster_size=4k", 3 << 20, 20000, 4096, caches(4 * 512, 512, 4 * 4096), 12));
  w.push_back(allocating("alloc-64k-ext", "extended_l2=on", (1 << 20) + 4096, 8192, 2048, caches(4 * 4096, 4096, 0), 13));
  w.push_back(allocating("alloc-2m-ext", "cluster_size=2M,extended_l2=on", 6 << 20, 200000, 64 << 10, {}, 14));
  w.push_back(allocating("alloc-16k-ext", "cluster_size=16k,extended_l2=on", 2 << 20, 3000, 512, caches(4 * 512, 512, 0), 15));
  // Copy-on-write over backing files.
  w.push_back(over_backing("cow-std", "", 1 << 20, (640 << 10) + 1000, {}, 21, true));
  w.push_back(over_backing("cow-ext", "extended_l2=on", 1 << 20, (640 << 10) + 1000, {}, 22, true));
  w.push_back(over_backing("cow-1k-small-cache", "cluster_size=1k", 512 << 10, 512 << 10, caches(4 * 512, 512, 4 * 1024),
                           23, false));
  w.push_back(over_backing("cow-2m-ext", "cluster_size=2M,extended_l2=on", 4 << 20, 3 << 20, {}, 24, true));
  w.push_back(compressed());
  w.push_back(zeroes("zero-std", "cluster_size=4k", 512 << 10, 42));
  w.push_back(zeroes("zero-ext", "extended_l2=on", 1 << 20, 41));
  w.push_back(discards("discard-v3", "cluster_size=4k", false, 53));
  w.push_back(discards("discard-v2", "cluster_size=4k,compat=0.10", false, 52));
  w.push_back(discards("discard-v2-backing", "cluster_size=4k,compat=0.10", true, 54));
  w.push_back(refcount_growth());
  w.push_back(resize());
  w.push_back(snapshot_sharing("snapshot-std", "cluster_size=64k", 81));
  w.push_back(snapshot_sharing("snapshot-ext", "extended_l2=on", 82));
  // amend: every option it changes in place.
  auto ext_on = [](qcow::AmendOptions& a) { a.extended_l2 = true; };
  auto ext_off = [](qcow::AmendOptions& a) { a.extended_l2 = false; };
  w.push_back(amend("amend-ext-on", "", false, false, ext_on, "extended_l2=on"));
  w.push_back(amend("amend-ext-on-snapshot", "", false, true, ext_on, "extended_l2=on"));
  w.push_back(amend("amend-ext-off-backing", "extended_l2=on", true, false, ext_off, "extended_l2=off"));
  w.push_back(amend("amend-ext-off-snapshot", "extended_l2=on", false, true, ext_off, "extended_l2=off"));
  w.push_back(amend("amend-compat-v2", "", true, false, [](qcow::AmendOptions& a) { a.version = 2; }, "compat=0.10"));
  w.push_back(amend("amend-compat-v3", "compat=0.10", false, false, [](qcow::AmendOptions& a) { a.version = 3; },
                    "compat=1.1"));
  // 1-bit refcounts cannot count the references to a cluster packed with compressed data.
  w.push_back(amend("amend-refcount-1", "", false, false, [](qcow::AmendOptions& a) { a.refcount_bits = 1; },
                    "refcount_bits=1", false));
  w.push_back(amend("amend-refcount-2-snapshot", "", false, true, [](qcow::AmendOptions& a) { a.refcount_bits = 2; },
                    "refcount_bits=2", false));
  // 512-byte clusters: a 64-bit refcount block covers 64 clusters, so the rebuild writes many.
  w.push_back(amend("amend-refcount-64", "cluster_size=512", false, false,
                    [](qcow::AmendOptions& a) { a.refcount_bits = 64; }, "refcount_bits=64"));
  // Version 2 has no refcount_order: the header is upgraded (one commit), then the width changes (another).
  w.push_back(amend("amend-v2-refcount-8", "compat=0.10", false, false,
                    [](qcow::AmendOptions& a) { a.version = 3; a.refcount_bits = 8; }, "compat=1.1,refcount_bits=8"));
  w.push_back(amend("amend-lazy", "", false, false, [](qcow::AmendOptions& a) { a.lazy_refcounts = true; },
                    "lazy_refcounts=on"));
  // Snapshots: create, delete and apply commit with one header write.
  using After = Workload::After;
  const After both{"", {{"s1", "s1"}, {"s2", "s2"}}};
  for (const auto& [suffix, opts, size] : {std::tuple<std::string, std::string, uint64_t>{"std", "cluster_size=4k", 8 << 20},
                                           {"ext", "cluster_size=16k,extended_l2=on", 40 << 20},
                                           {"512", "cluster_size=512,refcount_bits=64", 2 << 20}}) {
    w.push_back(snapshot_op("snapshot-create-" + suffix, opts, size, "create s3",
                            After{"", {{"s1", "s1"}, {"s2", "s2"}, {"s3", ""}}}));
    w.push_back(snapshot_op("snapshot-delete-" + suffix, opts, size, "delete s1", After{"", {{"s2", "s2"}}}));
    w.push_back(snapshot_op("snapshot-apply-" + suffix, opts, size, "apply s1", After{"s1", both.snapshots}));
  }
  // Shrinking and growing (guest operations: Image::resize).
  w.push_back(shrink("shrink-std", "cluster_size=4k", 4096, 91));
  w.push_back(shrink("shrink-ext", "cluster_size=16k,extended_l2=on", 16384, 92));
  w.push_back(grow("grow-backing-std", "cluster_size=4k", true, 93));
  w.push_back(grow("grow-backing-ext", "cluster_size=16k,extended_l2=on", true, 94));
  w.push_back(grow("grow-prealloc-std", "cluster_size=4k", false, 95));
  w.push_back(grow("grow-prealloc-ext", "cluster_size=16k,extended_l2=on", false, 96));
  w.push_back(bitmaps_store("bitmaps-store-4k", "cluster_size=4k"));
  w.push_back(bitmaps_store("bitmaps-store-512", "cluster_size=512"));
  w.push_back(repair("repair-std", "cluster_size=64k"));
  w.push_back(repair("repair-ext", "extended_l2=on"));
  // rebase (the overlay is judged) and commit (the base is judged).
  w.push_back(rebase("rebase-ext", "extended_l2=on", "cluster_size=4k", "cluster_size=64k", "new.qcow2", false));
  w.push_back(rebase("rebase-2m-ext-over-64k", "cluster_size=2M,extended_l2=on", "", "", "new.qcow2", false));
  w.push_back(rebase("rebase-flatten-512", "cluster_size=512", "cluster_size=64k", "", "", false));
  w.push_back(rebase("rebase-compressed", "cluster_size=64k", "cluster_size=16k,extended_l2=on", "", "new.qcow2", true));
  w.push_back(rebase("rebase-longer-name", "cluster_size=64k", "", "", "a-much-longer-backing-file-name.qcow2", false));
  w.push_back(commit("commit-ext-base", "extended_l2=on", 2 << 20, "cluster_size=4k", 2 << 20, false));
  w.push_back(commit("commit-std-base-grows", "cluster_size=64k", 1 << 20, "extended_l2=on,cluster_size=16k", 3 << 20, false));
  w.push_back(commit("commit-base-snapshot", "cluster_size=16k", 2 << 20, "cluster_size=64k", 2 << 20, true));
  w.push_back(commit("commit-v2-base", "compat=0.10,cluster_size=4k", 1 << 20, "extended_l2=on", 1 << 20, false));
  return w;
}

}  // namespace crash
