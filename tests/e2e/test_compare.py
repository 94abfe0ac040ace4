#!/usr/bin/env python3
"""qimg compare against qemu-img compare: the same exit status, stdout and
error text (see qemu_diff.py), normal and strict (-s) mode, on

- every pair of images holding the same guest data in different layouts: a
  sparse raw file, qcow2 with 64k, 2M and 512-byte clusters, extended L2,
  compat 0.10, compressed clusters, zero clusters instead of holes, metadata
  preallocation, a two-level backing chain;
- copies with one byte changed at the first byte, in the middle, at the last
  byte, and inside a range that is a hole elsewhere;
- images of different sizes whose extra part reads as zeros (unallocated, zero
  clusters, a raw hole, written zeros) or not (at its start, middle, end), in
  both orders, with -s and -q;
- an unaligned raw file, huge sparse images (block status runs capped at
  INT_MAX bytes and at L2 table boundaries), LUKS with --image-opts;
- errors: a missing file, wrong or unknown formats, a bad -T, wrong argument
  counts, -q on errors."""
import os
import sys

from qemu_diff import Differ, must, qemu_io, run_test

MIB = 1 << 20
SIZE = 4 * MIB
# The guest data every "same" image holds: data islands, a zero-filled run, holes.
WORKLOAD = ["write -P 0x11 0 64k", "write -P 0x22 300k 5000", "write -P 0x33 1M 1M", "write -z 1536k 64k",
            "write -P 0x44 3M 4k", "write -P 0x55 4190208 4096"]


