#!/usr/bin/env python3
"""qimg convert --bitmaps against qemu-img convert --bitmaps.

Sources are made by QEMU's tools: persistent dirty bitmaps added with `qemu-img bitmap
--add` (granularities 512 B to 2 MiB, enabled and disabled), filled by qemu-io writes
(enabled bitmaps track them), on 64 KiB, 4 KiB and 2 MiB extended-L2 images; one source
has no bitmaps, one has a bitmap marked in use (inconsistent). Each conversion runs under
both programs with the same arguments, each in its own directory, into targets with other
cluster sizes, extended L2, an external data file, compat=0.10, a raw target, two sources,
and -n into an existing image that has a bitmap of the same name. Compared: exit status and
messages; qemu-img check clean on qimg's target; the same guest content; and every
bitmap's name, granularity, flags and bits, read from both targets by the small reader
below (an implementation of the spec's bitmap directory and tables, independent of qimg's).
Then qemu-io writes into qimg's target: QEMU loads the bitmaps, updates the enabled ones,
and qemu-img check stays clean."""
from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile

from qemu_diff import must, normalize_stderr, qimg_from_args, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

MIB = 1 << 20


def read_bitmaps(path: str) -> dict:
    """name -> (granularity_bits, flags, bits as bytes) of an image's consistent bitmap directory."""
    data = open(path, "rb").read()
    cluster_bits = struct.unpack(">I", data[20:24])[0]
    cs = 1 << cluster_bits
    size = struct.unpack(">Q", data[24:32])[0]
    autoclear = struct.unpack(">Q", data[88:96])[0]
    header_len = struct.unpack(">I", data[100:104])[0]
    p, ext = header_len, None
    while p + 8 <= cs:
        magic, length = struct.unpack(">II", data[p:p + 8])
        if magic == 0:
            break
        if magic == 0x23852875:
            ext = struct.unpack(">IIQQ", data[p + 8:p + 32])
        p += 8 + (length + 7) // 8 * 8
    if not ext or not autoclear & 1:
        return {}
    nb, _, dir_size, dir_off = ext
    out, q = {}, dir_off
    for _ in range(nb):
        table_off, table_size, flags = struct.unpack(">QII", data[q:q + 16])
        gran_bits = data[q + 17]
        name_size, extra = struct.unpack(">HI", data[q + 18:q + 24])
        name = data[q + 24 + extra:q + 24 + extra + name_size].decode()
        nbits = (size + (1 << gran_bits) - 1) >> gran_bits
        nbytes = (nbits + 7) // 8
        bits = bytearray()
        for i in range(table_size):
            e = struct.unpack(">Q", data[table_off + 8 * i:table_off + 8 * i + 8])[0]
            off = e & 0x00fffffffffffe00
            bits += data[off:off + cs] if off else (b"\xff" if e & 1 else b"\0") * cs
        out[name] = (gran_bits, flags, bytes(bits[:nbytes]))
        q += (24 + extra + name_size + 7) // 8 * 8
    return out


def make_sources(dir_: str) -> None:
    def sh(*argv):
        must(list(argv), cwd=dir_)

    def io(img, *cmds):
        sh("qemu-io", "-f", "qcow2", *[a for c in cmds for a in ("-c", c)], img)

    # 64 KiB clusters: granularities 512 B, 64 KiB, 2 MiB; "std" disabled before the last write.
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", "c64k.qcow2", str(64 * MIB))
    for name, g in (("fine", "512"), ("std", "64k"), ("coarse", "2M")):
        sh("qemu-img", "bitmap", "--add", "-g", g, "c64k.qcow2", name)
    io("c64k.qcow2", "write -P 1 0 100k", "write -P 2 5M 4k", "write -P 3 63M 1M")
    sh("qemu-img", "bitmap", "--disable", "c64k.qcow2", "std")
    io("c64k.qcow2", "write -P 4 10M 64k")
    # 4 KiB clusters: every bit set in two bitmaps (the whole disk written), one left empty.
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "c4k.qcow2", str(16 * MIB))
    for name, g in (("a", "4k"), ("b", "512"), ("empty", "1M")):
        sh("qemu-img", "bitmap", "--add", "-g", g, "c4k.qcow2", name)
    sh("qemu-img", "bitmap", "--disable", "c4k.qcow2", "empty")
    io("c4k.qcow2", "write -P 5 0 16M")
    # 2 MiB clusters with extended L2 entries.
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=2M,extended_l2=on", "el2.qcow2", str(40 * MIB))
    sh("qemu-img", "bitmap", "--add", "el2.qcow2", "x")
    io("el2.qcow2", "write -P 6 3M 8k", "write -z 20M 4M")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "none.qcow2", str(8 * MIB))
    io("none.qcow2", "write -P 7 0 64k")
    # A bitmap marked in use (not saved cleanly).
    shutil.copyfile(os.path.join(dir_, "c64k.qcow2"), os.path.join(dir_, "inuse.qcow2"))
    data = bytearray(open(os.path.join(dir_, "inuse.qcow2"), "rb").read())
    at = data.find(struct.pack(">I", 0x23852875))
    dir_off = struct.unpack(">Q", data[at + 24:at + 32])[0]
    flags = struct.unpack(">I", data[dir_off + 12:dir_off + 16])[0]
    data[dir_off + 12:dir_off + 16] = struct.pack(">I", flags | 1)
    open(os.path.join(dir_, "inuse.qcow2"), "wb").write(data)


