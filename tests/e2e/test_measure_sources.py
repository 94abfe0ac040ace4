#!/usr/bin/env python3
"""qimg measure FILE against qemu-img measure FILE: identical stdout (human
and JSON), exit status and error text (see qemu_diff.py) for source images
made by qemu-img and qemu-io: sparse and unaligned raw files, qcow2 with
holes, zero clusters, compressed clusters, backing chains (qcow2 and raw
bases, overlays larger than their base), 512-byte clusters, extended L2 with
subcluster writes, metadata preallocation, compat 0.10, persistent bitmaps,
internal snapshots (-l, and its errors) - each measured for raw and several
qcow2 targets (cluster sizes, extended L2, compat 0.10, a backing file,
preallocation, refcount widths)."""
import os
import sys

from qemu_diff import Differ, must, qemu_io, run_test

KIB = 1024


def make_sources(dir_):
    """Source images, made by qemu's tools: name -> extra arguments before the file."""
    def img(*argv):
        must(["qemu-img", *argv], cwd=dir_)

    img("create", "-f", "raw", "raw.img", "16M")
    qemu_io(dir_, "raw.img", ["write -P 1 0 64k", "write -P 2 1048676 3000", "write -P 3 10M 1M"], fmt="raw")
    with open(os.path.join(dir_, "odd.raw"), "wb") as f:
        f.write(b"\x07" * 5000)
    with open(os.path.join(dir_, "odd-sparse.raw"), "wb") as f:
        f.truncate(3 * 1024 * 1024 + 100)
        f.seek(2 * 1024 * 1024)
        f.write(b"\x09" * 700)
    open(os.path.join(dir_, "empty.raw"), "wb").close()
    img("create", "-f", "qcow2", "holes.qcow2", "64M")
    qemu_io(dir_, "holes.qcow2", [f"write -P 5 {o} 4k" for o in range(0, 64 << 20, 3 << 20)] +
            ["write -P 6 1000000 300000"])
    img("create", "-f", "qcow2", "zero.qcow2", "8M")
    qemu_io(dir_, "zero.qcow2", ["write -P 1 0 1M", "write -z 64k 64k", "write -z -u 256k 128k", "write -z 2M 1M",
                                 "discard 512k 64k", "write -P 3 4M 4k"])
    img("create", "-f", "qcow2", "comp.qcow2", "4M")
    qemu_io(dir_, "comp.qcow2", ["write -c -P 4 0 256k", "write -P 6 512k 64k", "write -c 1M 64k"])
    img("create", "-f", "raw", "base.raw", "1M")
    qemu_io(dir_, "base.raw", ["write -P 1 0 512k"], fmt="raw")
    img("create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2", "3M")
    qemu_io(dir_, "mid.qcow2", ["write -P 2 256k 64k", "write -P 2 2M 64k"])
    img("create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "-o", "extended_l2=on,cluster_size=32k",
        "top.qcow2", "6M")
    qemu_io(dir_, "top.qcow2", ["write -P 3 4k 1k", "write -z 3M 64k", "write -P 3 5M 4k"])
    img("create", "-f", "qcow2", "-o", "cluster_size=512", "c512.qcow2", "2M")
    qemu_io(dir_, "c512.qcow2", [f"write -P 8 {o} 512" for o in range(0, 2 << 20, 5120)])
    img("create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", "el2.qcow2", "8M")
    qemu_io(dir_, "el2.qcow2", [f"write -P 9 {o} 2k" for o in range(0, 8 << 20, 200 * KIB)] + ["write -z 1M 64k"])
    img("create", "-f", "qcow2", "-o", "preallocation=metadata", "prealloc.qcow2", "4M")
    qemu_io(dir_, "prealloc.qcow2", ["write -P 5 100k 10k", "write -z 1M 64k"])
    img("create", "-f", "qcow2", "-o", "compat=0.10", "v2.qcow2", "10M")
    qemu_io(dir_, "v2.qcow2", ["write 0 1M", "write -c 4M 64k"])
    img("create", "-f", "qcow2", "bitmaps.qcow2", "10M")
    qemu_io(dir_, "bitmaps.qcow2", ["write 0 1M"])
    img("bitmap", "--add", "-g", "64k", "bitmaps.qcow2", "b1")
    img("bitmap", "--add", "-g", "512", "bitmaps.qcow2", "a_longer_bitmap_name")
    img("create", "-f", "qcow2", "snap.qcow2", "10M")
    qemu_io(dir_, "snap.qcow2", ["write -P 1 0 1M"])
    img("snapshot", "-c", "first", "snap.qcow2")
    qemu_io(dir_, "snap.qcow2", ["write -P 2 5M 2M"])
    img("create", "-f", "qcow2", "empty.qcow2", "16M")
    return {
        "raw": ["raw.img"], "raw (-f raw)": ["-f", "raw", "raw.img"], "unaligned raw": ["odd.raw"],
        "unaligned sparse raw": ["odd-sparse.raw"], "empty raw": ["empty.raw"], "holes": ["holes.qcow2"],
        "zero clusters": ["zero.qcow2"], "compressed": ["comp.qcow2"], "chain": ["top.qcow2"],
        "chain middle": ["mid.qcow2"], "512-byte clusters": ["c512.qcow2"], "extended L2": ["el2.qcow2"],
        "metadata preallocation": ["prealloc.qcow2"], "compat 0.10": ["v2.qcow2"], "bitmaps": ["bitmaps.qcow2"],
        "snapshot": ["snap.qcow2"], "snapshot -l": ["-l", "first", "snap.qcow2"],
        "snapshot -l name": ["-l", "snapshot.name=first", "snap.qcow2"],
        "snapshot -l id": ["-l", "snapshot.id=1", "snap.qcow2"], "empty qcow2": ["empty.qcow2"],
        "-U": ["-U", "holes.qcow2"],
    }


def source_cases(d: Differ, sources):
    targets = [[], ["-O", "qcow2"], ["-O", "qcow2", "-o", "cluster_size=512"],
               ["-O", "qcow2", "-o", "cluster_size=2M,extended_l2=on"], ["-O", "qcow2", "-o", "compat=0.10"],
               ["-O", "qcow2", "-o", "backing_file=x"],
               ["-O", "qcow2", "-o", "preallocation=falloc,cluster_size=4k,refcount_bits=1"],
               ["-O", "qcow2", "-o", "cluster_size=16k,extended_l2=on,refcount_bits=64,size=1T"]]
    for name, src in sources.items():
        for i, t in enumerate(targets):
            d.add(f"source {name}", "measure", ["--output=json", *t, *src])
            if i in (0, 1, 3):
                d.add(f"source {name}", "measure", [*t, *src])
    for bad in (["-l", "nosuchsnap", "snap.qcow2"], ["-l", "snapshot.id=7", "snap.qcow2"],
                ["-l", "snapshot.foo=1", "snap.qcow2"], ["-l", "snapshot.id=1,snapshot.name=other", "snap.qcow2"],
                ["-l", "first", "raw.img"], ["-f", "raw", "-l", "first", "snap.qcow2"]):
        d.add("snapshot errors", "measure", ["-O", "qcow2", *bad])


if __name__ == "__main__":
    sys.exit(run_test("measure source", lambda d, dir_: source_cases(d, make_sources(dir_))))
