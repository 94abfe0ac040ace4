#!/usr/bin/env python3
"""External data files (qcow2 incompatible bit 2, data_file / data_file_raw) against qemu-img.

1. Read-only commands, side by side on the same files (qemu-img and qimg, same arguments,
   same exit status, stdout and stderr): info (human and JSON), map (human, with the data
   file in the File column, and JSON), check (human and JSON) and compare, on images made
   by qemu-img/qemu-io in four configurations (64 KiB standard and extended L2, 512-byte
   clusters, data_file_raw=on with 4 KiB clusters), and on damaged copies: a data cluster
   whose host offset is not its guest offset, one without OFLAG_COPIED, an unaligned one,
   the data file bit without the name extension, a missing data file, data_file_raw
   without a data file.
2. Lockstep changes: the same image and data file in two directories (QEMU opens a data
   file name relative to the current directory, so each tool runs in its own), one
   changed by qemu-img/qemu-io and the other by qimg with the same steps: writes, zero
   writes and discards; resize (grow, falloc, shrink); check -r all of the damaged copies;
   amend data_file_raw=off, data_file_raw=on (refused), data_file=NAME (renamed), and on
   an image without a data file (refused); snapshot -c/-a (refused); convert -c into a
   data-file target (refused). After every step: the same exit status and messages, the
   same guest content, the same map (host offsets included: they are guest offsets), the
   same data file length, qemu-img check clean on qimg's image, and with data_file_raw
   the data file alone reads as the guest does.
3. qimg's own amend -o extended_l2=on/off on data-file images: content unchanged,
   qemu-img check clean."""
from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile

from qemu_diff import Differ, must, normalize_stderr, qimg_from_args, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

MIB = 1 << 20
SIZE = 4 * MIB
# name: creation options (the data file is always data.raw)
CONFIGS = {
    "std-64k": "cluster_size=64k",
    "ext-64k": "cluster_size=64k,extended_l2=on",
    "c512": "cluster_size=512",
    "raw-4k": "cluster_size=4k,data_file_raw=on",
    "raw-ext-16k": "cluster_size=16k,extended_l2=on,data_file_raw=on",
}
WORKLOAD = ["write -P 0x11 0 256k", "write -P 0x12 1M 3k", "write -z 64k 64k", "write -z -u 128k 64k",
            "discard 192k 64k", "write -P 0x13 2M 70k", "write -P 0x14 3M 4k", "write -z 3M 1k",
            "discard 2M 64k", "write -P 0x15 4032k 64k"]
MORE = ["write -P 0x21 5k 1k", "write -z 1M 64k", "discard 3M 64k", "write -P 0x22 1536k 128k"]


def l2_table_offset(img: str) -> int:
    with open(img, "rb") as f:
        h = f.read(104)
        l1 = struct.unpack(">Q", h[40:48])[0]
        f.seek(l1)
        return struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00


def patch(img: str, offset: int, data: bytes) -> None:
    with open(img, "r+b") as f:
        f.seek(offset)
        f.write(data)


def entry_size(opts: str) -> int:
    return 16 if "extended_l2=on" in opts else 8


def damaged_copies(dir_: str, name: str, opts: str) -> list[str]:
    """Copies of <name>.qcow2 (all sharing its data file) with one damaged L2 entry each."""
    img = os.path.join(dir_, f"{name}.qcow2")
    l2, es = l2_table_offset(img), entry_size(opts)
    cs = 512 if "cluster_size=512" in opts else 4096 if "=4k" in opts else 16384 if "16k" in opts else 65536
    out = []
    for tag, index, word in (("moved", 1, (1 << 63) | 3 * cs), ("uncopied", 0, 0),
                             ("unaligned", 1, (1 << 63) | cs | 0x200)):
        copy = f"{name}-{tag}.qcow2"
        shutil.copyfile(img, os.path.join(dir_, copy))
        if tag == "uncopied":  # entry 0 without OFLAG_COPIED (host offset 0: unallocated now)
            with open(img, "rb") as f:
                f.seek(l2 + es)
                word = struct.unpack(">Q", f.read(8))[0] & ~(1 << 63)
            index = 1
        patch(os.path.join(dir_, copy), l2 + index * es, struct.pack(">Q", word))
        out.append(copy)
    return out


