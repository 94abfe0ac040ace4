#!/usr/bin/env python3
"""Random operation sequences, replayed through qemu-io and `qimg io` on copies of the
same image, for a set of image configurations (cluster sizes, extended L2, compat 0.10,
refcount widths, lazy refcounts, backing files, compressed writes, an internal snapshot).

For every (configuration, seed):
  1. qemu-img creates the image (and its backing file); both copies start identical;
  2. a seeded sequence of writes (patterned, unaligned, crossing clusters), zero writes
     (with and without unmap), discards and compressed writes goes through qemu-io into
     copy A and through qimg io into copy B, in chunks with a flush between them;
  3. qemu-img check must find B clean (leaks allowed only where A has them too), and
     qimg check must agree with qemu-img check on both copies;
  4. A and B must read the same (`qemu-img compare`), and so must a raw conversion of B
     made by qimg and one made by qemu-img;
  5. then the other direction: qimg io continues on A and qemu-io on B with a second
     sequence, and the images must again read the same and check clean.

Usage: test_random_ops.py --qimg PATH [--seeds N] [-k SUBSTR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

QEMU_IMG = os.environ.get("QEMU_IMG", "qemu-img")
QEMU_IO = os.environ.get("QEMU_IO", "qemu-io")
TIMEOUT = 120
KIB, MIB = 1 << 10, 1 << 20
SIZE = 4 * MIB

# name -> (qemu-img create options, backing: None | "raw" | "qcow2", snapshot between phases)
CONFIGS = {
    "std64k": ("cluster_size=64k", None, False),
    "c512": ("cluster_size=512", None, False),
    "c4k-rc1": ("cluster_size=4k,refcount_bits=1", None, False),
    "el2-64k": ("cluster_size=64k,extended_l2=on", None, False),
    "el2-16k-lazy": ("cluster_size=16k,extended_l2=on,lazy_refcounts=on", None, False),
    "el2-2m": ("cluster_size=2M,extended_l2=on", None, False),
    "v2": ("compat=0.10,cluster_size=64k", None, False),
    "rc64-zstd": ("refcount_bits=64,compression_type=zstd", None, False),
    "std-over-raw": ("cluster_size=64k", "raw", False),
    "el2-over-qcow2": ("cluster_size=32k,extended_l2=on", "qcow2", False),
    "v2-over-raw": ("compat=0.10,cluster_size=4k", "raw", False),
    "std-snapshot": ("cluster_size=16k", None, True),
    "el2-snapshot": ("cluster_size=64k,extended_l2=on", "qcow2", True),
}


def cluster_size(opts: str) -> int:
    for kv in opts.split(","):
        if kv.startswith("cluster_size="):
            v = kv.split("=", 1)[1]
            return int(v[:-1]) * {"k": KIB, "M": MIB}[v[-1]] if v[-1] in "kM" else int(v)
    return 64 * KIB


def compressed_ops(rng: random.Random, cs: int) -> list[str]:
    """Compressed writes of whole clusters (qemu-io's requirement) into an image nothing has
    written yet. They run in a process of their own, before anything else: qemu-io 7.2 mixing
    compressed writes with discards and overwrites in one process left its own image with a
    data cluster inside a host cluster holding compressed data (qemu-img check: "OFLAG_COPIED
    data cluster ... refcount=2", then read errors), which is QEMU's to fix, not ours to judge."""
    clusters = SIZE // cs
    if cs < 4096:
        return []
    picked = rng.sample(range(clusters), k=min(clusters, rng.randint(2, 8)))
    return [f"write -c -P 0x{rng.randrange(1, 256):02x} {c * cs} {cs}" for c in sorted(picked)]


def random_ops(rng: random.Random, cs: int, v2: bool, count: int) -> list[str]:
    """A sequence of qemu-io commands inside SIZE. Discards are whole clusters (QEMU ignores
    partial ones, so only those have a defined effect). The tools may lay clusters out
    differently; the contents must not differ."""
    ops = []
    clusters = SIZE // cs

    for _ in range(count):
        kind = rng.random()
        if kind < 0.45:  # patterned write: anywhere, any length up to 3 clusters
            length = min(rng.choice([1, 512, 4096, rng.randint(1, 3 * cs), cs]), SIZE // 2)
            off = rng.randrange(0, SIZE - length + 1)
            if rng.random() < 0.5:
                off -= off % 512
            ops.append(f"write -P 0x{rng.randrange(1, 256):02x} {off} {length}")
        elif kind < 0.65:  # zero write, sector aligned (qemu-io requires it)
            length = min(rng.choice([512, 4096, cs, 2 * cs, rng.randint(1, 8) * 512]), SIZE // 2)
            off = rng.randrange(0, (SIZE - length) // 512 + 1) * 512
            unmap = "-u " if rng.random() < 0.5 and not v2 else ""
            ops.append(f"write -z {unmap}{off} {length}")
        elif kind < 0.8:  # whole-cluster discard
            n = rng.randint(1, min(3, clusters))
            c = rng.randrange(0, clusters - n + 1)
            ops.append(f"discard {c * cs} {n * cs}")
        else:
            ops.append("flush")
    return ops


def run(argv, cwd):
    return qimgtest.run(argv, timeout=TIMEOUT, cwd=cwd, text=True)


def apply(tool, img, ops, cwd) -> str | None:
    """Applies ops in chunks of 40 (one process each); returns an error text or None."""
    for i in range(0, len(ops), 40):
        argv = [tool] if tool == QEMU_IO else [tool[0], "io"]
        argv += ["-f", "qcow2"]
        for op in ops[i:i + 40]:
            argv += ["-c", op]
        r = run(argv + [img], cwd)
        if r.returncode != 0 or "error" in (r.stdout + r.stderr).lower():
            return f"{argv[0]} failed ({r.returncode}): {(r.stdout + r.stderr).strip()[-400:]}"
    return None


def check_summary(argv, cwd):
    r = run(argv, cwd)
    return r.returncode, r.stdout.strip().splitlines()[:1]


def compare_phase(qimg, d, a, b, tag) -> list[str]:
    problems = []
    r = run([QEMU_IMG, "compare", a, b], d)
    if r.returncode != 0:
        problems.append(f"{tag}: qemu-io's and qimg's copies read differently: {r.stdout.strip()} {r.stderr.strip()}")
    for img in (a, b):
        q = run([QEMU_IMG, "check", img], d)
        i = run([qimg, "check", img], d)
        if q.returncode not in (0, 3):  # 3: leaks only (allowed, e.g. after COW over compressed clusters)
            problems.append(f"{tag}: qemu-img check {img}: exit {q.returncode}: {q.stdout.strip()} {q.stderr.strip()}")
        if (q.returncode, q.stdout, q.stderr) != (i.returncode, i.stdout, i.stderr):
            problems.append(f"{tag}: check {img}: qemu-img {q.returncode} {q.stdout!r} {q.stderr!r}, "
                            f"qimg {i.returncode} {i.stdout!r} {i.stderr!r}")
    q = run([QEMU_IMG, "convert", "-O", "raw", b, "bq.raw"], d)
    i = run([qimg, "convert", "-O", "raw", b, "bi.raw"], d)
    if q.returncode or i.returncode:
        problems.append(f"{tag}: convert -O raw failed: qemu-img {q.stderr.strip()}, qimg {i.stderr.strip()}")
    elif open(os.path.join(d, "bq.raw"), "rb").read() != open(os.path.join(d, "bi.raw"), "rb").read():
        problems.append(f"{tag}: qimg and qemu-img read qimg's copy differently")
    return problems


def run_case(qimg, root, name, seed, ops_per_phase) -> list[str]:
    opts, backing, snapshot = CONFIGS[name]
    tag = f"{name}/seed{seed}"
    d = os.path.join(root, f"{name}-{seed}")
    os.makedirs(d)
    cs = cluster_size(opts)
    v2 = "compat=0.10" in opts
    rng = random.Random(f"{name}-{seed}")
    argv = [QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", opts]
    if backing:
        bopts = ["-f", backing] + (["-o", "cluster_size=4k"] if backing == "qcow2" else [])
        run([QEMU_IMG, "create", "-q", *bopts, f"base.{backing}", str(SIZE)], d)
        base_ops = [f"write -P 0x{rng.randrange(1, 256):02x} {rng.randrange(0, SIZE // 65536) * 65536} "
                    f"{rng.choice([4096, 65536])}" for _ in range(12)]
        r = run([QEMU_IO, "-f", backing] + sum((["-c", o] for o in base_ops), []) + [f"base.{backing}"], d)
        if r.returncode:
            return [f"{tag}: preparing the backing file: {r.stderr.strip()}"]
        argv += ["-b", f"base.{backing}", "-F", backing]
    r = run(argv + ["a.qcow2", str(SIZE)], d)
    if r.returncode:
        return [f"{tag}: qemu-img create: {r.stderr.strip()}"]
    shutil.copy(os.path.join(d, "a.qcow2"), os.path.join(d, "b.qcow2"))
    problems = []
    compressed = compressed_ops(rng, cs)
    first = random_ops(rng, cs, v2, ops_per_phase)
    for tool, img in ((QEMU_IO, "a.qcow2"), ((qimg,), "b.qcow2")):
        for ops in (compressed, first):
            if ops and (err := apply(tool, img, ops, d)) is not None:
                problems.append(f"{tag}: phase 1: {err}")
    if problems:
        return problems
    problems += compare_phase(qimg, d, "a.qcow2", "b.qcow2", f"{tag} phase 1")
    if snapshot:
        for img in ("a.qcow2", "b.qcow2"):
            run([QEMU_IMG, "snapshot", "-c", "s1", img], d)
    second = random_ops(rng, cs, v2, ops_per_phase)
    for tool, img in (((qimg,), "a.qcow2"), (QEMU_IO, "b.qcow2")):
        if (err := apply(tool, img, second, d)) is not None:
            problems.append(f"{tag}: phase 2: {err}")
    if not problems:
        problems += compare_phase(qimg, d, "b.qcow2", "a.qcow2", f"{tag} phase 2")
    if snapshot and not problems:
        for img, out in (("a.qcow2", "sa.raw"), ("b.qcow2", "sb.raw")):
            run([QEMU_IMG, "convert", "-l", "s1", "-O", "raw", img, out], d)
        if open(os.path.join(d, "sa.raw"), "rb").read() != open(os.path.join(d, "sb.raw"), "rb").read():
            problems.append(f"{tag}: the snapshots read differently")
    if not problems:
        shutil.rmtree(d)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--ops", type=int, default=120, help="operations per phase")
    ap.add_argument("-k", default="")
    ap.add_argument("--keep", action="store_true")
    a = ap.parse_args()
    qimg = os.path.abspath(a.qimg)
    qimgtest.require_tools(QEMU_IMG, QEMU_IO)
    root = tempfile.mkdtemp(prefix="qimg-random-ops-")
    calls = [(lambda n, s: (1, run_case(qimg, root, n, s, a.ops)), n, s)
             for n in CONFIGS if a.k in n for s in range(a.seeds)]
    steps, failures = qimgtest.run_cases(calls, workers=2)
    for f in failures:
        print("FAIL " + f)
    print(f"{steps} random sequences of 2 x {a.ops} operations compared with qemu-io, {len(failures)} failures")
    if failures or a.keep:
        print(f"work directory kept: {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failures or steps == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
