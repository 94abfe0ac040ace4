#!/usr/bin/env python3
"""Hostile-input test: qimg must never crash on malformed images.

Each case starts from a small valid image made by qemu-img/qemu-io, pokes bytes
with struct, then runs

    qimg info IMG
    qimg info --output=json IMG
    qimg map --output=json IMG
    qimg convert -O raw IMG out.raw
    qimg io -c 'read 0 1M' IMG        (on a copy: io opens read-write)

Every run must: finish within 20 s; exit with a status < 128 (no signal, no
abort); print no sanitizer report; on failure print exactly one stderr line,
starting with "qimg: ". Each case states what it expects per command:
"fail" (non-zero required), "ok" (zero required) or "any". Header-level
corruption requires failure of every command. Read-only commands must leave
the file unchanged.

Usage: test_malformed.py --qimg PATH [-k SUBSTR] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

QEMU_IMG = os.environ.get("QEMU_IMG", "qemu-img")
QEMU_IO = os.environ.get("QEMU_IO", "qemu-io")
TIMEOUT = 20

# qcow2 header field offsets (qcow2-spec.txt, "Header")
H_MAGIC, H_VERSION, H_BACKING_OFF, H_BACKING_SIZE, H_CLUSTER_BITS = 0, 4, 8, 16, 20
H_SIZE, H_CRYPT, H_L1_SIZE, H_L1_OFF, H_RT_OFF, H_RT_CLUSTERS = 24, 32, 36, 40, 48, 56
H_NB_SNAP, H_SNAP_OFF, H_INCOMPAT, H_COMPAT, H_AUTOCLEAR = 60, 64, 72, 80, 88
H_REFCOUNT_ORDER, H_HEADER_LEN = 96, 100

L2E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
OFLAG_COPIED = 1 << 63
OFLAG_COMPRESSED = 1 << 62

CMDS = ("info", "info-json", "map", "convert", "io")
FAIL_ALL = {c: "fail" for c in CMDS}


class SetupError(Exception):
    pass


def sh(argv, cwd):
    p = qimgtest.run(argv, cwd=cwd, text=True, timeout=60)
    if p.returncode != 0:
        raise SetupError(f"setup command failed: {' '.join(map(str, argv))}\n{p.stdout}{p.stderr}")
    return p.stdout


def u32(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack(">I", f.read(4))[0]


def u64(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack(">Q", f.read(8))[0]


def poke(path, off, fmt, value):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(struct.pack(">" + fmt, value))


def poke_bytes(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def truncate(path, length):
    with open(path, "r+b") as f:
        f.truncate(length)


# ---------------------------------------------------------------------------
# valid starting images
# ---------------------------------------------------------------------------

def make_std(d, name="std.qcow2", opts="cluster_size=64k", extra=()):
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", opts, name, "2M"], d)
    cmds = ["write -P 0xaa 0 128k", "write -P 0xbb 1M 64k", *extra]
    args = []
    for c in cmds:
        args += ["-c", c]
    sh([QEMU_IO, "-f", "qcow2", *args, name], d)
    return os.path.join(d, name)


def make_compressed(d):
    p = make_std(d, "comp.qcow2", extra=("write -c -P 0xcc 256k 64k",))
    return p


def make_el2(d):
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k",
        "el2.qcow2", "2M"], d)
    sh([QEMU_IO, "-f", "qcow2", "-c", "write -P 0xaa 0 4k", "el2.qcow2"], d)
    return os.path.join(d, "el2.qcow2")


def make_snap(d):
    p = make_std(d, "snap.qcow2")
    sh([QEMU_IMG, "snapshot", "-c", "s1", "snap.qcow2"], d)
    sh([QEMU_IO, "-f", "qcow2", "-c", "write -P 0xdd 0 64k", "snap.qcow2"], d)
    return p


def l2_entry_offset(path, guest_index=0):
    """File offset of the L2 entry for guest cluster guest_index (L1[0] only)."""
    cluster_bits = u32(path, H_CLUSTER_BITS)
    l1 = u64(path, H_L1_OFF)
    l2 = u64(path, l1) & L2E_OFFSET_MASK
    ext = u64(path, H_INCOMPAT) & (1 << 4)
    return l2 + guest_index * (16 if ext else 8), cluster_bits


# ---------------------------------------------------------------------------
# cases: name -> (builder(dir) -> (path, fmt or None), expectations)
# ---------------------------------------------------------------------------

def header_poke(off, fmt, value):
    def build(d):
        p = make_std(d)
        poke(p, off, fmt, value)
        return p, None
    return build


def truncated(length, fmt=None):
    def build(d):
        p = make_std(d)
        truncate(p, length)
        return p, fmt
    return build


def bad_magic(d):
    p = make_std(d)
    poke(p, H_MAGIC, "I", 0x51464900)
    return p, "qcow2"


def l1_too_small(d):
    p = make_std(d)
    # 2 MiB virtual with 64k clusters needs one L1 entry; claim 4 TiB with l1_size 1
    poke(p, H_SIZE, "Q", 4 << 40)
    return p, None


def l1_off(value_fn):
    def build(d):
        p = make_std(d)
        poke(p, H_L1_OFF, "Q", value_fn(p))
        return p, None
    return build


def rt_off(value_fn):
    def build(d):
        p = make_std(d)
        poke(p, H_RT_OFF, "Q", value_fn(p))
        return p, None
    return build


def snap_poke(off, fmt, value):
    def build(d):
        p = make_snap(d)
        poke(p, off, fmt, value)
        return p, None
    return build


def backing_offset_out_of_cluster(d):
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "base.qcow2", "2M"], d)
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2"], d)
    p = os.path.join(d, "ov.qcow2")
    poke(p, H_BACKING_OFF, "Q", 65536 + 8)
    return p, None


def backing_size_5000(d):
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "base.qcow2", "2M"], d)
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "ov.qcow2"], d)
    p = os.path.join(d, "ov.qcow2")
    poke(p, H_BACKING_SIZE, "I", 5000)
    return p, None


def l1_entry(kind):
    def build(d):
        p = make_std(d)
        l1 = u64(p, H_L1_OFF)
        e = u64(p, l1)
        if kind == "beyond-eof":
            e = OFLAG_COPIED | (1 << 50)
        else:
            e = e + 512
        poke(p, l1, "Q", e)
        return p, None
    return build


def l2_entry(kind):
    def build(d):
        p = make_std(d)
        off, _ = l2_entry_offset(p, 0)
        e = u64(p, off)
        if kind == "reserved":
            e |= 0x2 | (1 << 57)
        else:
            e += 512
        poke(p, off, "Q", e)
        return p, None
    return build


def compressed(kind):
    def build(d):
        p = make_compressed(d)
        off, cluster_bits = l2_entry_offset(p, 4)     # guest 256k = cluster 4
        e = u64(p, off)
        if not e & OFLAG_COMPRESSED:
            raise SetupError(f"expected a compressed L2 entry, got {e:#x}")
        x = 62 - (cluster_bits - 8)
        host = e & ((1 << x) - 1)
        if kind == "past-eof":
            size = os.path.getsize(p)
            e = (e & ~((1 << x) - 1)) | (size + (1 << 20))
            poke(p, off, "Q", e)
        else:
            garbage = bytes((i * 131 + 7) & 0xff for i in range(512))
            poke_bytes(p, host, garbage)
        return p, None
    return build


def el2_alloc_and_zero(d):
    p = make_el2(d)
    off, _ = l2_entry_offset(p, 0)
    bitmap = u64(p, off + 8)
    poke(p, off + 8, "Q", bitmap | (1 << 32) | 1)
    return p, None


def backing_self(d):
    # qemu-img refuses to create this directly: name a same-length file, then rename it
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-u", "-b", "zelf.qcow2", "-F", "qcow2",
        "self.qcow2", "2M"], d)
    p = os.path.join(d, "self.qcow2")
    off, size = u64(p, H_BACKING_OFF), u32(p, H_BACKING_SIZE)
    with open(p, "rb") as f:
        f.seek(off)
        if f.read(size) != b"zelf.qcow2":
            raise SetupError("backing file name not where the header says")
    poke_bytes(p, off, b"self.qcow2")
    return p, None


def backing_loop(d):
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-u", "-b", "b.qcow2", "-F", "qcow2",
        "a.qcow2", "2M"], d)
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-u", "-b", "a.qcow2", "-F", "qcow2",
        "b.qcow2", "2M"], d)
    return os.path.join(d, "a.qcow2"), None


def empty_raw(d):
    p = os.path.join(d, "empty.raw")
    open(p, "wb").close()
    return p, None


def eof(p):
    return os.path.getsize(p)


READS_FAIL = {"info": "any", "info-json": "any", "map": "fail", "convert": "fail", "io": "fail"}
DATA_FAIL = {"info": "any", "info-json": "any", "map": "any", "convert": "fail", "io": "fail"}
ANY = {c: "any" for c in CMDS}
# qemu-img info does not open the backing chain, so only commands that read through it must fail
CHAIN_FAIL = {"info": "any", "info-json": "any", "map": "fail", "convert": "fail", "io": "fail"}

CASES = {
    # truncated files
    "truncated-3": (truncated(3), ANY),                   # probes as a 3-byte raw file
    "truncated-3-f-qcow2": (truncated(3, "qcow2"), FAIL_ALL),
    "truncated-50": (truncated(50), FAIL_ALL),
    "truncated-100": (truncated(100), FAIL_ALL),
    "truncated-1-cluster": (truncated(65536), ANY),      # tables now beyond EOF
    "truncated-mid-data": (truncated(65536 * 5 + 1000), ANY),
    # header fields
    "bad-magic-f-qcow2": (bad_magic, FAIL_ALL),
    "version-1": (header_poke(H_VERSION, "I", 1), FAIL_ALL),
    "version-4": (header_poke(H_VERSION, "I", 4), FAIL_ALL),
    "cluster-bits-8": (header_poke(H_CLUSTER_BITS, "I", 8), FAIL_ALL),
    "cluster-bits-22": (header_poke(H_CLUSTER_BITS, "I", 22), FAIL_ALL),
    "cluster-bits-63": (header_poke(H_CLUSTER_BITS, "I", 63), FAIL_ALL),
    "l1-size-huge": (header_poke(H_L1_SIZE, "I", 0xFFFFFFFF), FAIL_ALL),
    "l1-size-too-small": (l1_too_small, FAIL_ALL),
    "l1-offset-unaligned": (l1_off(lambda p: u64(p, H_L1_OFF) + 8), FAIL_ALL),
    "l1-offset-beyond-eof": (l1_off(lambda p: 1 << 40), FAIL_ALL),
    "refcount-table-unaligned": (rt_off(lambda p: u64(p, H_RT_OFF) + 8), FAIL_ALL),
    "refcount-table-beyond-eof": (rt_off(lambda p: 1 << 40), FAIL_ALL),
    "refcount-table-clusters-huge": (header_poke(H_RT_CLUSTERS, "I", 0xFFFFFFFF), FAIL_ALL),
    "refcount-order-7": (header_poke(H_REFCOUNT_ORDER, "I", 7), FAIL_ALL),
    "nb-snapshots-huge": (snap_poke(H_NB_SNAP, "I", 0xFFFFFFFF), FAIL_ALL),
    "snapshot-table-beyond-eof": (snap_poke(H_SNAP_OFF, "Q", 1 << 40), FAIL_ALL),
    "snapshot-table-unaligned": (snap_poke(H_SNAP_OFF, "Q", 65536 * 3 + 4), FAIL_ALL),
    "header-length-odd": (header_poke(H_HEADER_LEN, "I", 105), FAIL_ALL),
    "header-length-huge": (header_poke(H_HEADER_LEN, "I", 0x7FFFFFF8), FAIL_ALL),
    "header-length-short": (header_poke(H_HEADER_LEN, "I", 96), FAIL_ALL),
    "backing-offset-out-of-cluster": (backing_offset_out_of_cluster, FAIL_ALL),
    "backing-size-5000": (backing_size_5000, FAIL_ALL),
    "unknown-incompatible-bit": (header_poke(H_INCOMPAT, "Q", 1 << 40), FAIL_ALL),
    "encryption-method-9": (header_poke(H_CRYPT, "I", 9), FAIL_ALL),
    # L1/L2 entries: the header is fine, reading through the entry must fail
    "l1-entry-beyond-eof": (l1_entry("beyond-eof"), READS_FAIL),
    "l1-entry-unaligned": (l1_entry("unaligned"), READS_FAIL),
    "l2-entry-reserved-bits": (l2_entry("reserved"), ANY),
    "l2-entry-unaligned": (l2_entry("unaligned"), READS_FAIL),
    # compressed clusters: metadata is fine, decompression must fail
    "compressed-past-eof": (compressed("past-eof"), DATA_FAIL),
    "compressed-garbage": (compressed("garbage"), DATA_FAIL),
    # extended L2: subcluster 0 both allocated and zero (invalid)
    "el2-allocated-and-zero": (el2_alloc_and_zero, READS_FAIL),
    # backing chain loops
    "backing-self": (backing_self, CHAIN_FAIL),
    "backing-loop-a-b-a": (backing_loop, CHAIN_FAIL),
    # degenerate raw file
    "raw-empty": (empty_raw, {"info": "ok", "info-json": "ok", "map": "ok", "convert": "ok",
                              "io": "fail"}),
}


def argv_for(qimg, cmd, img, fmt, out):
    f = ["-f", fmt] if fmt else []
    return {
        "info": [qimg, "info", *f, img],
        "info-json": [qimg, "info", *f, "--output=json", img],
        "map": [qimg, "map", *f, "--output=json", img],
        "convert": [qimg, "convert", *f, "-O", "raw", img, out],
        "io": [qimg, "io", *f, "-c", "read 0 1M", img],
    }[cmd]


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_run(qimg, case, cmd, img, fmt, expect, work):
    """Run one command; return a list of problems."""
    out = os.path.join(work, f"out-{cmd}.raw")
    target = img
    if cmd == "io":
        target = os.path.join(work, "io-copy-" + os.path.basename(img))
        shutil.copyfile(img, target)
    before = sha(img)
    argv = argv_for(qimg, cmd, target, fmt, out)
    shown = " ".join(argv)
    try:
        rc, _, err = qimgtest.run_killable(argv, cwd=work, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        print(f"  [PROBLEM] {cmd:9} timed out", flush=True)
        return [f"{case}: `{shown}` did not finish within {TIMEOUT}s"]
    problems = []
    lines = err.splitlines()
    if rc < 0 or rc >= 128:
        problems.append(f"crashed (exit status {rc})")
    for marker in ("AddressSanitizer", "runtime error", "LeakSanitizer", "terminate called",
                   "Segmentation fault", "Aborted", "stack trace", "Assertion"):
        if marker in err:
            problems.append(f"stderr contains {marker!r}")
    if rc != 0:
        if len(lines) != 1 or not lines[0].startswith("qimg: "):
            problems.append(f"on failure stderr must be exactly one line starting with 'qimg: ', "
                            f"got {len(lines)} line(s)")
    else:
        if len(lines) > 1 or (lines and not lines[0].startswith("qimg: ")):
            problems.append(f"succeeded but stderr has {len(lines)} unexpected line(s)")
    if expect == "fail" and rc == 0:
        problems.append("succeeded, but this corruption must be reported (non-zero exit)")
    if expect == "ok" and rc != 0:
        problems.append("failed, but this input is valid for this command")
    if cmd != "io" and os.path.exists(img) and sha(img) != before:
        problems.append("a read-only command modified the image")
    status = "ok" if not problems else "PROBLEM"
    print(f"  [{status}] {cmd:9} expect={expect:4} rc={rc} stderr={err.strip()[:160]!r}", flush=True)
    if problems:
        tail = err if len(err) < 3000 else err[:3000] + "..."
        return [f"{case}: `{shown}`: " + "; ".join(problems) + (f"\n      stderr: {tail}" if err else "")]
    return []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    ap.add_argument("-k", default="", help="only cases containing this substring")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    qimg = os.path.abspath(a.qimg)
    qimgtest.require_tools(QEMU_IMG, QEMU_IO)
    root = tempfile.mkdtemp(prefix="qimg-malformed-")
    print(f"work directory: {root}")
    problems = []
    ncases = 0
    for name, (build, expect) in CASES.items():
        if a.k not in name:
            continue
        ncases += 1
        work = os.path.join(root, name)
        os.makedirs(work)
        print(f"case {name}", flush=True)
        try:
            img, fmt = build(work)
        except (SetupError, OSError, struct.error) as e:
            problems.append(f"{name}: could not build the image: {e}")
            print(f"  [PROBLEM] setup: {e}")
            continue
        for cmd in CMDS:
            problems += check_run(qimg, name, cmd, img, fmt, expect[cmd], work)
    if ncases == 0:
        problems.append(f"no case matches -k {a.k!r}")
    if problems:
        print(f"\n{len(problems)} problem(s) in {ncases} cases:")
        for pr in problems:
            print(f"  - {pr}")
        print(f"kept work directory: {root}")
        return 1
    if not a.keep:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nall {ncases} cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
