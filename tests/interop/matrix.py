#!/usr/bin/env python3
"""QEMU interoperability matrix for qimg, both directions.

Every case is <direction>/<config>:

  q2i  qemu writes, qimg reads: qemu-img create + qemu-io workload, then
       qimg convert -O raw (byte-exact against the same workload applied with
       qemu-io -f raw to a raw file), qimg io read -P spot checks (and one
       deliberate mismatch that must exit 1), qimg info vs qemu-img info
       (key facts), qimg map vs qemu-img map (JSON lists, equal).
  i2q  qimg writes, qemu reads: qimg create + qimg io with the same workload,
       then qemu-img check (clean), qemu-img compare against the expected raw,
       qemu-img info shows the requested options; both tools must also agree
       on map/info of that file.
  cvt  qimg convert raw->qcow2 with the config's options (qemu-img check +
       compare + info), and qemu-made qcow2 -> qimg convert -O qcow2 with
       other options -> qemu-img check + compare.

Usage:
  matrix.py --list
  matrix.py --qimg PATH --case NAME      (one case, in a fresh temp dir)
  matrix.py --qimg PATH --all [-k SUBSTR] (sequentially; for manual runs)

The work directory is removed on success and kept (its path printed) on failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass, field

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (KiB, MiB, CaseFailure, TempDir, diff_dicts, diff_json_lists,  # noqa: E402
                    first_mismatch, io_args, log, main_guard, raw_equivalent, run, run_json,
                    size_str, spot_checks, workload)
from qimgtest import require_tools  # noqa: E402  (common.py put tests/support on the path)

QEMU_IMG = os.environ.get("QEMU_IMG", "qemu-img")
QEMU_IO = os.environ.get("QEMU_IO", "qemu-io")


@dataclass
class Config:
    name: str
    compat: str = "1.1"
    cluster_size: int = 64 * KiB
    extended_l2: bool = False
    refcount_bits: int | None = None      # None: leave the default (16)
    lazy_refcounts: bool = False
    preallocation: str = "off"
    compression_type: str | None = None   # None: leave the default (zlib)
    compress: bool = False                # workload uses compressed writes
    chain: str | None = None              # None, "raw" or "qcow2": depth-2 backing chain
    snapshot: bool = False                # internal snapshot between two workload phases
    data_file: str | None = None          # None, "on" or "raw" (data_file_raw=on): external data file
    explicit: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return max(16 * MiB, 40 * self.cluster_size)

    def opts(self, *, prealloc: bool = True, data_name: str = "data.raw") -> str:
        """Creation options; an external data file is named data_name (one per image)."""
        o = [f"compat={self.compat}", f"cluster_size={size_str(self.cluster_size)}"]
        if self.data_file:
            o.append(f"data_file={data_name}")
            if self.data_file == "raw":
                o.append("data_file_raw=on")
        if self.extended_l2:
            o.append("extended_l2=on")
        if self.refcount_bits is not None:
            o.append(f"refcount_bits={self.refcount_bits}")
        if self.lazy_refcounts:
            o.append("lazy_refcounts=on")
        if prealloc and self.preallocation != "off":
            o.append(f"preallocation={self.preallocation}")
        if self.compression_type:
            o.append(f"compression_type={self.compression_type}")
        return ",".join(o)

    def expected_info(self) -> dict:
        """format-specific data qemu-img info must show for an image made with opts()."""
        d = {"compat": self.compat, "refcount-bits": self.refcount_bits or 16}
        if self.compat == "1.1":
            d["corrupt"] = False
            d["lazy-refcounts"] = self.lazy_refcounts
            d["extended-l2"] = self.extended_l2
            d["compression-type"] = self.compression_type or "zlib"
        if self.data_file:
            d["data-file-raw"] = self.data_file == "raw"
        return d

    def other(self) -> "Config":
        """A different option set for qcow2 -> qcow2 conversion."""
        if self.extended_l2:
            return Config(name="other", compat="0.10",
                          cluster_size=4 * KiB if self.cluster_size != 4 * KiB else 64 * KiB,
                          compression_type=None, compress=self.compress)
        comp = None
        if self.compress:
            comp = "zstd" if (self.compression_type or "zlib") == "zlib" else "zlib"
        return Config(name="other", compat="1.1", extended_l2=True,
                      cluster_size=32 * KiB if self.cluster_size != 32 * KiB else 128 * KiB,
                      refcount_bits=16 if (self.refcount_bits or 16) != 16 else 8,
                      compression_type=comp, compress=self.compress)

    def layer_sizes(self) -> list[int]:
        s = self.size
        if self.chain:
            return [s, s + s // 4, s + s // 2]   # every overlay larger than its backing file
        if self.snapshot:
            return [s, s]                        # two phases on the same image
        return [s]

    def layer_workload(self, layer: int, *, raw_target: bool = False) -> list[str]:
        sizes = self.layer_sizes()
        base_is_raw = self.chain == "raw" and layer == 0
        return workload(cluster_size=self.cluster_size, size=sizes[layer], layer=layer,
                        extended_l2=self.extended_l2,
                        compress=self.compress and not base_is_raw,
                        raw_target=raw_target or base_is_raw)


def build_configs() -> list[Config]:
    C = Config
    cfgs: list[Config] = []
    # compat x cluster size
    for compat, tag in (("0.10", "v2"), ("1.1", "v3")):
        for cs in (512, 4 * KiB, 64 * KiB, 2 * MiB):
            cfgs.append(C(f"{tag}-c{size_str(cs)}", compat=compat, cluster_size=cs))
    # extended L2
    for cs in (16 * KiB, 64 * KiB, 2 * MiB):
        cfgs.append(C(f"el2-c{size_str(cs)}", extended_l2=True, cluster_size=cs))
    # refcount widths
    cfgs += [
        C("rb1-c64k", refcount_bits=1),
        C("rb64-c4k", refcount_bits=64, cluster_size=4 * KiB),
        C("rb1-el2-c64k", refcount_bits=1, extended_l2=True),
        C("rb64-el2-c16k", refcount_bits=64, extended_l2=True, cluster_size=16 * KiB),
        C("rb16-v2-c64k", compat="0.10", refcount_bits=16),
    ]
    # compression
    cfgs += [
        C("zlib-v2-c64k", compat="0.10", compress=True),
        C("zlib-c4k", compression_type="zlib", cluster_size=4 * KiB, compress=True),
        C("zlib-el2-c64k", compression_type="zlib", extended_l2=True, compress=True),
        C("zstd-c64k", compression_type="zstd", compress=True),
        C("zstd-el2-c16k", compression_type="zstd", extended_l2=True,
          cluster_size=16 * KiB, compress=True),
        C("zstd-el2-c2M", compression_type="zstd", extended_l2=True,
          cluster_size=2 * MiB, compress=True),
    ]
    # lazy refcounts
    cfgs += [C("lazy-c64k", lazy_refcounts=True),
             C("lazy-el2-c64k", lazy_refcounts=True, extended_l2=True)]
    # preallocation
    for mode in ("metadata", "falloc", "full"):
        cfgs.append(C(f"prealloc-{mode}-c64k", preallocation=mode))
        cfgs.append(C(f"prealloc-{mode}-el2-c64k", preallocation=mode, extended_l2=True))
    cfgs.append(C("prealloc-metadata-v2-c4k", compat="0.10", preallocation="metadata",
                  cluster_size=4 * KiB))
    # backing chains of depth 2 (base raw or qcow2, then two qcow2 overlays)
    cfgs += [
        C("chain-raw-c64k", chain="raw"),
        C("chain-qcow2-c64k", chain="qcow2"),
        C("chain-raw-el2-c64k", chain="raw", extended_l2=True),
        C("chain-qcow2-el2-c2M", chain="qcow2", extended_l2=True, cluster_size=2 * MiB),
        C("chain-qcow2-el2-c16k-zstd", chain="qcow2", extended_l2=True, cluster_size=16 * KiB,
          compression_type="zstd", compress=True),
    ]
    # internal snapshots
    cfgs += [
        C("snap-v2-c64k", compat="0.10", snapshot=True),
        C("snap-c4k", cluster_size=4 * KiB, snapshot=True),
        C("snap-el2-c64k", extended_l2=True, snapshot=True),
        C("snap-el2-zlib-c64k", extended_l2=True, snapshot=True, compress=True),
    ]
    # external data files (the spec rules out compression and internal snapshots there)
    cfgs += [
        C("df-c64k", data_file="on"),
        C("df-c512", data_file="on", cluster_size=512),
        C("df-el2-c64k", data_file="on", extended_l2=True),
        C("df-el2-c2M", data_file="on", extended_l2=True, cluster_size=2 * MiB),
        C("df-raw-c4k", data_file="raw", cluster_size=4 * KiB),
        C("df-raw-el2-c16k", data_file="raw", extended_l2=True, cluster_size=16 * KiB),
    ]
    return cfgs


CONFIGS = {c.name: c for c in build_configs()}
DIRECTIONS = ("q2i", "i2q", "cvt")


def case_names() -> list[str]:
    return [f"{d}/{c}" for d in DIRECTIONS for c in CONFIGS]


# --------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------

class Ctx:
    def __init__(self, qimg: str, cfg: Config, work: str):
        self.qimg, self.cfg, self.work = qimg, cfg, work
        self.problems: list[str] = []

    def p(self, name: str) -> str:
        return os.path.join(self.work, name)

    def run(self, argv, **kw):
        return run(argv, cwd=self.work, **kw)

    def run_json(self, argv, **kw):
        return run_json(argv, cwd=self.work, **kw)

    def problem(self, msg: str) -> None:
        log(f"  PROBLEM: {msg}")
        self.problems.append(msg)

    def soft(self, fn, *a, **kw):
        """Run one independent check; record its failure and go on with the next one."""
        try:
            return fn(*a, **kw)
        except CaseFailure as e:
            self.problem(str(e))
            return None


def build_expected(ctx: Ctx, name: str = "expected.raw", layers: int | None = None) -> str:
    """The expected guest content: the workload of every layer applied to one raw file."""
    cfg = ctx.cfg
    sizes = cfg.layer_sizes()
    n = len(sizes) if layers is None else layers
    path = ctx.p(name)
    with open(path, "wb") as f:
        f.truncate(sizes[-1] if layers is None else sizes[n - 1])
    for layer in range(n):
        cmds = raw_equivalent(cfg.layer_workload(layer, raw_target=True))
        ctx.run([QEMU_IO, "-f", "raw", *io_args(cmds), name], quiet=False)
    return path


def qemu_build(ctx: Ctx) -> str:
    """Make the config's image (or chain) with qemu-img/qemu-io; returns the top image name."""
    cfg = ctx.cfg
    sizes = cfg.layer_sizes()
    if cfg.chain:
        if cfg.chain == "raw":
            ctx.run([QEMU_IMG, "create", "-q", "-f", "raw", "base.raw", sizes[0]])
            ctx.run([QEMU_IO, "-f", "raw", *io_args(cfg.layer_workload(0)), "base.raw"])
            base, bfmt = "base.raw", "raw"
        else:
            ctx.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", cfg.opts(prealloc=False),
                     "base.qcow2", sizes[0]])
            ctx.run([QEMU_IO, "-f", "qcow2", *io_args(cfg.layer_workload(0)), "base.qcow2"])
            base, bfmt = "base.qcow2", "qcow2"
        ctx.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", cfg.opts(), "-b", base, "-F", bfmt,
                 "mid.qcow2", sizes[1]])
        ctx.run([QEMU_IO, "-f", "qcow2", *io_args(cfg.layer_workload(1)), "mid.qcow2"])
        ctx.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", cfg.opts(), "-b", "mid.qcow2",
                 "-F", "qcow2", "top.qcow2", sizes[2]])
        ctx.run([QEMU_IO, "-f", "qcow2", *io_args(cfg.layer_workload(2)), "top.qcow2"])
        return "top.qcow2"
    ctx.run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", cfg.opts(), "img.qcow2", sizes[0]])
    ctx.run([QEMU_IO, "-f", "qcow2", *io_args(cfg.layer_workload(0)), "img.qcow2"])
    if cfg.snapshot:
        ctx.run([QEMU_IMG, "snapshot", "-c", "snap1", "img.qcow2"])
        ctx.run([QEMU_IO, "-f", "qcow2", *io_args(cfg.layer_workload(1)), "img.qcow2"])
    return "img.qcow2"


