#!/usr/bin/env python3
"""qimg convert end to end (issue 3), checked with QEMU's own tools.

- every direction (raw<->qcow2, qcow2<->qcow2) with the target options:
  qemu-img check clean and qemu-img compare identical;
- several sources are concatenated;
- -B: an extended-L2 overlay converted to a standard overlay of the same
  backing file reads the same, and clusters equal to the backing stay
  unallocated (qemu-img map);
- -l/-s read an internal snapshot made by qemu-img snapshot -c;
- -n into a smaller target, an unreadable source, a source that fails
  mid-way and bad options: exit 1, one "qimg: " line, no target left behind;
- -c output is the same bytes for -m 1 and -m 4;
- raw targets stay sparse; -S 0 allocates everything; zero subclusters of
  an extended-L2 target stay unallocated;
- -t/-T/-r/-C/--salvage/--bitmaps, with qemu-img's messages for bad uses;
- sources read through mappings: unaligned host offsets, zero clusters over
  stale data, a raw backing file with holes, sources back to back.

Usage: test_convert.py --qimg PATH
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

TIMEOUT = 120
MIB = 1 << 20


class Checker:
    def __init__(self, qimg: str, work: str):
        self.qimg, self.work = qimg, work
        self.problems: list[str] = []

    def run(self, argv, check=False):
        try:
            p = qimgtest.run(argv, cwd=self.work, text=True, errors="replace", timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.fail(f"{' '.join(argv)}: timed out")
            return 124, "", ""
        if check and p.returncode != 0:
            self.fail(f"{' '.join(argv)}: exit {p.returncode}: {p.stderr.strip()}")
        return p.returncode, p.stdout, p.stderr

    def q(self, *args, check=False):
        return self.run([self.qimg, *args], check=check)

    def fail(self, msg: str):
        print(f"FAIL: {msg}")
        self.problems.append(msg)

    def path(self, name: str) -> str:
        return os.path.join(self.work, name)

    def same(self, a: str, b: str, what: str, fa: str | None = None, fb: str | None = None):
        argv = ["qemu-img", "compare"]
        if fa:
            argv += ["-f", fa]
        if fb:
            argv += ["-F", fb]
        rc, out, err = self.run(argv + [a, b])
        if rc != 0:
            self.fail(f"{what}: qemu-img compare {a} {b}: {out.strip()} {err.strip()}")

    def clean(self, img: str, what: str):
        rc, out, err = self.run(["qemu-img", "check", img])
        if rc != 0:
            self.fail(f"{what}: qemu-img check {img}: exit {rc}: {out.strip()} {err.strip()}")

    def map(self, img: str):
        rc, out, err = self.run(["qemu-img", "map", "--output=json", img])
        if rc != 0:
            self.fail(f"qemu-img map {img}: {err.strip()}")
            return []
        return json.loads(out)

    def expect_error(self, argv, what: str, gone: str | None = None):
        rc, out, err = self.q(*argv)
        lines = err.strip().splitlines()
        if rc != 1 or len(lines) != 1 or not lines[0].startswith("qimg: "):
            self.fail(f"{what}: want exit 1 and one 'qimg: ' line, got {rc}: {err.strip()!r}")
        if gone and os.path.exists(self.path(gone)):
            self.fail(f"{what}: {gone} was left behind")


def make_source(path: str, size: int, seed: int):
    """Random data, text, explicit zeros and holes, at unaligned places."""
    rng = random.Random(seed)
    text = b" ".join(rng.choice([b"qcow2", b"cluster", b"image", b"zero", b"data"]) for _ in range(20000))
    with open(path, "wb") as f:
        f.truncate(size)
        pos = 0
        while pos < size:
            n = min(size - pos, rng.choice([512, 4096, 65536, 200000, MIB]) + rng.randrange(0, 3) * 512)
            kind = rng.randrange(4)
            f.seek(pos)
            if kind == 0:
                f.write(rng.randbytes(n))
            elif kind == 1:
                f.write((text * (n // len(text) + 1))[:n])
            elif kind == 2:
                f.write(bytes(n))  # explicit zeros: detected by scanning
            pos += n                # kind 3: a hole


def allocated(path: str) -> int:
    return os.stat(path).st_blocks * 512


def test_directions(c: Checker):
    c.q("convert", "-f", "raw", "-O", "qcow2", "src.raw", "std.qcow2", check=True)
    c.clean("std.qcow2", "raw->qcow2")
    c.same("src.raw", "std.qcow2", "raw->qcow2")
    targets = {
        "c4k": "cluster_size=4k",
        "c2m": "cluster_size=2M",
        "v2": "compat=0.10",
        "rc1": "refcount_bits=1",
        "rc64": "refcount_bits=64,lazy_refcounts=on",
        "meta": "preallocation=metadata",
        "falloc": "preallocation=falloc",
        "full": "preallocation=full",
        "zstd": "compression_type=zstd",
        "el2": "extended_l2=on",
        "el2-2m": "extended_l2=on,cluster_size=2M",
        "el2-16k": "extended_l2=on,cluster_size=16k",
    }
    for name, opts in targets.items():
        for src in ("src.raw", "std.qcow2"):
            out = f"{name}-{src.split('.')[0]}.qcow2"
            rc, _, err = c.q("convert", "-O", "qcow2", "-o", opts, src, out)
            if rc != 0:
                c.fail(f"{src} -> qcow2 {opts}: exit {rc}: {err.strip()}")
                continue
            c.clean(out, f"{src} -> qcow2 {opts}")
            c.same("src.raw", out, f"{src} -> qcow2 {opts}")
        # and back: qcow2 with these options -> raw and -> standard qcow2
        back = f"{name}-back.raw"
        c.q("convert", "-O", "raw", f"{name}-src.qcow2", back, check=True)
        c.same("src.raw", back, f"qcow2 {opts} -> raw", fb="raw")
        std = f"{name}-std.qcow2"
        c.q("convert", "-O", "qcow2", "-o", "extended_l2=off", f"{name}-src.qcow2", std, check=True)
        c.clean(std, f"qcow2 {opts} -> qcow2 extended_l2=off")
        c.same("src.raw", std, f"qcow2 {opts} -> qcow2 extended_l2=off")
    for ctype in ("zlib", "zstd"):
        for extra in ("", ",extended_l2=on"):
            out = f"c-{ctype}{extra.replace(',', '-').replace('=', '')}.qcow2"
            c.q("convert", "-c", "-O", "qcow2", "-o", f"compression_type={ctype}{extra}", "src.raw", out, check=True)
            c.clean(out, f"-c {ctype}{extra}")
            c.same("src.raw", out, f"-c {ctype}{extra}")
            rc, info, _ = c.run(["qemu-img", "check", "--output=json", out])
            if rc == 0 and json.loads(info).get("compressed-clusters", 0) == 0:
                c.fail(f"-c {ctype}{extra}: no compressed clusters")
            c.q("convert", "-O", "raw", out, out + ".raw", check=True)
            c.same("src.raw", out + ".raw", f"-c {ctype}{extra} -> raw", fb="raw")


def test_concatenation(c: Checker):
    make_source(c.path("second.raw"), 3 * MIB + 512, 7)
    c.q("convert", "-O", "qcow2", "second.raw", "second.qcow2", check=True)
    c.q("convert", "-O", "raw", "src.raw", "second.qcow2", "cat.raw", check=True)
    want = open(c.path("src.raw"), "rb").read() + open(c.path("second.raw"), "rb").read()
    if open(c.path("cat.raw"), "rb").read() != want:
        c.fail("concatenation: output differs from the sources back to back")


def test_backing(c: Checker):
    make_source(c.path("base.raw"), 8 * MIB, 11)
    c.run(["qemu-img", "convert", "-O", "qcow2", "base.raw", "base.qcow2"])
    c.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2",
           "-o", "extended_l2=on,cluster_size=64k", "ov.qcow2"])
    base = open(c.path("base.raw"), "rb").read()
    same = base[MIB:MIB + 65536].hex()  # data equal to the backing: allocated in ov, not needed in the copy
    cmds = [
        f"write -P 0x5a 0 64k",          # differs from the backing
        f"write -z 256k 64k",            # zeros over (maybe) data
        f"write -P 0x11 {2 * MIB + 4096} 4k",  # one subcluster of a cluster
    ]
    for cmd in cmds:
        c.run(["qemu-io", "-f", "qcow2", "-c", cmd, "ov.qcow2"])
    with open(c.path("same.bin"), "wb") as f:
        f.write(bytes.fromhex(same))
    c.run(["qemu-io", "-f", "qcow2", "-c", f"write -s same.bin {MIB} 64k", "ov.qcow2"])
    c.q("convert", "-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2", "ov.qcow2", "out-std.qcow2", check=True)
    c.clean("out-std.qcow2", "-B")
    c.same("ov.qcow2", "out-std.qcow2", "-B: ext-L2 overlay -> standard overlay")
    rc, info, _ = c.run(["qemu-img", "info", "--output=json", "out-std.qcow2"])
    if rc == 0:
        j = json.loads(info)
        if j.get("backing-filename") != "base.qcow2" or j["format-specific"]["data"].get("extended-l2"):
            c.fail(f"-B: unexpected target info {j.get('backing-filename')} {j['format-specific']}")
    top = [e for e in c.map("out-std.qcow2") if e["depth"] == 0 and e["present"]]

    def in_top(off):
        return any(e["start"] <= off < e["start"] + e["length"] for e in top)

    if in_top(MIB):
        c.fail("-B: a cluster equal to the backing file was allocated in the target")
    for off in (0, 2 * MIB):
        if not in_top(off):
            c.fail(f"-B: the changed cluster at {off:#x} is not allocated in the target")
    if any(e["start"] >= 3 * MIB for e in top):
        c.fail("-B: clusters the overlay never wrote were allocated in the target")
    # and back to extended L2 over the same backing file
    c.q("convert", "-O", "qcow2", "-o", "extended_l2=on", "-B", "base.qcow2", "out-std.qcow2", "out-el2.qcow2",
        check=True)
    c.clean("out-el2.qcow2", "-B to extended L2")
    c.same("ov.qcow2", "out-el2.qcow2", "-B: standard overlay -> ext-L2 overlay")


def test_snapshots(c: Checker):
    c.run(["qemu-img", "convert", "-O", "qcow2", "src.raw", "snap.qcow2"])
    c.run(["qemu-img", "snapshot", "-c", "first", "snap.qcow2"])
    c.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 0 3M", "snap.qcow2"])
    c.run(["qemu-img", "resize", "-q", "snap.qcow2", "+1M"])
    for args in (["-l", "snapshot.name=first"], ["-l", "snapshot.id=1"], ["-l", "first"], ["-s", "first"],
                 ["-s", "1"]):
        c.q("convert", *args, "-O", "raw", "snap.qcow2", "snap-out.raw", check=True)
        c.same("src.raw", "snap-out.raw", f"convert {' '.join(args)}", fb="raw")
        if os.path.getsize(c.path("snap-out.raw")) != os.path.getsize(c.path("src.raw")):
            c.fail(f"convert {' '.join(args)}: size is not the snapshot's disk size")
    c.q("convert", "-O", "raw", "snap.qcow2", "active.raw", check=True)
    c.same("snap.qcow2", "active.raw", "active state after a snapshot", fb="raw")
    c.expect_error(["convert", "-l", "snapshot.name=nope", "-O", "raw", "snap.qcow2", "nosnap.raw"],
                   "missing snapshot", gone="nosnap.raw")


def test_errors(c: Checker):
    c.q("create", "-f", "qcow2", "small.qcow2", "1M", check=True)
    before = open(c.path("small.qcow2"), "rb").read()
    c.expect_error(["convert", "-n", "-O", "qcow2", "src.raw", "small.qcow2"], "-n into a smaller target")
    if open(c.path("small.qcow2"), "rb").read() != before:
        c.fail("-n into a smaller target: the target was modified")
    c.expect_error(["convert", "-O", "qcow2", "missing.raw", "t1.qcow2"], "missing source", gone="t1.qcow2")
    os.mkdir(c.path("adir"))
    c.expect_error(["convert", "-f", "raw", "-O", "qcow2", "adir", "t2.qcow2"], "unreadable source", gone="t2.qcow2")
    # A source that fails mid-way: an unaligned data cluster offset at guest 3 MiB.
    c.run(["qemu-img", "convert", "-O", "qcow2", "src.raw", "bad.qcow2"])
    with open(c.path("bad.qcow2"), "r+b") as f:
        hdr = f.read(48)
        l1_offset = struct.unpack(">Q", hdr[40:48])[0]
        f.seek(l1_offset)
        l2_offset = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        f.seek(l2_offset + 8 * 48)
        f.write(struct.pack(">Q", (1 << 63) | 0x10200))
    c.expect_error(["convert", "-O", "qcow2", "bad.qcow2", "t3.qcow2"], "source failing mid-way", gone="t3.qcow2")
    c.expect_error(["convert", "-O", "raw", "bad.qcow2", "t4.raw"], "source failing mid-way (raw)", gone="t4.raw")
    c.expect_error(["convert", "--target-is-zero", "-O", "qcow2", "src.raw", "t5.qcow2"], "--target-is-zero without -n",
                   gone="t5.qcow2")
    c.expect_error(["convert", "-c", "-O", "raw", "src.raw", "t6.raw"], "-c with a raw target", gone="t6.raw")
    c.expect_error(["convert", "-m", "0", "-O", "qcow2", "src.raw", "t7.qcow2"], "-m 0", gone="t7.qcow2")
    c.expect_error(["convert", "-S", "1000", "-O", "qcow2", "src.raw", "t8.qcow2"], "bad -S", gone="t8.qcow2")
    c.expect_error(["convert", "-O", "qcow2", "-o", "cluster_size=3k", "src.raw", "t9.qcow2"], "bad -o",
                   gone="t9.qcow2")
    # -n into a large enough target, with and without --target-is-zero
    c.q("create", "-f", "qcow2", "big.qcow2", "16M", check=True)
    c.q("convert", "-n", "-O", "qcow2", "src.raw", "big.qcow2", check=True)
    c.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x33 0 16M", "big.qcow2"])
    c.q("convert", "-n", "src.raw", "big.qcow2", check=True)  # target format probed
    c.clean("big.qcow2", "-n")
    c.run(["qemu-img", "convert", "-O", "raw", "big.qcow2", "big.raw"])
    src = open(c.path("src.raw"), "rb").read()
    big = open(c.path("big.raw"), "rb").read()
    if big[:len(src)] != src or big[len(src):] != b"\x33" * (len(big) - len(src)):
        c.fail("-n over old data: the target does not hold the source followed by its old tail")
    c.run(["qemu-io", "-f", "qcow2", "-c", "write -z 0 16M", "big.qcow2"])
    c.q("convert", "-n", "--target-is-zero", "-O", "qcow2", "src.raw", "big.qcow2", check=True)
    c.same("src.raw", "big.qcow2", "-n --target-is-zero")


def test_determinism_and_sparseness(c: Checker):
    for ctype in ("zlib", "zstd"):
        outs = []
        for m in ("1", "4"):
            out = f"det-{ctype}-m{m}.qcow2"
            c.q("convert", "-c", "-m", m, "-O", "qcow2", "-o", f"compression_type={ctype}", "src.raw", out, check=True)
            outs.append(open(c.path(out), "rb").read())
        if outs[0] != outs[1]:
            c.fail(f"-c {ctype}: -m 1 and -m 4 produced different files")
    c.q("convert", "-W", "-m", "4", "-c", "-O", "qcow2", "src.raw", "w.qcow2", check=True)
    c.same("src.raw", "w.qcow2", "-W -m 4 -c")
    # raw targets stay sparse, from raw and from qcow2
    for src in ("src.raw", "std.qcow2"):
        c.q("convert", "-O", "raw", src, "sparse.raw", check=True)
        size = os.path.getsize(c.path("sparse.raw"))
        if allocated(c.path("sparse.raw")) >= size:
            c.fail(f"raw target from {src} is not sparse ({allocated(c.path('sparse.raw'))} of {size} bytes)")
    # -S 0: everything allocated
    c.q("convert", "-S", "0", "-O", "raw", "src.raw", "full.raw", check=True)
    if allocated(c.path("full.raw")) < os.path.getsize(c.path("full.raw")):
        c.fail("-S 0: raw target is sparse")
    c.same("src.raw", "full.raw", "-S 0 raw", fb="raw")
    c.q("convert", "-S", "0", "-O", "qcow2", "src.raw", "full.qcow2", check=True)
    c.same("src.raw", "full.qcow2", "-S 0 qcow2")
    if any(not e["data"] for e in c.map("full.qcow2")):
        c.fail("-S 0: qcow2 target has unallocated or zero ranges")
    # extended L2 2M: a zero 64 KiB subcluster inside data stays unallocated
    with open(c.path("sub.raw"), "wb") as f:
        f.write(random.Random(3).randbytes(4 * MIB))
        f.seek(64 * 1024)
        f.write(bytes(64 * 1024))
    c.q("convert", "-O", "qcow2", "-o", "extended_l2=on,cluster_size=2M", "sub.raw", "sub.qcow2", check=True)
    c.clean("sub.qcow2", "ext-L2 2M")
    c.same("sub.raw", "sub.qcow2", "ext-L2 2M")
    hole = [e for e in c.map("sub.qcow2") if e["start"] <= 65536 < e["start"] + e["length"]]
    if not hole or hole[0]["data"]:
        c.fail(f"ext-L2 2M: the zero subcluster at 64 KiB is allocated: {hole}")


def test_mapped_sources(c: Checker):
    """Sources whose block status runs are tricky for the reader (they were once read
    through mappings of the host files, and stay as a test of the run splitting):
    host offsets that are not page aligned, zero clusters that keep stale host
    data underneath (must never be copied), a raw backing file with holes under a
    qcow2 overlay, and zero runs written as data (-S 0, large -S)."""
    def io(img, *cmds):
        argv = ["qemu-io", "-f", "qcow2"]
        for cmd in cmds:
            argv += ["-c", cmd]
        c.run(argv + [img], check=True)

    sources = []
    c.run(["qemu-img", "convert", "-O", "qcow2", "-o", "cluster_size=512", "src.raw", "c512.qcow2"], check=True)
    sources.append("c512.qcow2")
    # zero clusters over stale data: write -z without -u keeps the host cluster (ZERO_ALLOC)
    for name, opts in (("za.qcow2", "cluster_size=64k"), ("za-el2.qcow2", "extended_l2=on,cluster_size=64k")):
        c.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, name, str(4 * MIB)], check=True)
        io(name, "write -P 0xaa 0 4M", "write -z 64k 128k", "write -z 1056k 8k", "write -z 2M 1M",
           "write -P 0x11 2176k 4k")
        sources.append(name)
    # qcow2 overlay over a raw backing file with holes (zero runs mapped from the raw file)
    make_source(c.path("rawbase.raw"), 5 * MIB + 512, 21)
    c.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "rawbase.raw", "-F", "raw", "ov.qcow2"], check=True)
    io("ov.qcow2", "write -P 0x22 512k 64k", "write -z 3M 128k", "write -P 0x33 4100k 3k")
    sources.append("ov.qcow2")
    for src in sources:
        for name, args in (("raw", ["-O", "raw"]), ("q64", ["-O", "qcow2"]),
                           ("el2", ["-O", "qcow2", "-o", "extended_l2=on,cluster_size=2M"]),
                           ("c4k", ["-O", "qcow2", "-o", "cluster_size=4k"]),
                           ("S0", ["-S", "0", "-O", "raw"]), ("S64k", ["-S", "64k", "-O", "raw"]),
                           ("m1", ["-m", "1", "-O", "qcow2"]), ("zstd", ["-c", "-O", "qcow2", "-o", "compression_type=zstd"])):
            out = f"mapped-{src.split('.')[0]}-{name}.img"
            rc, _, err = c.q("convert", *args, src, out)
            if rc != 0:
                c.fail(f"{src} -> {name}: exit {rc}: {err.strip()}")
                continue
            if name not in ("raw", "S0", "S64k"):
                c.clean(out, f"{src} -> {name}")
            c.same(src, out, f"{src} -> {name}", fb="raw" if name in ("raw", "S0", "S64k") else "qcow2")
    # two sources back to back where the first ends inside a page and a cluster
    c.q("convert", "-O", "qcow2", "c512.qcow2", "ov.qcow2", "za.qcow2", "mapped-cat.qcow2", check=True)
    want = b""
    for src in ("c512.qcow2", "ov.qcow2", "za.qcow2"):
        c.run(["qemu-img", "convert", "-O", "raw", src, src + ".raw"], check=True)
        want += open(c.path(src + ".raw"), "rb").read()
    c.q("convert", "-O", "raw", "mapped-cat.qcow2", "mapped-cat.raw", check=True)
    if open(c.path("mapped-cat.raw"), "rb").read() != want:
        c.fail("mapped sources back to back: output differs from the sources")


def test_more_options(c: Checker):
    """qemu-img's other convert options: -t/-T cache modes, -r, -C, --salvage,
    --bitmaps, with qemu-img's messages for the invalid combinations."""
    for t, T in (("unsafe", "writeback"), ("writeback", "none"), ("writethrough", "directsync"),
                 ("none", "unsafe"), ("directsync", "writethrough")):
        out = f"cache-{t}-{T}.qcow2"
        c.q("convert", "-t", t, "-T", T, "-O", "qcow2", "src.raw", out, check=True)
        c.clean(out, f"-t {t} -T {T}")
        c.same("src.raw", out, f"-t {t} -T {T}")
    c.q("convert", "-T", "none", "-O", "raw", "std.qcow2", "direct.raw", check=True)
    c.same("src.raw", "direct.raw", "-T none qcow2 -> raw", fb="raw")
    c.q("convert", "-r", "64M", "-O", "qcow2", "src.raw", "rate.qcow2", check=True)
    c.same("src.raw", "rate.qcow2", "-r 64M")
    c.q("convert", "-C", "-O", "qcow2", "src.raw", "offload.qcow2", check=True)
    c.same("src.raw", "offload.qcow2", "-C")
    for argv, want in ((["-C", "-c"], "Cannot enable copy offloading when -c is used"),
                       (["-C", "--salvage"], "Cannot use copy offloading in salvaging mode"),
                       (["-t", "bogus"], "Invalid cache option: bogus"),
                       (["-T", "bogus"], "Invalid source cache option: bogus"),
                       (["-r", "abc"], "Invalid rate limit specified"),
                       (["--skip-broken-bitmaps"], "Use of --skip-broken-bitmaps requires --bitmaps"),
                       (["--bitmaps", "-f", "raw"], "Source lacks bitmap support")):
        c.expect_error(["convert", *argv, "-O", "qcow2", "src.raw", "opt.qcow2"], " ".join(argv), gone="opt.qcow2")
        rc, _, err = c.q("convert", *argv, "-O", "qcow2", "src.raw", "opt.qcow2")
        if want not in err:
            c.fail(f"{' '.join(argv)}: want {want!r}, got {err.strip()!r}")
    # --bitmaps: a qcow2 source without bitmaps converts; one with bitmaps keeps them (the
    # bits are compared with qemu-img's in test_bitmaps.py). qimg info lists the bitmaps
    # exactly as qemu-img info does.
    c.q("convert", "--bitmaps", "-O", "qcow2", "std.qcow2", "nobm.qcow2", check=True)
    c.expect_error(["convert", "--bitmaps", "-O", "raw", "std.qcow2", "bm.raw"], "--bitmaps to raw", gone="bm.raw")
    c.run(["qemu-img", "create", "-q", "-f", "qcow2", "bm.qcow2", "4M"], check=True)
    c.run(["qemu-img", "bitmap", "--add", "bm.qcow2", "first"], check=True)
    c.run(["qemu-img", "bitmap", "--add", "-g", "128k", "--disable", "bm.qcow2", "second one"], check=True)
    c.q("convert", "--bitmaps", "-O", "qcow2", "bm.qcow2", "bm2.qcow2", check=True)
    _, listed, _ = c.run(["qemu-img", "info", "--output=json", "bm2.qcow2"])
    if '"first"' not in listed or '"second one"' not in listed:
        c.fail(f"--bitmaps with bitmaps: qemu-img info of the target lists {listed!r}")
    for args in ([], ["--output", "json"]):
        _, want, _ = c.run(["qemu-img", "info", *(["--output=json"] if args else []), "bm.qcow2"])
        _, got, _ = c.q("info", *args, "bm.qcow2")
        if want != got:
            c.fail(f"info {' '.join(args)} of an image with bitmaps differs from qemu-img's:\n{want}\n{got}")
    # --salvage: a compressed cluster that cannot be inflated reads as zeros, as with qemu-img.
    c.run(["qemu-img", "convert", "-c", "-O", "qcow2", "src.raw", "salv.qcow2"], check=True)
    with open(c.path("salv.qcow2"), "r+b") as f:
        hdr = f.read(48)
        l1_offset = struct.unpack(">Q", hdr[40:48])[0]
        f.seek(l1_offset)
        l2_offset = struct.unpack(">Q", f.read(8))[0] & 0x00FFFFFFFFFFFE00
        damaged = 0
        for i in range(64):
            f.seek(l2_offset + 8 * i)
            e = struct.unpack(">Q", f.read(8))[0]
            if e & (1 << 62):  # compressed: host offset in the low 62 - (16 - 8) bits
                f.seek(e & ((1 << 54) - 1))
                f.write(b"\xff" * 64)
                damaged += 1
                if damaged == 2:
                    break
    if damaged == 0:
        c.fail("--salvage: no compressed cluster to damage")
    c.expect_error(["convert", "-O", "raw", "salv.qcow2", "salv-fail.raw"], "damaged source without --salvage",
                   gone="salv-fail.raw")
    c.run(["qemu-img", "convert", "--salvage", "-O", "raw", "salv.qcow2", "salv-q.raw"])
    for m in ("1", "2"):
        rc, _, err = c.q("convert", "--salvage", "-m", m, "-O", "raw", "salv.qcow2", f"salv-i{m}.raw")
        if rc != 0 or "warning: error while reading at byte" not in err:
            c.fail(f"--salvage -m {m}: exit {rc}, stderr {err.strip()!r}")
        elif open(c.path(f"salv-i{m}.raw"), "rb").read() != open(c.path("salv-q.raw"), "rb").read():
            c.fail(f"--salvage -m {m}: output differs from qemu-img convert --salvage")


