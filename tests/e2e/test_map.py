#!/usr/bin/env python3
"""qimg map against qemu-img map on layouts the interop matrix does not build:
fragmented images (every other cluster, every other subcluster), compressed,
zero and preallocated-zero clusters, backing files shorter than the overlay,
and --start-offset/--max-length windows. JSON must be identical text; human
output identical too."""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

FAILURES = []


def run(argv, **kw):
    return qimgtest.run(argv, text=True, timeout=120, **kw)


def must(argv, **kw):
    r = run(argv, **kw)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(argv)}\n{r.stderr}")
    return r


def qemu_io(img, cmds, fmt="qcow2"):
    # qemu-io reads commands from stdin, which keeps long command lists cheap.
    r = run(["qemu-io", "-f", fmt, img], input="\n".join(cmds) + "\n")
    if r.returncode != 0:
        raise SystemExit(f"qemu-io failed: {r.stderr}")


def compare(qimg, img, extra=(), label=""):
    for out in (["--output=json"], []):
        a = run(["qemu-img", "map", *out, *extra, img])
        b = run([qimg, "map", *out, *extra, img])
        what = f"{label} {' '.join(out + list(extra))}".strip()
        if a.returncode != b.returncode:
            FAILURES.append(f"{what}: exit {b.returncode} vs qemu-img {a.returncode}\n{b.stderr}{a.stderr}")
        elif a.stdout != b.stdout:
            al, bl = a.stdout.splitlines(), b.stdout.splitlines()
            i = next((k for k in range(min(len(al), len(bl))) if al[k] != bl[k]), min(len(al), len(bl)))
            FAILURES.append(f"{what}: first difference at line {i}:\n  qimg:     {bl[i] if i < len(bl) else '<end>'}\n"
                            f"  qemu-img: {al[i] if i < len(al) else '<end>'}")
        else:
            print(f"ok   {what} ({len(a.stdout.splitlines())} lines)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    qimgtest.require_tools("qemu-img", "qemu-io")
    with tempfile.TemporaryDirectory(prefix="qimg-map-") as d:
        os.chdir(d)
        # Every other cluster (64k clusters, 64 MiB).
        must(["qemu-img", "create", "-f", "qcow2", "frag.qcow2", "64M"])
        qemu_io("frag.qcow2", [f"write -q -P 7 {i} 512" for i in range(0, 64 << 20, 128 << 10)])
        compare(qimg, "frag.qcow2", label="every other cluster")
        # Every other subcluster (128k clusters with extended L2: 4k subclusters).
        must(["qemu-img", "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "sub.qcow2", "16M"])
        qemu_io("sub.qcow2", [f"write -q -P 9 {i} 4k" for i in range(0, 16 << 20, 8 << 10)])
        compare(qimg, "sub.qcow2", label="every other subcluster")
        # Windows into the fragmented images, including unaligned ones.
        for s, l in ((0, 1), (4096, 100000), (65536 * 3 + 17, 1 << 20), (60 << 20, None), (0, 12345678)):
            extra = [f"--start-offset={s}"] + ([f"--max-length={l}"] if l else [])
            compare(qimg, "frag.qcow2", extra, label="window")
            compare(qimg, "sub.qcow2", extra, label="window")
        # Zero clusters, preallocated zero clusters, zero subclusters, discards.
        must(["qemu-img", "create", "-f", "qcow2", "z.qcow2", "8M"])
        qemu_io("z.qcow2", ["write -P 1 0 1M", "write -z 64k 64k", "write -z -u 256k 128k", "write -z 2M 64k",
                            "discard 512k 64k", "write -P 3 4M 4k"])
        compare(qimg, "z.qcow2", label="zero clusters")
        must(["qemu-img", "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", "zs.qcow2", "8M"])
        qemu_io("zs.qcow2", ["write -P 1 0 256k", "write -z 4k 8k", "write -z -u 64k 64k", "write -z 1M 6k",
                             "discard 128k 64k"])
        compare(qimg, "zs.qcow2", label="zero subclusters")
        # Preallocated images (the metadata-preallocation heuristic of QEMU's block status).
        for opts in ("preallocation=metadata", "preallocation=falloc", "preallocation=metadata,extended_l2=on"):
            must(["qemu-img", "create", "-f", "qcow2", "-o", opts, "p.qcow2", "4M"])
            qemu_io("p.qcow2", ["write -P 5 100k 10k", "write -z 1M 64k"])
            compare(qimg, "p.qcow2", label=opts)
        # Compressed clusters: qemu-img refuses human output; JSON has data without offset.
        must(["qemu-img", "create", "-f", "qcow2", "c.qcow2", "4M"])
        qemu_io("c.qcow2", ["write -c -P 4 0 256k", "write -P 6 512k 64k", "write -c 1M 64k"])
        compare(qimg, "c.qcow2", label="compressed")
        # Backing file shorter than the overlay, three layers, raw and qcow2 bases.
        must(["qemu-img", "create", "-f", "raw", "base.raw", "1M"])
        qemu_io("base.raw", ["write -P 1 0 512k"], fmt="raw")
        must(["qemu-img", "create", "-f", "qcow2", "-b", "base.raw", "-F", "raw", "mid.qcow2", "3M"])
        qemu_io("mid.qcow2", ["write -P 2 256k 64k", "write -P 2 2M 64k"])
        must(["qemu-img", "create", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "-o",
              "extended_l2=on,cluster_size=32k", "top.qcow2", "6M"])
        qemu_io("top.qcow2", ["write -P 3 4k 1k", "write -z 3M 64k", "write -P 3 5M 4k"])
        compare(qimg, "top.qcow2", label="chain")
        compare(qimg, "top.qcow2", ["--start-offset=500k", "--max-length=3M"], label="chain window")
        # Raw files whose length is not a multiple of 512: the disk is rounded up, the tail reads as zeros.
        with open("odd.raw", "wb") as f:
            f.write(b"\x01" * 5000)
        compare(qimg, "odd.raw", label="unaligned raw")
        with open("odd-sparse.raw", "wb") as f:
            f.truncate(3 * 1024 * 1024 + 100)
            f.seek(1 << 20)
            f.write(b"\x02" * 700)
        compare(qimg, "odd-sparse.raw", label="unaligned sparse raw")
        # Huge sparse image: mapping must take time proportional to the L1 table, not the disk.
        must(["qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=2M", "huge.qcow2", "2000T"])
        qemu_io("huge.qcow2", ["write -P 1 1000T 4k", "write -z 1500T 4M"])
        compare(qimg, "huge.qcow2", label="2000 TiB sparse")
    if FAILURES:
        print("\n".join("FAIL " + f for f in FAILURES))
        return 1
    print("all map comparisons passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