def compare_files(ctx: Ctx, got: str, want: str, what: str) -> None:
    m = first_mismatch(ctx.p(got), ctx.p(want))
    if m is None:
        log(f"  ok: {what}: {got} == {want}")
        return
    off, a, b, sa, sb = m
    if a is None:
        raise CaseFailure(f"{what}: sizes differ: {got} is {sa} bytes, {want} is {sb} bytes "
                          f"(contents equal up to offset {off})")
    raise CaseFailure(f"{what}: first difference at offset {off} (0x{off:x}): "
                      f"{got} has 0x{a:02x}, {want} has 0x{b:02x}")


def qemu_check_clean(ctx: Ctx, img: str) -> dict:
    r = ctx.run([QEMU_IMG, "check", "--output=json", img], check=False)
    try:
        import json
        rep = json.loads(r.out) if r.out.strip() else {}
    except ValueError:
        rep = {}
    bad = {k: rep.get(k) for k in ("check-errors", "corruptions", "leaks") if rep.get(k)}
    if r.rc != 0 or bad:
        raise CaseFailure(f"qemu-img check {img} is not clean ({bad or 'exit status'})\n{r.describe()}")
    log(f"  ok: qemu-img check {img} clean")
    return rep


def qemu_compare(ctx: Ctx, img: str, raw: str, fmt: str = "qcow2") -> None:
    r = ctx.run([QEMU_IMG, "compare", "-f", fmt, "-F", "raw", img, raw], check=False)
    if r.rc != 0 or "identical" not in r.out:
        raise CaseFailure(f"qemu-img compare {img} {raw}: not identical\n{r.describe()}")
    log(f"  ok: qemu-img compare {img} {raw}: identical")