def test_long_zero_runs(c: Checker):
    """Zero runs longer than a chunk (2 MiB) are merged into one unit of work: they must
    still be zeroed in a target that holds old data (-n), end exactly where the data
    starts (unaligned), and span the boundary between concatenated sources."""
    a, b = c.path("runs_a.raw"), c.path("runs_b.raw")
    with open(a, "wb") as f:
        f.truncate(40 * MIB)
        for at in (0, 9 * MIB + 4096 + 512, 33 * MIB - 512):  # data, then runs of 9 and 24 MiB
            f.seek(at)
            f.write(bytes([0x5A]) * 1536)
    with open(b, "wb") as f:
        f.truncate(12 * MIB)  # begins with a hole: the run crosses into the second source
        f.seek(7 * MIB)
        f.write(bytes([0xA5]) * 4096)
    for fmt, extra in (("qcow2", []), ("raw", []), ("qcow2", ["-m", "1"]), ("qcow2", ["-W", "-p"]),
                       ("qcow2", ["-o", "cluster_size=2M,extended_l2=on"])):
        c.q("convert", "-O", fmt, *extra, "runs_a.raw", "runs_out", check=True)
        c.same("runs_a.raw", "runs_out", f"long zero runs, -O {fmt} {' '.join(extra)}")
        if fmt == "qcow2":
            c.clean("runs_out", f"long zero runs {' '.join(extra)}")
        os.remove(c.path("runs_out"))
    c.q("convert", "-O", "raw", "runs_a.raw", "runs_b.raw", "runs_cat.raw", check=True)
    want = open(a, "rb").read() + open(b, "rb").read()
    if open(c.path("runs_cat.raw"), "rb").read() != want:
        c.fail("long zero runs: concatenation differs from the sources back to back")
    # -n over old data, qcow2 and raw targets: the merged runs must be zeroed there.
    for fmt in ("qcow2", "raw"):
        c.run(["qemu-img", "create", "-q", "-f", fmt, "runs_old", str(52 * MIB)])
        c.run(["qemu-io", "-f", fmt, "-c", f"write -P 0x33 0 {52 * MIB}", "runs_old"])
        c.q("convert", "-n", "-O", fmt, "runs_a.raw", "runs_b.raw", "runs_old", check=True)
        c.run(["qemu-img", "convert", "-O", "raw", "-f", fmt, "runs_old", "runs_old.raw"])
        if open(c.path("runs_old.raw"), "rb").read() != want:
            c.fail(f"long zero runs, -n over old data ({fmt}): the target does not hold the sources")
        for name in ("runs_old", "runs_old.raw"):
            os.remove(c.path(name))
    for name in (a, b, c.path("runs_cat.raw")):
        os.remove(name)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    qimgtest.require_tools("qemu-img", "qemu-io")
    work = tempfile.mkdtemp(prefix="qimg-convert-")
    c = Checker(os.path.abspath(a.qimg), work)
    make_source(c.path("src.raw"), 6 * MIB + 512 * 3, 1)
    for t in (test_directions, test_concatenation, test_backing, test_snapshots, test_errors,
              test_determinism_and_sparseness, test_mapped_sources, test_more_options, test_long_zero_runs):
        try:
            t(c)
        except Exception as e:  # a crash of the test itself is a failure too
            c.fail(f"{t.__name__}: {type(e).__name__}: {e}")
    if c.problems:
        print(f"{len(c.problems)} problem(s); files kept in {work}")
        return 1
    if not a.keep:
        shutil.rmtree(work, ignore_errors=True)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