# (label, source, convert arguments before SOURCE TARGET, target needs creating first with these options)
CASES = [
    ("same options", "c64k.qcow2", ["-O", "qcow2"], None),
    ("4k clusters", "c64k.qcow2", ["-O", "qcow2", "-o", "cluster_size=4k"], None),
    ("2M extended L2", "c64k.qcow2", ["-O", "qcow2", "-o", "cluster_size=2M,extended_l2=on"], None),
    ("512-byte clusters", "c4k.qcow2", ["-O", "qcow2", "-o", "cluster_size=512"], None),
    ("all bits set", "c4k.qcow2", ["-O", "qcow2", "-o", "cluster_size=64k,refcount_bits=1"], None),
    ("from extended L2", "el2.qcow2", ["-O", "qcow2", "-o", "cluster_size=16k"], None),
    ("data file target", "c64k.qcow2", ["-O", "qcow2", "-o", "data_file=t.data"], None),
    ("compressed", "c64k.qcow2", ["-c", "-O", "qcow2"], None),
    ("no bitmaps", "none.qcow2", ["-O", "qcow2"], None),
    ("compat=0.10 target", "c64k.qcow2", ["-O", "qcow2", "-o", "compat=0.10"], None),
    ("raw target", "c64k.qcow2", ["-O", "raw"], None),
    ("in use", "inuse.qcow2", ["-O", "qcow2"], None),
    ("in use skipped", "inuse.qcow2", ["--skip-broken-bitmaps", "-O", "qcow2"], None),
    ("-n, same name there", "c64k.qcow2", ["-n", "-O", "qcow2"], "fine"),
    ("-n, other bitmaps there", "el2.qcow2", ["-n", "-O", "qcow2"], "other"),
]