def check_qemu_info(ctx: Ctx, img: str, cfg: Config, size: int, backing: tuple | None = None) -> None:
    info = ctx.run_json([QEMU_IMG, "info", "--output=json", img])
    probs = []
    if info.get("virtual-size") != size:
        probs.append(f"virtual-size {info.get('virtual-size')} != {size}")
    if info.get("cluster-size") != cfg.cluster_size:
        probs.append(f"cluster-size {info.get('cluster-size')} != {cfg.cluster_size}")
    if info.get("dirty-flag"):
        probs.append("dirty-flag is set")
    data = info.get("format-specific", {}).get("data", {})
    for k, v in cfg.expected_info().items():
        if data.get(k) != v:
            probs.append(f"format-specific {k}: {data.get(k)!r}, requested {v!r}")
    if backing:
        if info.get("backing-filename") != backing[0]:
            probs.append(f"backing-filename {info.get('backing-filename')!r} != {backing[0]!r}")
        if info.get("backing-filename-format") != backing[1]:
            probs.append(f"backing-filename-format {info.get('backing-filename-format')!r} "
                         f"!= {backing[1]!r}")
    if probs:
        raise CaseFailure(f"qemu-img info {img} does not show the requested options: "
                          + "; ".join(probs))
    log(f"  ok: qemu-img info {img} shows the requested options")


