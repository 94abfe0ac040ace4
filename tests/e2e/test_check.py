#!/usr/bin/env python3
"""qimg check against qemu-img check, on clean and on corrupted images.

Clean images (several creation options) must check clean with exit 0, and the
JSON must equal qemu-img's (allocated/fragmented/compressed counts,
image-end-offset, total-clusters, key order; filename aside).

Corrupted images are made from real images written by qemu-img/qemu-io, with
byte-level edits (poke a refcount, an L1/L2 entry, a bitmap, a refcount table
entry). For each case:
  1. `qemu-img check --output=json` and `qimg check --output=json` on the same
     file must agree on the exit code and on the corruption, leak and
     check-error counts (cases where they legitimately differ say why);
  2. `qimg check -r all` on a copy must leave an image that `qemu-img check`
     and `qimg check` find clean (exit 0), with the dirty and corrupt bits clear;
  3. where the corruption did not destroy data, the guest content after the
     repair (`qemu-img convert -O raw`) equals the content before the edit.

Usage: test_check.py --qimg PATH [-k SUBSTR] [--keep]
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

QEMU_IMG = os.environ.get("QEMU_IMG", "qemu-img")
QEMU_IO = os.environ.get("QEMU_IO", "qemu-io")
TIMEOUT = 60

H_CLUSTER_BITS, H_L1_SIZE, H_L1_OFF, H_RT_OFF, H_RT_CLUSTERS = 20, 36, 40, 48, 56
H_INCOMPAT, H_REFCOUNT_ORDER = 72, 96
INCOMPAT_DIRTY, INCOMPAT_CORRUPT, INCOMPAT_EXTL2 = 1, 2, 16
OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED, COMPRESSED = 1 << 63, 1 << 62


class SetupError(Exception):
    pass


def run(argv, cwd=None):
    return qimgtest.run(argv, cwd=cwd, text=True, timeout=TIMEOUT)


def sh(argv, cwd=None):
    p = run(argv, cwd)
    if p.returncode != 0:
        raise SetupError(f"setup command failed: {' '.join(map(str, argv))}\n{p.stdout}{p.stderr}")
    return p.stdout


# ---------------------------------------------------------------------------
# byte-level access to a qcow2 file
# ---------------------------------------------------------------------------

class Qcow2:
    def __init__(self, path):
        self.path = path
        self.cluster_bits = self.u32(H_CLUSTER_BITS)
        self.cs = 1 << self.cluster_bits
        self.l1_size = self.u32(H_L1_SIZE)
        self.l1_off = self.u64(H_L1_OFF)
        self.rt_off = self.u64(H_RT_OFF)
        self.order = self.u32(H_REFCOUNT_ORDER)
        self.ext = bool(self.u64(H_INCOMPAT) & INCOMPAT_EXTL2)
        self.esize = 16 if self.ext else 8
        self.l2_entries = self.cs // self.esize

    def read(self, off, n):
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n).ljust(n, b"\0")

    def write(self, off, data):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def u32(self, off):
        return struct.unpack(">I", self.read(off, 4))[0]

    def u64(self, off):
        return struct.unpack(">Q", self.read(off, 8))[0]

    def p64(self, off, v):
        self.write(off, struct.pack(">Q", v))

    def size(self):
        return os.path.getsize(self.path)

    # L1/L2
    def l2_table(self, guest):
        e = self.u64(self.l1_off + 8 * (guest >> (self.cluster_bits * 2 - (4 if self.ext else 3))))
        return e & OFFSET_MASK

    def l2_pos(self, guest):
        """File offset of the L2 entry mapping guest offset `guest`."""
        idx = (guest >> self.cluster_bits) % self.l2_entries
        return self.l2_table(guest) + idx * self.esize

    def l2_entry(self, guest):
        return self.u64(self.l2_pos(guest))

    def host(self, guest):
        return self.l2_entry(guest) & OFFSET_MASK

    # refcounts (refcount_bits >= 8)
    def rc_pos(self, cluster):
        bits = 1 << self.order
        per_block = self.cs * 8 // bits
        block = self.u64(self.rt_off + 8 * (cluster // per_block)) & OFFSET_MASK
        assert block and bits >= 8, "test images use refcount_bits >= 8"
        return block + (cluster % per_block) * bits // 8, bits // 8

    def refcount(self, cluster):
        pos, n = self.rc_pos(cluster)
        return int.from_bytes(self.read(pos, n), "big")

    def set_refcount(self, cluster, v):
        pos, n = self.rc_pos(cluster)
        self.write(pos, v.to_bytes(n, "big"))


# ---------------------------------------------------------------------------
# base images
# ---------------------------------------------------------------------------

def qemu_io(d, img, *cmds):
    args = []
    for c in cmds:
        args += ["-c", c]
    sh([QEMU_IO, "-f", "qcow2", *args, img], d)


def create(d, name, opts, size="8M"):
    sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", opts, name, size], d)
    return os.path.join(d, name)


def base_std64(d):
    """64k clusters, data, a compressed cluster, a zero cluster, a snapshot, then COW writes."""
    p = create(d, "std64.qcow2", "cluster_size=64k")
    qemu_io(d, p, "write -P 0x11 0 192k", "write -P 0x22 1M 64k", "write -c -P 0x33 2M 64k", "write -z 3M 64k")
    sh([QEMU_IMG, "snapshot", "-c", "s1", p], d)
    qemu_io(d, p, "write -P 0x44 64k 64k", "write -P 0x55 5M 128k")
    return p


def base_std4k(d):
    """4k clusters, several L2 tables, a snapshot."""
    p = create(d, "std4k.qcow2", "cluster_size=4k")
    qemu_io(d, p, "write -P 0x11 0 16k", "write -P 0x22 1M 8k", "write -c -P 0x33 3M 4k")
    sh([QEMU_IMG, "snapshot", "-c", "s1", p], d)
    qemu_io(d, p, "write -P 0x44 4k 4k", "write -P 0x55 6M 12k")
    return p


def base_ext(d):
    """Extended L2, 64k clusters: partial subclusters, zero subclusters, a compressed cluster."""
    p = create(d, "ext.qcow2", "cluster_size=64k,extended_l2=on")
    qemu_io(d, p, "write -P 0x11 0 6k", "write -P 0x22 64k 64k", "write -z 130k 4k", "write -P 0x66 136k 2k",
            "write -c -P 0x33 1M 64k", "write -z 2M 64k")
    return p


BASES = {"std64": base_std64, "std4k": base_std4k, "ext": base_ext}


# ---------------------------------------------------------------------------
# corruptions: each edits the file in place, given a Qcow2 view
# ---------------------------------------------------------------------------

def c_leak_extra(q):
    """A cluster appended to the file with refcount 1 that nothing references."""
    n = (q.size() + q.cs - 1) // q.cs
    q.write(n * q.cs, b"\0" * q.cs)
    q.set_refcount(n, 1)


def c_leak_bump(q):
    """Refcount of an unshared data cluster bumped 1 -> 2 (also makes its COPIED flag wrong)."""
    c = q.host(q.cs) >> q.cluster_bits  # rewritten after the snapshot (std) / only copy (ext)
    assert q.refcount(c) == 1
    q.set_refcount(c, 2)


def c_refcount_zero(q):
    """Refcount of a used data cluster set to 0."""
    q.set_refcount(q.host(q.cs) >> q.cluster_bits, 0)


def c_refcount_low(q):
    """Refcount of a cluster shared with the snapshot lowered 2 -> 1."""
    c = q.host(0) >> q.cluster_bits
    assert q.refcount(c) == 2, q.refcount(c)
    q.set_refcount(c, 1)


def c_l2_refcount_zero(q):
    """Refcount of the active L2 table set to 0."""
    q.set_refcount(q.l2_table(0) >> q.cluster_bits, 0)


def c_copied_cleared(q):
    pos = q.l2_pos(q.cs)
    q.p64(pos, q.u64(pos) & ~COPIED)


def c_copied_set(q):
    """COPIED set on an entry whose cluster is shared with the snapshot (refcount 2)."""
    pos = q.l2_pos(0)
    assert q.refcount((q.u64(pos) & OFFSET_MASK) >> q.cluster_bits) == 2
    q.p64(pos, q.u64(pos) | COPIED)


def c_l1_copied_cleared(q):
    pos = q.l1_off
    q.p64(pos, q.u64(pos) & ~COPIED)


def c_l2_unaligned(q):
    pos = q.l2_pos(q.cs)
    q.p64(pos, q.u64(pos) | (q.cs >> 1))


def c_l2_past_eof(q):
    pos = q.l2_pos(q.cs)
    e = q.u64(pos)
    beyond = (q.size() + 16 * q.cs) & ~(q.cs - 1)
    q.p64(pos, (e & ~OFFSET_MASK) | beyond)


def c_l2_reserved(q):
    pos = q.l2_pos(q.cs)
    q.p64(pos, q.u64(pos) | (1 << 56))


def c_l1_reserved(q):
    q.p64(q.l1_off, q.u64(q.l1_off) | (1 << 57))


def c_reftable_reserved(q):
    q.p64(q.rt_off, q.u64(q.rt_off) | 1)


def c_refblock_outside(q):
    q.p64(q.rt_off, (q.size() + 64 * q.cs) & ~(q.cs - 1))


def c_ext_alloc_and_zero(q):
    """Allocated subcluster 0 also marked zero."""
    pos = q.l2_pos(0) + 8
    bm = q.u64(pos)
    assert bm & 1
    q.p64(pos, bm | (1 << 32))


def c_ext_alloc_no_host(q):
    """Allocation bit on an entry without a host cluster."""
    pos = q.l2_pos(3 * q.cs) + 8  # guest 192k: never written
    assert q.u64(pos - 8) == 0
    q.p64(pos, q.u64(pos) | 1)


def c_ext_compressed_bitmap(q):
    pos = q.l2_pos(1 << 20)
    assert q.u64(pos) & COMPRESSED
    q.p64(pos + 8, 1)


def c_ext_bit0(q):
    pos = q.l2_pos(0)
    q.p64(pos, q.u64(pos) | 1)


def c_dirty_leak(q):
    c_leak_extra(q)
    q.p64(H_INCOMPAT, q.u64(H_INCOMPAT) | INCOMPAT_DIRTY)


def c_corrupt_bit_copied(q):
    c_copied_cleared(q)
    q.p64(H_INCOMPAT, q.u64(H_INCOMPAT) | INCOMPAT_CORRUPT)


# name: (corruption, bases, content after repair, note)
#   content "original": the repaired image reads like the image before the edit;
#   "corrupted": like qemu-img reads the corrupted image (data the edit destroyed stays lost);
#   None: qemu-img cannot read the corrupted image and the edit lost data.
#   note: why qimg and qemu-img legitimately differ (None: they must agree).
CASES = {
    "leak-extra": (c_leak_extra, ("std64", "std4k", "ext"), "original", None),
    "leak-bump": (c_leak_bump, ("std64", "std4k", "ext"), "original", None),
    "refcount-zero": (c_refcount_zero, ("std64", "std4k", "ext"), "original", None),
    "refcount-low": (c_refcount_low, ("std64", "std4k"), "original", None),
    "l2-refcount-zero": (c_l2_refcount_zero, ("std64", "std4k", "ext"), "original", None),
    "copied-cleared": (c_copied_cleared, ("std64", "std4k", "ext"), "original", None),
    "copied-set": (c_copied_set, ("std64", "std4k"), "original", None),
    "l1-copied-cleared": (c_l1_copied_cleared, ("std64", "std4k", "ext"), "original", None),
    # The data cluster cannot be read (qemu-img convert fails); the repair makes it read as zeros.
    "l2-unaligned": (c_l2_unaligned, ("std64", "std4k", "ext"), None, None),
    # Reads past the end of the file are zeros before and after the repair.
    "l2-past-eof": (c_l2_past_eof, ("std64", "std4k", "ext"), "corrupted", None),
    "l2-reserved": (c_l2_reserved, ("std64", "std4k", "ext"), "original", None),
    "l1-reserved": (c_l1_reserved, ("std64", "std4k", "ext"), "original", None),
    "reftable-reserved": (c_reftable_reserved, ("std64", "std4k", "ext"), "original", None),
    "refblock-outside": (c_refblock_outside, ("std64", "std4k", "ext"), "original", None),
    "ext-alloc-and-zero": (c_ext_alloc_and_zero, ("ext",), "original", None),
    "ext-alloc-no-host": (c_ext_alloc_no_host, ("ext",), "original", None),
    "ext-compressed-bitmap": (c_ext_compressed_bitmap, ("ext",), "original", None),
    # The spec reserves bit 0 of a standard descriptor with extended L2 entries;
    # QEMU ignores the bit (L2E_STD_RESERVED_MASK lacks it), qimg reports it.
    "ext-bit0": (c_ext_bit0, ("ext",), "original", "qemu-img does not check bit 0 with extended L2"),
    "dirty-leak": (c_dirty_leak, ("std64", "ext"), "original", None),
    "corrupt-bit": (c_corrupt_bit_copied, ("std64",), "original", None),
}


# ---------------------------------------------------------------------------
# running and comparing
# ---------------------------------------------------------------------------

def check_json(argv):
    p = run(argv)
    try:
        data = json.loads(p.stdout) if p.stdout.strip() else {}
    except json.JSONDecodeError:
        data = {}
    return p.returncode, data, p.stderr


def raw_content(d, img, name):
    out = os.path.join(d, name)
    p = run([QEMU_IMG, "convert", "-O", "raw", img, out])
    return out if p.returncode == 0 else None


def counts(j):
    return {k: j.get(k, 0) for k in ("corruptions", "leaks", "check-errors")}


def header_bits(path):
    with open(path, "rb") as f:
        f.seek(H_INCOMPAT)
        return struct.unpack(">Q", f.read(8))[0]


def run_case(qimg, root, base_paths, name, base):
    corrupt, _, content, note = CASES[name]
    problems = []
    d = os.path.join(root, f"{name}-{base}")
    os.makedirs(d)
    img = os.path.join(d, "corrupt.qcow2")
    shutil.copy(base_paths[base], img)
    corrupt(Qcow2(img))
    before = raw_content(d, base_paths[base], "original.raw")
    corrupted_raw = raw_content(d, img, "corrupted.raw") if content == "corrupted" else None

    q_rc, q_json, _ = check_json([QEMU_IMG, "check", "--output=json", img])
    m_rc, m_json, m_err = check_json([qimg, "check", "--output=json", img])
    tag = f"{name}/{base}"
    if note is None:
        if q_rc != m_rc or counts(q_json) != counts(m_json):
            problems.append(f"{tag}: qemu-img rc={q_rc} {counts(q_json)}, qimg rc={m_rc} {counts(m_json)}\n{m_err}")
    elif m_rc not in (2, 3):
        problems.append(f"{tag}: qimg should report the finding ({note}); rc={m_rc}")
    if note is None:  # the human summary on stdout too (findings go to stderr in both)
        qh, mh = run([QEMU_IMG, "check", img]), run([qimg, "check", img])
        if qh.stdout != mh.stdout:
            problems.append(f"{tag}: human output differs\n--- qemu-img\n{qh.stdout}--- qimg\n{mh.stdout}")
    if m_rc in (2, 3) and not m_err.strip():
        problems.append(f"{tag}: qimg printed no finding")
    if q_rc == 0 and note is None:
        problems.append(f"{tag}: the corruption did not corrupt (qemu-img check is clean)")

    rep = os.path.join(d, "repaired.qcow2")
    shutil.copy(img, rep)
    r = run([qimg, "check", "-r", "all", rep])
    if r.returncode != 0:
        problems.append(f"{tag}: qimg check -r all exited {r.returncode}\n{r.stdout}{r.stderr}")
    q2 = run([QEMU_IMG, "check", rep])
    if q2.returncode != 0:
        problems.append(f"{tag}: qemu-img check after repair exited {q2.returncode}\n{q2.stdout}{q2.stderr}")
    m2 = run([qimg, "check", rep])
    if m2.returncode != 0:
        problems.append(f"{tag}: qimg check after repair exited {m2.returncode}\n{m2.stderr}")
    if header_bits(rep) & (INCOMPAT_DIRTY | INCOMPAT_CORRUPT):
        problems.append(f"{tag}: dirty/corrupt bit still set after repair")
    if content:
        expected = before if content == "original" else corrupted_raw
        after = raw_content(d, rep, "repaired.raw")
        if not expected or not after or not filecmp.cmp(expected, after, shallow=False):
            problems.append(f"{tag}: guest content after repair differs from the {content} content")
    if name.startswith("leak") or name.startswith("copied"):
        # -r leaks: same outcome as qemu-img -r leaks (which also fixes COPIED flags
        # once the refcounts are right, and leaves corruptions otherwise)
        results = []
        for tool in (QEMU_IMG, qimg):
            rl = os.path.join(d, "leaks.qcow2")
            shutil.copy(img, rl)
            p = run([tool, "check", "-r", "leaks", "--output=json", rl])
            results.append((p.returncode, counts(json.loads(p.stdout)) if p.stdout.strip() else p.stderr))
        if results[0] != results[1]:
            problems.append(f"{tag}: check -r leaks: qemu-img {results[0]}, qimg {results[1]}")
    return problems


CLEAN = {
    "default": ("", ()),
    "4k": ("cluster_size=4k", ()),
    "2m": ("cluster_size=2M", ()),
    "ext": ("extended_l2=on", ("write -P 1 0 3k",)),
    "refcount1": ("refcount_bits=1", ()),
    "refcount64": ("refcount_bits=64", ()),
    "compat010": ("compat=0.10", ()),
    "lazy": ("lazy_refcounts=on", ()),
    "prealloc": ("preallocation=metadata", ()),
    "zstd": ("compression_type=zstd", ("write -c -P 9 4M 128k",)),
    "snapshot": ("", (), [["snapshot", "-c", "s1"]], ("write -P 0x77 0 64k",)),
    "bitmap": ("", (), [["bitmap", "--add", "IMG", "b0"]], ("write -P 0x77 0 64k",)),
}


def run_clean(qimg, root, name):
    opts, extra, *more = CLEAN[name]
    post, after = more if more else ([], ())
    d = os.path.join(root, f"clean-{name}")
    os.makedirs(d)
    img = create(d, "c.qcow2", opts or "cluster_size=64k", "16M")
    cmds = ["write -P 0x11 0 100k", "write -P 0x22 3M 64k", "write -z 10M 64k", "write -P 0x44 12M 32k"]
    if "preallocation" not in opts:  # compressed writes need unallocated clusters
        cmds.append("write -c -P 0x33 8M 2M")
    qemu_io(d, img, *cmds, *extra)
    for args in post:  # qemu-img subcommands; IMG stands for the image (appended when absent)
        sh([QEMU_IMG, *[img if x == "IMG" else x for x in args], *([] if "IMG" in args else [img])])
    if after:
        qemu_io(d, img, *after)
    problems = []
    for args in ([], ["--output=json"]):
        q = run([QEMU_IMG, "check", *args, img])
        m = run([qimg, "check", *args, img])
        out = m.stdout
        if args and "extended_l2" in opts:  # our own "subclusters" object follows qemu-img's keys
            j = json.loads(out, object_pairs_hook=lambda kv: dict(kv))
            if "subclusters" not in j:
                problems.append(f"clean/{name}: no subclusters object")
            j.pop("subclusters", None)
            out = json.dumps(j, indent=4) + "\n"
        if m.returncode != 0 or q.returncode != 0 or out != q.stdout:
            problems.append(f"clean/{name} {args}: qimg rc={m.returncode}\n--- qemu-img\n{q.stdout}--- qimg\n{m.stdout}{m.stderr}")
    return problems


def run_misc(qimg, root):
    problems = []
    d = os.path.join(root, "misc")
    os.makedirs(d)
    raw = os.path.join(d, "r.raw")
    sh([QEMU_IMG, "create", "-q", "-f", "raw", raw, "1M"])
    p = run([qimg, "check", raw])
    if p.returncode != 63 or "does not support checks" not in p.stderr:
        problems.append(f"raw: rc={p.returncode} {p.stderr}")
    img = create(d, "h.qcow2", "cluster_size=64k", "4M")
    qemu_io(d, img, "write -P 1 0 64k")
    q = Qcow2(img)
    c_leak_extra(q)
    p = run([qimg, "check", img])
    want = ["Leaked cluster", "1 leaked clusters were found on the image.",
            "This means waste of disk space, but no harm to data."]
    if p.returncode != 3 or not all(w in p.stdout + p.stderr for w in want):
        problems.append(f"human leak output: rc={p.returncode}\n{p.stdout}{p.stderr}")
    p = run([qimg, "check", "-r", "leaks", img])
    if p.returncode != 0 or "The following inconsistencies were found and repaired:" not in p.stdout:
        problems.append(f"human repair output: rc={p.returncode}\n{p.stdout}{p.stderr}")
    p = run([qimg, "check", "-q", img])
    if p.returncode != 0 or p.stdout:
        problems.append(f"-q: rc={p.returncode} stdout={p.stdout!r}")
    ext = create(d, "e.qcow2", "extended_l2=on", "4M")
    qemu_io(d, ext, "write -P 1 0 6k", "write -z 64k 64k")
    p = run([qimg, "check", "--output=json", ext])
    sub = json.loads(p.stdout).get("subclusters", {}) if p.returncode == 0 else {}
    if sub != {"allocated": 3, "zero": 32, "unallocated": 64 * 32 - 35, "bitmap-errors": 0}:
        problems.append(f"subclusters: rc={p.returncode} {p.stdout}")
    return problems


# Damaged snapshot table entries (issue 15): qemu-img opens the image, reports the entry as a
# corruption, skips its L1 table (so what only the snapshot used shows as leaks), and its
# `-r all` repairs the leaks and COPIED flags but cannot mend the entry. qimg must report the
# same (exit code, findings on stderr, summary, JSON) and repair at least as much: qemu-img finds
# no more in qimg's repaired image than in its own, and both read the same.
def shorten_extra(q, e, keep):
    """Rewrites the snapshot entry at e with only `keep` bytes of extra data (QEMU's check
    calls a v3 entry with fewer than 16 "incomplete"); the freed tail stays zero."""
    fixed = q.read(e, 40)
    extra_size, id_size, name_size = struct.unpack(">I", fixed[36:40])[0], *struct.unpack(">HH", fixed[12:16])
    extra = q.read(e + 40, extra_size)
    id_name = q.read(e + 40 + extra_size, id_size + name_size)
    entry = fixed[:36] + struct.pack(">I", keep) + extra[:keep] + id_name
    old = 40 + extra_size + id_size + name_size
    q.write(e, entry + bytes((old + 7) // 8 * 8 - len(entry)))


SNAPSHOT_DAMAGE = {
    "unaligned-l1": lambda q, e: q.p64(e, q.u64(e) + 0x200),
    "l1-too-large": lambda q, e: q.write(e + 8, struct.pack(">I", 0x500000)),
    "l1-past-eof": lambda q, e: q.p64(e, 0x6000000),
    # -r all rewrites the table with the entry completed: compared below as qemu-img lists it
    "incomplete-0": lambda q, e: shorten_extra(q, e, 0),
    "incomplete-8": lambda q, e: shorten_extra(q, e, 8),
}


def snapshot_list(img):
    r = run([QEMU_IMG, "info", "--output=json", img])
    return json.loads(r.stdout).get("snapshots") if r.returncode == 0 else r.stderr


def run_snapshot_table(qimg, root):
    problems = []
    for opts in ("cluster_size=64k", "cluster_size=16k,extended_l2=on", "cluster_size=512"):
        for name, damage in SNAPSHOT_DAMAGE.items():
            tag = f"snapshot-table/{name}/{opts}"
            d = os.path.join(root, tag.replace("/", "-").replace(",", "-").replace("=", "-"))
            os.makedirs(d)
            img = os.path.join(d, "img.qcow2")
            sh([QEMU_IMG, "create", "-q", "-f", "qcow2", "-o", opts, img, "4M"])
            qemu_io(d, img, "write -P 1 0 64k", "write -P 2 1M 8k")
            sh([QEMU_IMG, "snapshot", "-c", "s1", img])
            qemu_io(d, img, "write -P 3 0 8k")
            q = Qcow2(img)
            damage(q, q.u64(64))  # the first entry of the snapshot table
            mine = os.path.join(d, "mine.qcow2")
            shutil.copy(img, mine)
            a, b = run([QEMU_IMG, "check", img]), run([qimg, "check", mine])
            if (a.returncode, a.stdout, a.stderr) != (b.returncode, b.stdout, b.stderr):
                problems.append(f"{tag}: check: qemu-img {a.returncode} {a.stdout!r} {a.stderr!r}, "
                                f"qimg {b.returncode} {b.stdout!r} {b.stderr!r}")
            (qa, ja, _), (qb, jb, _) = (check_json([QEMU_IMG, "check", "--output=json", img]),
                                        check_json([qimg, "check", "--output=json", mine]))
            jb.pop("subclusters", None)  # qimg's addition for extended L2 images
            ja.pop("filename", None)
            jb.pop("filename", None)
            if (qa, ja) != (qb, jb):
                problems.append(f"{tag}: check --output=json: qemu-img {qa} {ja}, qimg {qb} {jb}")
            # Repairs: qimg's must leave no more for qemu-img to find than qemu-img's own.
            run([QEMU_IMG, "check", "-r", "all", img])
            r = run([qimg, "check", "-r", "all", mine])
            after = [check_json([QEMU_IMG, "check", "--output=json", f]) for f in (img, mine)]
            if any(counts(after[1][1])[k] > counts(after[0][1])[k] for k in ("corruptions", "leaks", "check-errors")) \
                    or r.returncode != after[1][0]:
                problems.append(f"{tag}: after the repairs qemu-img finds in qemu-img's {counts(after[0][1])}, in "
                                f"qimg's {counts(after[1][1])} (qimg -r all exited {r.returncode})")
            ra, rb = raw_content(d, img, "a.raw"), raw_content(d, mine, "b.raw")
            if not ra or not rb or not filecmp.cmp(ra, rb, shallow=False):
                problems.append(f"{tag}: the repaired images read differently")
            if name.startswith("incomplete"):
                if "Repairing snapshot table entry 0 is incomplete" not in r.stderr:
                    problems.append(f"{tag}: qimg check -r all did not say it completed the entry: {r.stderr!r}")
                la, lb = snapshot_list(img), snapshot_list(mine)
                if la != lb:
                    problems.append(f"{tag}: snapshots after the repairs: qemu-img's {la}, qimg's {lb}")
                sa, sb = (run([QEMU_IMG, "convert", "-l", "s1", "-O", "raw", f, os.path.join(d, out)])
                          for f, out in ((img, "sa.raw"), (mine, "sb.raw")))
                if sa.returncode or sb.returncode or not filecmp.cmp(os.path.join(d, "sa.raw"),
                                                                     os.path.join(d, "sb.raw"), shallow=False):
                    problems.append(f"{tag}: snapshot s1 reads differently after the repairs")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    ap.add_argument("-k", default="", help="only cases containing this substring")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    a = ap.parse_args()
    qimg = os.path.abspath(a.qimg)
    qimgtest.require_tools(QEMU_IMG, QEMU_IO)
    root = tempfile.mkdtemp(prefix="qimg-check-")
    print(f"work directory: {root}")
    problems, ncases = [], 0
    try:
        bases_dir = os.path.join(root, "bases")
        os.makedirs(bases_dir)
        base_paths = {n: f(bases_dir) for n, f in BASES.items()}
        for name in CLEAN:
            if a.k in f"clean-{name}":
                ncases += 1
                problems += run_clean(qimg, root, name)
        if a.k in "misc":
            ncases += 1
            problems += run_misc(qimg, root)
        if a.k in "snapshot-table":
            ncases += 1
            problems += run_snapshot_table(qimg, root)
        for name, (_, bases, _, _) in CASES.items():
            for base in bases:
                if a.k not in f"{name}/{base}":
                    continue
                ncases += 1
                print(f"case {name}/{base}", flush=True)
                try:
                    problems += run_case(qimg, root, base_paths, name, base)
                except (SetupError, AssertionError, OSError, struct.error) as e:
                    problems.append(f"{name}/{base}: setup failed: {e!r}")
    except SetupError as e:
        problems.append(f"setup: {e}")
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