def one_case(qimg: str, root: str, src_dir: str, i: int, case) -> tuple[int, list[str]]:
    label, src, args, existing = case
    fails = []
    dirs = {}
    for tool in ("qemu-img", "qimg"):
        d = os.path.join(root, f"case{i}-{tool}")
        shutil.copytree(src_dir, d)
        dirs[tool] = d
        if existing:  # -n: the target exists (the source's size), with a bitmap of its own
            vsize = json.loads(must(["qemu-img", "info", "--output=json", src], cwd=d).stdout)["virtual-size"]
            must(["qemu-img", "create", "-q", "-f", "qcow2", "target.qcow2", str(vsize)], cwd=d)
            must(["qemu-img", "bitmap", "--add", "target.qcow2", existing], cwd=d)
    results = {}
    for tool in ("qemu-img", "qimg"):
        prog = "qemu-img" if tool == "qemu-img" else qimg
        results[tool] = run([prog, "convert", "--bitmaps", *args, src, "target.qcow2"], cwd=dirs[tool])
    a, b = results["qemu-img"], results["qimg"]
    ea, eb = normalize_stderr(a.stderr, "qemu-img"), normalize_stderr(b.stderr, "qimg")
    if a.returncode != b.returncode or ea != eb:
        fails.append(f"{label}: exit {b.returncode} {eb!r}, qemu-img {a.returncode} {ea!r}")
        return 1, fails
    if a.returncode != 0:
        return 1, fails
    qd, id_ = dirs["qemu-img"], dirs["qimg"]
    c = run(["qemu-img", "check", "target.qcow2"], cwd=id_)
    if c.returncode != 0:
        fails.append(f"{label}: qemu-img check of qimg's target: {c.returncode} {c.stdout.strip()!r}")
    m = run(["qemu-img", "compare", "-f", "qcow2", "-F", "qcow2", src, "target.qcow2"], cwd=id_)
    if m.returncode != 0:
        fails.append(f"{label}: content differs from the source: {m.stdout.strip()!r}")
    want, got = read_bitmaps(os.path.join(qd, "target.qcow2")), read_bitmaps(os.path.join(id_, "target.qcow2"))
    if want != got:
        fails.append(f"{label}: bitmaps differ: qimg {sorted((k, v[0], v[1]) for k, v in got.items())}, qemu-img "
                     f"{sorted((k, v[0], v[1]) for k, v in want.items())}"
                     + ("" if want.keys() != got.keys() else
                        " (bits differ in " + ", ".join(k for k in want if want[k][2] != got[k][2]) + ")"))
    ia, ib = (must(["qemu-img", "info", "target.qcow2"], cwd=d).stdout for d in (qd, id_))
    if ia.split("bitmaps:")[-1] != ib.split("bitmaps:")[-1] and "bitmaps:" in ia + ib:
        fails.append(f"{label}: qemu-img info bitmaps differ:\n{ib}\n{ia}")
    # qimg reads its own bitmaps back (a second convert keeps every bit), and its check agrees.
    r = run([qimg, "convert", "--bitmaps", "-O", "qcow2", "-o", "cluster_size=32k", "target.qcow2", "again.qcow2"],
            cwd=id_)
    again = read_bitmaps(os.path.join(id_, "again.qcow2"))
    if r.returncode or again != got:
        fails.append(f"{label}: qimg convert --bitmaps of qimg's target: {r.returncode} {r.stderr!r}, bitmaps "
                     f"{sorted(again)} vs {sorted(got)}")
    q = run([qimg, "check", "target.qcow2"], cwd=id_)
    if q.returncode:
        fails.append(f"{label}: qimg check of its target: {q.returncode} {q.stdout!r}")
    # QEMU takes qimg's bitmaps over: its writes update the enabled ones, check stays clean.
    must(["qemu-io", "-f", "qcow2", "-c", "write -P 9 7M 64k", "target.qcow2"], cwd=id_)
    c = run(["qemu-img", "check", "target.qcow2"], cwd=id_)
    after = read_bitmaps(os.path.join(id_, "target.qcow2"))
    if c.returncode != 0 or after.keys() != got.keys():
        fails.append(f"{label}: after a qemu-io write: check {c.returncode} {c.stdout.strip()!r}, bitmaps {sorted(after)}")
    return 1, fails


def two_sources(qimg: str, root: str, src_dir: str) -> tuple[int, list[str]]:
    d = os.path.join(root, "two")
    shutil.copytree(src_dir, d)
    a = run(["qemu-img", "convert", "--bitmaps", "-O", "qcow2", "c64k.qcow2", "none.qcow2", "t1.qcow2"], cwd=d)
    b = run([qimg, "convert", "--bitmaps", "-O", "qcow2", "c64k.qcow2", "none.qcow2", "t2.qcow2"], cwd=d)
    ea, eb = normalize_stderr(a.stderr, "qemu-img"), normalize_stderr(b.stderr, "qimg")
    if (a.returncode, ea) != (b.returncode, eb):
        return 1, [f"two sources: exit {b.returncode} {eb!r}, qemu-img {a.returncode} {ea!r}"]
    return 1, []


def main() -> int:
    qimg = qimg_from_args()
    with tempfile.TemporaryDirectory(prefix="qimg-bitmaps-") as root:
        src_dir = os.path.join(root, "src")
        os.mkdir(src_dir)
        make_sources(src_dir)
        calls = [(one_case, qimg, root, src_dir, i, c) for i, c in enumerate(CASES)]
        steps, failures = qimgtest.run_cases(calls + [(two_sources, qimg, root, src_dir)], workers=2)
    for f in failures:
        print("FAIL " + f)
    print(f"{steps} convert --bitmaps cases compared with qemu-img, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