INFO_KEYS = ("virtual-size", "filename", "cluster-size", "format", "actual-size", "dirty-flag",
             "backing-filename", "full-backing-filename", "backing-filename-format", "snapshots",
             "encrypted")


def compare_info(ctx: Ctx, img: str) -> None:
    ours = ctx.run_json([ctx.qimg, "info", "--output=json", img])
    theirs = ctx.run_json([QEMU_IMG, "info", "--output=json", img])
    probs = diff_dicts(ours, theirs, INFO_KEYS, "")
    fo, ft = ours.get("format-specific", {}), theirs.get("format-specific", {})
    probs += diff_dicts(fo, ft, ["type"], "format-specific.")
    probs += diff_dicts(fo.get("data", {}) if isinstance(fo, dict) else {},
                        ft.get("data", {}), sorted(set(ft.get("data", {}))), "format-specific.data.")
    if probs:
        raise CaseFailure(f"qimg info vs qemu-img info on {img}:\n    " + "\n    ".join(probs))
    log(f"  ok: qimg info == qemu-img info (key facts) on {img}")


def compare_map(ctx: Ctx, img: str) -> None:
    ours = ctx.run_json([ctx.qimg, "map", "--output=json", img])
    theirs = ctx.run_json([QEMU_IMG, "map", "--output=json", img])
    d = diff_json_lists(ours, theirs)
    if d:
        raise CaseFailure(f"qimg map vs qemu-img map on {img}: {d}")
    log(f"  ok: qimg map == qemu-img map on {img} ({len(theirs)} entries)")