def make_images(dir_):
    def img(*argv):
        must(["qemu-img", *argv], cwd=dir_)

    img("create", "-f", "raw", "ref.raw", str(SIZE))
    qemu_io(dir_, "ref.raw", WORKLOAD, fmt="raw")
    same = {"raw": "ref.raw"}
    for name, opts in (("std", "cluster_size=64k"), ("c2m", "cluster_size=2M"), ("c512", "cluster_size=512"),
                       ("el2", "extended_l2=on,cluster_size=32k"), ("v2", "compat=0.10")):
        img("convert", "-O", "qcow2", "-o", opts, "ref.raw", f"{name}.qcow2")
        same[name] = f"{name}.qcow2"
    img("convert", "-c", "-O", "qcow2", "ref.raw", "comp.qcow2")
    same["compressed"] = "comp.qcow2"
    img("create", "-f", "qcow2", "zero.qcow2", str(SIZE))
    qemu_io(dir_, "zero.qcow2", ["write -z 0 4M"] + WORKLOAD)
    same["zero clusters"] = "zero.qcow2"
    img("create", "-f", "qcow2", "-o", "preallocation=metadata", "prealloc.qcow2", str(SIZE))
    qemu_io(dir_, "prealloc.qcow2", WORKLOAD)
    same["metadata prealloc"] = "prealloc.qcow2"
    img("create", "-f", "qcow2", "-o", "cluster_size=4k", "base.qcow2", str(SIZE))
    qemu_io(dir_, "base.qcow2", WORKLOAD[:3])
    img("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "-o", "extended_l2=on", "overlay.qcow2")
    qemu_io(dir_, "overlay.qcow2", WORKLOAD[3:])
    same["chain"] = "overlay.qcow2"

    changed = {}
    for name, offset in (("first byte", 0), ("middle", 1 * MIB + 777), ("last byte", SIZE - 1),
                         ("in a hole", 2 * MIB + 513)):
        fname = "changed-" + name.replace(" ", "-") + ".qcow2"
        img("convert", "-O", "qcow2", "-o", "extended_l2=on", "ref.raw", fname)
        qemu_io(dir_, fname, [f"write -P 0xee {offset} 1"])
        changed[name] = fname

    # Larger images: 6 MiB, the first 4 MiB as ref.raw.
    larger = {}
    def bigger(name, fmt, extra):
        fname = f"big-{name}.{fmt}"
        img("create", "-f", fmt, fname, str(6 * MIB))
        qemu_io(dir_, fname, WORKLOAD + extra, fmt=fmt)
        larger[name] = fname
    bigger("unallocated tail", "qcow2", [])
    bigger("zero-cluster tail", "qcow2", ["write -z 4M 2M"])
    bigger("raw hole tail", "raw", [])
    bigger("written zeros tail", "raw", ["write -P 0 4M 2M"])
    bigger("data at tail start", "qcow2", ["write -P 1 4M 1"])
    bigger("data mid tail", "qcow2", ["write -P 1 5000000 1"])
    bigger("data at tail end", "raw", ["write -P 1 6291455 1"])

    with open(os.path.join(dir_, "odd.raw"), "wb") as f:
        f.write(bytes(range(256)) * 19 + b"\x01" * 136)  # 5000 bytes
    img("convert", "-f", "raw", "-O", "qcow2", "odd.raw", "odd.qcow2")
    img("create", "-f", "qcow2", "odd-changed.qcow2", "5000")
    qemu_io(dir_, "odd-changed.qcow2", ["write -P 1 0 4k"])

    # Huge sparse images: strict mode sees QEMU's run lengths.
    for name, opts, size in (("h2m", "cluster_size=2M", "8G"), ("h64k", "cluster_size=64k", "8G"),
                             ("h2m-4g", "cluster_size=2M", "4G"), ("h512-4g", "cluster_size=512", "4G"),
                             ("h2m-data", "cluster_size=2M", "4G")):
        img("create", "-f", "qcow2", "-o", opts, f"{name}.qcow2", size)
    qemu_io(dir_, "h2m-data.qcow2", ["write -P 1 4294963200 4k"])
    return same, changed, larger


def add_cases(d: Differ, dir_):
    same, changed, larger = make_images(dir_)
    names = list(same)
    for i, a in enumerate(names):
        for b in names[i:]:
            d.add(f"same data {a} / {b}", "compare", [same[a], same[b]])
            d.add(f"same data {a} / {b}", "compare", ["-s", same[a], same[b]])
            if a != b:
                d.add(f"same data {b} / {a}", "compare", ["-s", same[b], same[a]])
    for what, fname in changed.items():
        for other in ("raw", "std", "c512", "el2", "compressed", "zero clusters", "chain", "metadata prealloc"):
            d.add(f"changed {what} / {other}", "compare", [same[other], fname])
            d.add(f"changed {what} / {other}", "compare", [fname, same[other]])
        d.add(f"changed {what}", "compare", ["-s", same["el2"], fname])
        d.add(f"changed {what}", "compare", ["-q", same["raw"], fname])
    for what, fname in larger.items():
        for other in ("raw", "std", "chain"):
            d.add(f"larger, {what} / {other}", "compare", [same[other], fname])
            d.add(f"larger, {what} / {other}", "compare", [fname, same[other]])
        d.add(f"larger, {what}", "compare", ["-s", same["std"], fname])
        d.add(f"larger, {what}", "compare", ["-q", fname, same["std"]])
        d.add(f"larger, {what}", "compare", ["-p", "-q", fname, same["raw"]])
    d.add("unaligned raw", "compare", ["odd.raw", "odd.qcow2"])
    d.add("unaligned raw", "compare", ["-s", "odd.raw", "odd.qcow2"])
    d.add("unaligned raw", "compare", ["odd.raw", "odd-changed.qcow2"])
    d.add("unaligned raw", "compare", ["odd.qcow2", "odd-changed.qcow2"])
    for a, b in (("h2m", "h64k"), ("h2m-4g", "h512-4g"), ("h2m-4g", "h2m-data"), ("h64k", "h2m")):
        d.add("huge", "compare", ["-s", f"{a}.qcow2", f"{b}.qcow2"])
        d.add("huge", "compare", [f"{a}.qcow2", f"{b}.qcow2"])
    for args in (["-f", "raw", "std.qcow2", "std.qcow2"], ["-F", "raw", "std.qcow2", "ref.raw"],
                 ["-f", "qcow2", "ref.raw", "std.qcow2"], ["-f", "qcow2", "-F", "qcow2", "std.qcow2", "el2.qcow2"],
                 ["-f", "raw", "-F", "raw", "ref.raw", "ref.raw"], ["std.qcow2", "nosuchfile"],
                 ["nosuchfile", "std.qcow2"], ["-q", "nosuchfile", "std.qcow2"], ["-T", "foo", "std.qcow2", "ref.raw"],
                 ["-T", "none", "std.qcow2", "ref.raw"], ["-T", "writethrough", "-U", "std.qcow2", "ref.raw"],
                 ["std.qcow2"], [], ["a", "b", "c"], ["-f", "foo", "std.qcow2", "ref.raw"],
                 ["-f", "qcow2", "-f", "raw", "ref.raw", "ref.raw"]):
        d.add("usage", "compare", args)

    must(["qemu-img", "create", "-f", "qcow2", "--object", "secret,id=s0,data=pw", "-o",
          "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100", "enc.qcow2", str(SIZE)], cwd=dir_)
    must(["qemu-img", "convert", "-n", "--object", "secret,id=s0,data=pw", "--target-image-opts", "ref.raw",
          "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0"], cwd=dir_)
    secret = ["--object", "secret,id=s0,data=pw", "--image-opts"]
    d.add("luks", "compare", [*secret, "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0",
                              "driver=raw,file.filename=ref.raw"])
    d.add("luks", "compare", [*secret, "driver=qcow2,file.filename=enc.qcow2,encrypt.key-secret=s0",
                              f"driver=qcow2,file.filename={changed['middle']}"])
    d.add("luks without key", "compare", ["enc.qcow2", "ref.raw"])


if __name__ == "__main__":
    sys.exit(run_test("compare", add_cases))