def header_variants(dir_: str) -> list[str]:
    """Images whose header is wrong about the data file."""
    must(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=noname.raw", "noname.qcow2", "1M"], cwd=dir_)
    p = os.path.join(dir_, "noname.qcow2")
    data = bytearray(open(p, "rb").read())
    at = data.find(struct.pack(">I", 0x44415441))
    data[at:at + 4] = b"\xff\xff\xff\xfe"  # an unknown extension now: the name is gone
    open(p, "wb").write(data)
    must(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=gone.raw", "gone.qcow2", "1M"], cwd=dir_)
    os.unlink(os.path.join(dir_, "gone.raw"))
    must(["qemu-img", "create", "-q", "-f", "qcow2", "rawbit.qcow2", "1M"], cwd=dir_)
    patch(os.path.join(dir_, "rawbit.qcow2"), 88, struct.pack(">Q", 2))  # autoclear data_file_raw alone
    return ["noname.qcow2", "gone.qcow2", "rawbit.qcow2"]


def side_by_side(d: Differ, dir_: str) -> None:
    for name, opts in CONFIGS.items():
        img = f"{name}.qcow2"
        must(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={name}.data,{opts}", img, str(SIZE)], cwd=dir_)
        must(["qemu-io", "-f", "qcow2", img], cwd=dir_, input="\n".join(WORKLOAD) + "\n")
        must(["qemu-img", "create", "-q", "-f", "qcow2", f"{name}-plain.qcow2", str(SIZE)], cwd=dir_)
        must(["qemu-io", "-f", "qcow2", f"{name}-plain.qcow2"], cwd=dir_, input="\n".join(WORKLOAD) + "\n")
        # (qimg's check JSON adds a "subclusters" object on extended L2 images.)
        check_json = [] if "extended_l2=on" in opts else [("check", ["--output=json"])]
        for cmd, args in [("info", []), ("info", ["--output=json"]), ("map", []), ("map", ["--output=json"]),
                          ("check", [])] + check_json:
            d.add(f"{img} {cmd}", cmd, [*args, img])
        # Damaged entries: check reports them as qemu-img does; map fails as qemu-img's does
        # (the wording of map's error is qimg's own).
        for f in damaged_copies(dir_, name, opts):
            for cmd, args in [("info", []), ("check", [])] + check_json:
                d.add(f"{f} {cmd}", cmd, [*args, f])
            d.add_status(f"{f} map", "map", ["--output=json", f])
        d.add(f"{img} compare", "compare", [img, f"{name}-plain.qcow2"])
        d.add(f"{img} compare -s", "compare", ["-s", img, f"{name}-plain.qcow2"])
    # Creation refusals (nothing is left behind), with qemu-img's messages. Cases run
    # concurrently, so each has its own target name (qemu-img locks what it creates).
    for n, (label, opts) in enumerate((("missing directory", "data_file=no/such/dir/d.raw"), ("compat=0.10", "data_file=v2.raw,compat=0.10"),
                        ("raw without a data file", "data_file_raw=on"),
                        ("raw with a backing file", "data_file=b.raw,data_file_raw=on,backing_file=std-64k.qcow2,backing_fmt=qcow2"))):
        d.add(f"create: {label}", "create", ["-f", "qcow2", "-o", opts, f"refused{n}.qcow2", "1M"])
    d.add("create: missing backing file", "create", ["-f", "qcow2", "-b", "missing.qcow2", "-F", "qcow2", "refused.qcow2"])
    for f in header_variants(dir_):
        for cmd, args in (("info", []), ("info", ["--output=json"])):
            d.add(f"{f} {cmd}", cmd, [*args, f])
        for cmd, args in (("map", ["--output=json"]), ("check", [])):
            d.add_status(f"{f} {cmd}", cmd, [*args, f])


class Lockstep:
    """One image in q/ (changed by QEMU's tools) and its twin in i/ (changed by qimg)."""

    def __init__(self, qimg: str, root: str, name: str, opts: str):
        self.qimg, self.name, self.opts = qimg, name, opts
        self.q, self.i = os.path.join(root, f"{name}-q"), os.path.join(root, f"{name}-i")
        os.mkdir(self.q)
        must(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file=data.raw,{opts}", "img.qcow2", str(SIZE)],
             cwd=self.q)
        shutil.copytree(self.q, self.i)
        self.failures: list[str] = []
        self.steps = 0
        self.data = "data.raw"  # where the data file is now

    def rename(self, data_name: str) -> None:
        """Moves the data file in both directories (the image keeps the name it records)."""
        for d in (self.q, self.i):
            os.replace(os.path.join(d, self.data), os.path.join(d, data_name))
        self.data = data_name

    def same(self, label: str, qemu_argv: list[str], qimg_argv: list[str], state: bool = True) -> None:
        a = run(qemu_argv, cwd=self.q)
        b = run(qimg_argv, cwd=self.i)
        self.steps += 1
        where = f"{self.name}: {label}"
        if a.returncode != b.returncode:
            self.failures.append(f"{where}: exit {b.returncode} ({b.stderr.strip()!r}), qemu {a.returncode} "
                                 f"({a.stderr.strip()!r})")
        elif not qemu_argv[0].startswith("qemu-io"):
            ea, eb = normalize_stderr(a.stderr, "qemu-img"), normalize_stderr(b.stderr, "qimg")
            # (Where each tool put its metadata clusters is its own affair.)
            oa, ob = ([l for l in x.stdout.splitlines() if not l.startswith(("Image end offset", "disk size"))] for x in (a, b))
            if (oa, ea) != (ob, eb):
                self.failures.append(f"{where}: output {b.stdout!r} {eb!r}, qemu-img {a.stdout!r} {ea!r}")
        if state:
            self.compare_state(where)

    def io(self, label: str, cmds: list[str]) -> None:
        args = [a for c in cmds for a in ("-c", c)]
        self.same(label, ["qemu-io", "-f", "qcow2", *args, "img.qcow2"], [self.qimg, "io", "-f", "qcow2", *args, "img.qcow2"])

    def export(self, dir_: str) -> bytes:
        out = os.path.join(dir_, "export.raw")
        must(["qemu-img", "convert", "-U", "-O", "raw", "img.qcow2", "export.raw"], cwd=dir_)
        data = open(out, "rb").read()
        os.unlink(out)
        return data

    def compare_state(self, where: str) -> None:
        c = run(["qemu-img", "check", "img.qcow2"], cwd=self.i)
        if c.returncode != 0:
            self.failures.append(f"{where}: qemu-img check of qimg's image: {c.returncode} {c.stdout.strip()!r}")
            return
        if self.export(self.q) != self.export(self.i):
            self.failures.append(f"{where}: guest content differs")
        maps = [json.loads(must(["qemu-img", "map", "-U", "--output=json", "img.qcow2"], cwd=d).stdout)
                for d in (self.q, self.i)]
        if maps[0] != maps[1]:
            self.failures.append(f"{where}: map differs:\n    qimg's {maps[1]}\n    qemu's {maps[0]}")
        sizes = [os.path.getsize(os.path.join(d, self.data)) for d in (self.q, self.i)]
        if sizes[0] != sizes[1]:
            self.failures.append(f"{where}: data file length {sizes[1]}, qemu's {sizes[0]}")
        if "data_file_raw=on" in self.opts:
            if open(os.path.join(self.i, self.data), "rb").read() != self.export(self.i):
                self.failures.append(f"{where}: the raw data file does not read as the guest")


def lockstep(qimg: str, root: str, name: str) -> tuple[int, list[str]]:
    opts = CONFIGS[name]
    t = Lockstep(qimg, root, name, opts)
    t.io("workload", WORKLOAD)
    t.io("more writes", MORE)
    t.same("resize +1M", ["qemu-img", "resize", "img.qcow2", "+1M"], [qimg, "resize", "img.qcow2", "+1M"])
    t.same("resize falloc", ["qemu-img", "resize", "--preallocation=falloc", "img.qcow2", "6M"],
           [qimg, "resize", "--preallocation=falloc", "img.qcow2", "6M"])
    t.same("resize shrink", ["qemu-img", "resize", "--shrink", "img.qcow2", "3M"],
           [qimg, "resize", "--shrink", "img.qcow2", "3M"])
    t.io("writes after resizes", ["write -P 0x31 2560k 100k", "discard 0 64k"])
    for label, args in (("snapshot -c", ["snapshot", "-c", "s1", "img.qcow2"]),
                        ("snapshot -a", ["snapshot", "-a", "s1", "img.qcow2"]),
                        ("snapshot -l", ["snapshot", "-l", "img.qcow2"]),
                        ("amend data_file_raw=on", ["amend", "-o", "data_file_raw=on", "img.qcow2"]),
                        ("amend data_file_raw=off", ["amend", "-o", "data_file_raw=off", "img.qcow2"])):
        t.same(label, ["qemu-img", *args], [qimg, *args])
    t.opts = t.opts.replace("data_file_raw=on", "")
    # Rename: the image then reads the file under its new name, and fails to open without it.
    t.same("amend data_file=new.raw", ["qemu-img", "amend", "-o", "data_file=new.raw", "img.qcow2"],
           [qimg, "amend", "-o", "data_file=new.raw", "img.qcow2"], state=False)
    t.rename("new.raw")
    t.io("writes through the new name", ["write -P 0x41 256k 64k"])
    t.same("info while renamed", ["qemu-img", "info", "img.qcow2"], [qimg, "info", "img.qcow2"])
    t.rename("moved.raw")
    for label, args in (("check without the data file", ["check", "img.qcow2"]),
                        ("map without the data file", ["map", "img.qcow2"]),
                        ("write without the data file", ["resize", "img.qcow2", "+1M"])):
        t.same(label, ["qemu-img", *args], [qimg, *args], state=False)
    t.rename("new.raw")
    t.same("amend data_file=data.raw", ["qemu-img", "amend", "-o", "data_file=data.raw", "img.qcow2"],
           [qimg, "amend", "-o", "data_file=data.raw", "img.qcow2"], state=False)
    t.rename("data.raw")
    t.compare_state(f"{name}: renamed back")
    # Repairs of damaged entries, and refusals.
    for d in (t.q, t.i):
        for tag, index, word in (("uncopied", 1, 0x10000 if "64k" in name else None),):
            if word is None:
                continue
            l2 = l2_table_offset(os.path.join(d, "img.qcow2"))
            patch(os.path.join(d, "img.qcow2"), l2 + index * entry_size(opts), struct.pack(">Q", word))
    t.same("check -r all", ["qemu-img", "check", "-r", "all", "img.qcow2"], [qimg, "check", "-r", "all", "img.qcow2"])
    for d in (t.q, t.i):
        must(["qemu-img", "create", "-q", "-f", "qcow2", "plain.qcow2", "1M"], cwd=d)
    t.same("amend data_file on a plain image", ["qemu-img", "amend", "-o", "data_file=x.raw", "plain.qcow2"],
           [qimg, "amend", "-o", "data_file=x.raw", "plain.qcow2"])
    c = run([qimg, "convert", "-c", "-O", "qcow2", "-o", "data_file=c.raw", "img.qcow2", "c.qcow2"], cwd=t.i)
    t.steps += 1
    if c.returncode != 1 or len(c.stderr.strip().splitlines()) != 1 or "compress" not in c.stderr:
        t.failures.append(f"{name}: convert -c into a data file: {c.returncode} {c.stderr!r}")
    return t.steps, t.failures


def amend_layout(qimg: str, root: str, name: str) -> tuple[int, list[str]]:
    """extended_l2 on and off (qimg's own amend) keep the guest content of a data-file image."""
    dir_ = os.path.join(root, f"{name}-amend")
    os.mkdir(dir_)
    opts = CONFIGS[name]
    must(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file=data.raw,{opts}", "img.qcow2", str(SIZE)],
         cwd=dir_)
    must(["qemu-io", "-f", "qcow2", "img.qcow2"], cwd=dir_, input="\n".join(WORKLOAD + MORE) + "\n")
    must(["qemu-img", "convert", "-O", "raw", "img.qcow2", "before.raw"], cwd=dir_)
    failures = []
    flips = ["off", "on"] if "extended_l2=on" in opts else ["on", "off"]
    for value in flips:
        r = run([qimg, "amend", "-o", f"extended_l2={value}", "img.qcow2"], cwd=dir_)
        c = run(["qemu-img", "check", "img.qcow2"], cwd=dir_)
        m = run(["qemu-img", "compare", "-F", "raw", "img.qcow2", "before.raw"], cwd=dir_)
        if r.returncode or c.returncode or m.returncode:
            failures.append(f"{name}: amend extended_l2={value}: {r.returncode} {r.stderr!r}; check {c.returncode} "
                            f"{c.stdout.strip()!r}; compare {m.returncode} {m.stdout.strip()!r}")
    return len(flips), failures


def main() -> int:
    qimg = qimg_from_args()
    with tempfile.TemporaryDirectory(prefix="qimg-data-file-") as root:
        shared = os.path.join(root, "shared")
        os.mkdir(shared)
        d = Differ(qimg, shared)
        side_by_side(d, shared)
        d.run_all()
        steps, failures = qimgtest.run_cases([(lockstep, qimg, root, n) for n in CONFIGS]
                                             + [(amend_layout, qimg, root, n) for n in ("std-64k", "ext-64k")])
    failures = d.failures + failures
    for f in failures:
        print("FAIL " + f)
    print(f"{d.passed + len(d.failures)} read-only cases, {steps} lockstep and amend steps, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