def qimg_spot_checks(ctx: Ctx, img: str, expected: str) -> None:
    cfg = ctx.cfg
    cmds = [c for layer in range(len(cfg.layer_sizes())) for c in cfg.layer_workload(layer)]
    reads = spot_checks(expected, cmds)
    if not reads:
        raise CaseFailure("internal: no uniform ranges for spot checks")
    r = ctx.run([ctx.qimg, "io", "-f", "qcow2", *io_args(reads), img], check=False)
    if r.rc != 0:
        raise CaseFailure(f"qimg io read -P spot checks failed\n{r.describe()}")
    log(f"  ok: {len(reads)} qimg io read -P spot checks")
    # A deliberate mismatch must be detected: exit 1 with a message.
    w = reads[0].split()
    wrong = (int(w[2], 16) ^ 0xff) & 0xff
    bad = f"read -P 0x{wrong:02x} {w[3]} {w[4]}"
    r = ctx.run([ctx.qimg, "io", "-f", "qcow2", "-c", bad, img], check=False)
    if r.rc != 1 or not (r.out.strip() or r.err.strip()):
        raise CaseFailure(f"qimg io with a wrong pattern must exit 1 with a message\n{r.describe()}")
    log("  ok: wrong pattern detected (exit 1)")


# --------------------------------------------------------------------------
# directions
# --------------------------------------------------------------------------

def run_q2i(ctx: Ctx) -> None:
    log("== direction q2i: qemu writes, qimg reads")
    top = qemu_build(ctx)
    build_expected(ctx)
    ctx.soft(lambda: (ctx.run([ctx.qimg, "convert", "-O", "raw", top, "out.raw"]),
                      compare_files(ctx, "out.raw", "expected.raw", "qimg convert -O raw")))
    ctx.soft(qimg_spot_checks, ctx, top, ctx.p("expected.raw"))
    ctx.soft(compare_info, ctx, top)
    ctx.soft(compare_map, ctx, top)
    if ctx.cfg.chain:
        ctx.soft(compare_map, ctx, "mid.qcow2")
        if ctx.cfg.chain == "qcow2":
            ctx.soft(compare_info, ctx, "base.qcow2")


def qimg_build(ctx: Ctx) -> str:
    """Make the config's image (or chain) with qimg create + qimg io."""
    cfg = ctx.cfg
    sizes = cfg.layer_sizes()
    q = ctx.qimg

    def after_create(img, size):
        if cfg.preallocation != "off":
            ctx.soft(check_preallocated, ctx, img, size)

    if cfg.chain:
        if cfg.chain == "raw":
            ctx.run([q, "create", "-f", "raw", "base.raw", sizes[0]])
            ctx.run([q, "io", "-f", "raw", *io_args(cfg.layer_workload(0)), "base.raw"])
            base, bfmt = "base.raw", "raw"
        else:
            ctx.run([q, "create", "-f", "qcow2", "-o", cfg.opts(prealloc=False), "base.qcow2",
                     sizes[0]])
            ctx.run([q, "io", "-f", "qcow2", *io_args(cfg.layer_workload(0)), "base.qcow2"])
            base, bfmt = "base.qcow2", "qcow2"
        ctx.run([q, "create", "-f", "qcow2", "-o", cfg.opts(), "-b", base, "-F", bfmt,
                 "mid.qcow2", sizes[1]])
        after_create("mid.qcow2", sizes[1])
        ctx.run([q, "io", "-f", "qcow2", *io_args(cfg.layer_workload(1)), "mid.qcow2"])
        ctx.run([q, "create", "-f", "qcow2", "-o", cfg.opts(), "-b", "mid.qcow2", "-F", "qcow2",
                 "top.qcow2", sizes[2]])
        after_create("top.qcow2", sizes[2])
        ctx.run([q, "io", "-f", "qcow2", *io_args(cfg.layer_workload(2)), "top.qcow2"])
        return "top.qcow2"
    ctx.run([q, "create", "-f", "qcow2", "-o", cfg.opts(), "img.qcow2", sizes[0]])
    after_create("img.qcow2", sizes[0])
    ctx.run([q, "io", "-f", "qcow2", *io_args(cfg.layer_workload(0)), "img.qcow2"])
    if cfg.snapshot:
        ctx.run([QEMU_IMG, "snapshot", "-c", "snap1", "img.qcow2"])
        ctx.run([q, "io", "-f", "qcow2", *io_args(cfg.layer_workload(1)), "img.qcow2"])
    return "img.qcow2"


def check_preallocated(ctx: Ctx, img: str, size: int) -> None:
    cfg = ctx.cfg
    qemu_check_clean(ctx, img)
    m = ctx.run_json([QEMU_IMG, "map", "--output=json", img])
    unalloc = [e for e in m if e.get("depth") == 0 and "offset" not in e]
    if unalloc:
        raise CaseFailure(f"preallocation={cfg.preallocation}: {img} has ranges without a host "
                          f"cluster right after create, first: {unalloc[0]}")
    if cfg.preallocation in ("falloc", "full"):
        info = ctx.run_json([QEMU_IMG, "info", "--output=json", img])
        if info.get("actual-size", 0) < size:
            raise CaseFailure(f"preallocation={cfg.preallocation}: actual-size "
                              f"{info.get('actual-size')} < virtual size {size}")
    log(f"  ok: {img} is preallocated ({cfg.preallocation})")


def run_i2q(ctx: Ctx) -> None:
    log("== direction i2q: qimg writes, qemu reads")
    cfg = ctx.cfg
    top = qimg_build(ctx)
    build_expected(ctx)
    images = [top] + (["mid.qcow2"] if cfg.chain else []) + \
        (["base.qcow2"] if cfg.chain == "qcow2" else [])
    for img in images:
        ctx.soft(qemu_check_clean, ctx, img)
    ctx.soft(qemu_compare, ctx, top, "expected.raw")
    if cfg.data_file == "raw":  # qimg kept the data file a valid raw image by itself
        ctx.soft(qemu_compare, ctx, "data.raw", "expected.raw", "raw")
    sizes = cfg.layer_sizes()
    if cfg.chain:
        bfmt = cfg.chain
        ctx.soft(check_qemu_info, ctx, "top.qcow2", cfg, sizes[2], ("mid.qcow2", "qcow2"))
        ctx.soft(check_qemu_info, ctx, "mid.qcow2", cfg, sizes[1], (f"base.{bfmt}", bfmt))
    else:
        ctx.soft(check_qemu_info, ctx, top, cfg, sizes[-1])
    if cfg.snapshot:
        def snapshot_intact():
            build_expected(ctx, "phase1.raw", layers=1)
            shutil.copyfile(ctx.p(top), ctx.p("snapcopy.qcow2"))
            ctx.run([QEMU_IMG, "snapshot", "-a", "snap1", "snapcopy.qcow2"])
            qemu_compare(ctx, "snapcopy.qcow2", "phase1.raw")
            qemu_check_clean(ctx, "snapcopy.qcow2")
        ctx.soft(snapshot_intact)
    # Both tools read the same file: they must agree.
    ctx.soft(compare_map, ctx, top)
    ctx.soft(compare_info, ctx, top)


def run_cvt(ctx: Ctx) -> None:
    log("== direction cvt: qimg convert raw->qcow2 and qcow2->qcow2")
    cfg = ctx.cfg
    build_expected(ctx)
    c_flag = ["-c"] if cfg.compress else []

    def from_raw():
        ctx.run([ctx.qimg, "convert", "-f", "raw", "-O", "qcow2", "-o", cfg.opts(data_name="conv.data"), *c_flag,
                 "expected.raw", "conv.qcow2"])
        if cfg.data_file == "raw":  # the data file alone is the disk
            qemu_compare(ctx, "conv.data", "expected.raw", fmt="raw")
        rep = qemu_check_clean(ctx, "conv.qcow2")
        qemu_compare(ctx, "conv.qcow2", "expected.raw")
        check_qemu_info(ctx, "conv.qcow2", cfg, cfg.layer_sizes()[-1])
        if cfg.compress and not rep.get("compressed-clusters"):
            raise CaseFailure("qimg convert -c produced no compressed clusters "
                              f"(qemu-img check: {rep})")
    ctx.soft(from_raw)

    def from_qemu_qcow2():
        top = qemu_build(ctx)
        other = cfg.other()
        ctx.run([ctx.qimg, "convert", "-O", "qcow2", "-o", other.opts(), *c_flag, top,
                 "conv2.qcow2"])
        rep = qemu_check_clean(ctx, "conv2.qcow2")
        qemu_compare(ctx, "conv2.qcow2", "expected.raw")
        check_qemu_info(ctx, "conv2.qcow2", other, cfg.layer_sizes()[-1])
        if cfg.compress and not rep.get("compressed-clusters"):
            raise CaseFailure("qimg convert -c produced no compressed clusters "
                              f"(qemu-img check: {rep})")
    ctx.soft(from_qemu_qcow2)


def run_case(qimg: str, name: str) -> int:
    direction, _, cfg_name = name.partition("/")
    if direction not in DIRECTIONS or cfg_name not in CONFIGS:
        print(f"unknown case {name!r}; see --list", file=sys.stderr)
        return 2
    cfg = CONFIGS[cfg_name]
    log(f"case {name}: options {cfg.opts()}"
        + (f", chain base {cfg.chain}" if cfg.chain else "")
        + (", internal snapshot" if cfg.snapshot else "")
        + (", compressed writes" if cfg.compress else "")
        + f", sizes {[size_str(s) for s in cfg.layer_sizes()]}")
    td = TempDir(name)
    with td as work:
        log(f"work directory: {work}")
        ctx = Ctx(qimg, cfg, work)
        try:
            {"q2i": run_q2i, "i2q": run_i2q, "cvt": run_cvt}[direction](ctx)
        except CaseFailure as e:
            ctx.problem(str(e))
        if ctx.problems:
            log(f"FAIL {name}: {len(ctx.problems)} problem(s):")
            for i, p in enumerate(ctx.problems, 1):
                log(f"  [{i}] {' / '.join(p.splitlines()[:2])}")
            return 1
        td.ok = True
    log(f"PASS {name}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="print one case name per line")
    ap.add_argument("--qimg", help="path to the qimg binary")
    ap.add_argument("--case", help="run one case")
    ap.add_argument("--all", action="store_true", help="run every case (sequentially)")
    ap.add_argument("-k", default="", help="with --all: only cases containing this substring")
    a = ap.parse_args()
    if a.list:
        print("\n".join(case_names()))
        return 0
    if not a.qimg or not (a.case or a.all):
        ap.error("need --list, or --qimg PATH with --case NAME or --all")
    qimg = os.path.abspath(a.qimg)
    if not os.access(qimg, os.X_OK):
        print(f"qimg binary not found or not executable: {qimg}", file=sys.stderr)
        return 2
    require_tools(QEMU_IMG, QEMU_IO)
    if a.case:
        return main_guard(lambda: run_case(qimg, a.case))
    failed = []
    names = [n for n in case_names() if a.k in n]
    if not names:
        print(f"no case matches -k {a.k!r}; see --list", file=sys.stderr)
        return 2
    for n in names:
        if main_guard(lambda: run_case(qimg, n)) != 0:
            failed.append(n)
    log(f"\n{len(failed)} failed: {' '.join(failed)}" if failed else "\nall passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
