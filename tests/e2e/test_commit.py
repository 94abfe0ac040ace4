#!/usr/bin/env python3
"""qimg commit against qemu-img commit (chain_cases.py runs both on copies of
the same images): the same exit status, stdout ("Image committed.") and error
text, and then, for every image of the chain, that it reads the same as in
qemu-img's result (qemu-img compare, each through its own chain), that
qemu-img check finds it clean, that internal snapshots read the same, that
the image was emptied exactly when qemu-img empties it (without -d and -b),
and that the base holds no more data than qemu-img's commit put there
(qemu-img 7.2's commit job copies whole base clusters and writes zeros where a
short layer ends; qimg writes only units that change, at the base's
subcluster granularity with extended L2).

The matrix: bases of every kind (raw, standard and extended L2 with 64 KiB
and 2 MiB clusters, 512-byte clusters, compat=0.10), chains of two and three
images with different cluster sizes in every layer, overlays with extended L2
(only their allocated subclusters are copied) and larger than their base, an
internal snapshot in the overlay or in the base, -b into the base past an
intermediate image or into the backing file itself, -d, -q, -p, -r, -t, names
relative to another directory, and usage and open errors."""
import os
import sys

from chain_cases import MIB, SECRET, Case, CaseFailure, check_clean, create_luks, info, keyed, luks_opts, main
from chain_cases import make_image, own_bytes, qemu_io, run, same_content, snapshot_export

SIZE = 4 * MIB + 4096

BASE_DATA = ["write -P 0x11 0 1M", "write -P 0x12 2M 512k", "write -z 3M 64k", "write -P 0x13 3500k 100k"]
MID_DATA = ["write -P 0x21 512k 100k", "write -P 0x22 1536k 4k", "write -z 2M 8k", "write -P 0x23 3600k 3000"]
TOP_DATA = ["write -P 0x41 100k 8k", "write -P 0x42 2098152 3000", "write -z 1M 128k", "write -P 0x43 4M 4096",
            "write -P 0x44 2700k 1k"]

KINDS = {  # (format, qcow2 options)
    "raw": ("raw", ""),
    "std64k": ("qcow2", "cluster_size=64k"),
    "ext64k": ("qcow2", "extended_l2=on,cluster_size=64k"),
    "ext2M": ("qcow2", "extended_l2=on,cluster_size=2M"),
    "ext16k": ("qcow2", "extended_l2=on,cluster_size=16k"),
    "c512": ("qcow2", "cluster_size=512"),
    "v2": ("qcow2", "compat=0.10"),
    "std4k": ("qcow2", "cluster_size=4k"),
}


def image(d, name, kind, data, size, backing=None, backing_fmt="qcow2"):
    return make_image(d, name, KINDS[kind], data, size, backing, backing_fmt)


def chain(top, base="std64k", mid=None, size=SIZE, top_size=None, top_snapshot=False, base_snapshot=False, sub="",
          compressed=False):
    """base.img <- [mid.qcow2 <-] top.qcow2, in subdirectory `sub` of the case directory."""
    @keyed(("chain", *[repr(v) for v in locals().values()]))
    def setup(root):
        d = os.path.join(root, sub)
        os.makedirs(d, exist_ok=True)
        bfmt = image(d, "base.img", base, BASE_DATA, size)
        if base_snapshot:
            run(["qemu-img", "snapshot", "-c", "b1", "base.img"], cwd=d)
            qemu_io(d, "base.img", ["write -P 0x15 64k 200k"])
        below, below_fmt = "base.img", bfmt
        if mid:
            image(d, "mid.qcow2", mid, MID_DATA, size, "base.img", bfmt)
            below, below_fmt = "mid.qcow2", "qcow2"
        image(d, "top.qcow2", top, TOP_DATA, top_size or size, below, below_fmt)
        if compressed:  # a compressed cluster in the overlay
            qemu_io(d, "top.qcow2", ["write -c -P 0x46 3M 64k"])
        if top_snapshot:
            run(["qemu-img", "snapshot", "-c", "s1", "top.qcow2"], cwd=d)
            qemu_io(d, "top.qcow2", ["write -P 0x51 1536k 70000", "write -z 0 4k"])
    return setup


def verify(target="base.img", emptied=False, sub="", snapshots=()):
    """target: the image committed into; emptied: whether the top is emptied afterwards."""
    def check(case, dirs, rc):
        p, q, i = (os.path.join(dirs[k], sub) for k in ("pristine", "qemu", "qimg"))
        names = [n for n in ("base.img", "mid.qcow2", "top.qcow2") if os.path.exists(os.path.join(p, n))]
        if rc != 0:
            for n in names:  # nothing changed what the images read
                if run(["qemu-img", "compare", "-U", os.path.join(q, n), os.path.join(p, n)]).returncode != 2:
                    same_content(os.path.join(i, n), os.path.join(p, n), f"{n} after the failure, against the original")
            return
        for n in names:
            same_content(os.path.join(i, n), os.path.join(q, n), f"{n} against qemu-img's result")
            check_clean(os.path.join(i, n), f"qimg's {n}")
        # The target now reads what the top read before.
        same_content(os.path.join(i, target), os.path.join(p, "top.qcow2"), f"{target} against the original top")
        ti, tq = info(os.path.join(i, target)), info(os.path.join(q, target))
        if ti["virtual-size"] != tq["virtual-size"]:
            raise CaseFailure(f"{target} has {ti['virtual-size']} bytes, qemu-img's {tq['virtual-size']}")
        if ti["format"] == "qcow2":
            di, pi = own_bytes(os.path.join(i, target))
            dq, pq = own_bytes(os.path.join(q, target))
            case.notes.append(f"{target}: data {di} (allocated {pi}) bytes, qemu-img {dq} ({pq})")
            if di > dq:
                raise CaseFailure(f"qimg wrote {di} data bytes into {target}, more than qemu-img's {dq}")
        top_i = own_bytes(os.path.join(i, "top.qcow2"))[1]
        top_q = own_bytes(os.path.join(q, "top.qcow2"))[1]
        top_p = own_bytes(os.path.join(p, "top.qcow2"))[1]
        if emptied and (top_i != 0 or top_q != 0):
            raise CaseFailure(f"the top still allocates {top_i} bytes (qemu-img's {top_q})")
        if not emptied and top_i != top_p:
            raise CaseFailure(f"the top changed: {top_i} bytes allocated, {top_p} before")
        for img, name in snapshots:
            got = snapshot_export(os.path.join(i, img), name, os.path.join(i, "snap.raw"))
            want = snapshot_export(os.path.join(q, img), name, os.path.join(q, "snap.raw"))
            if got != want:
                raise CaseFailure(f"snapshot {name} of {img} reads differently from qemu-img's result")
    return check


def add_cases(r):
    # Two images: into the backing file (emptied), with -d (kept).
    tops = ["ext64k", "std64k", "c512", "v2", "ext2M"]
    for n, base in enumerate(KINDS):
        for top in (tops[n % 5], tops[(n + 1) % 5], tops[(n + 3) % 5]):
            r.add(Case(f"{top} into {base}", chain(top, base), ["top.qcow2"], verify(emptied=True)))
        r.add(Case(f"ext16k into {base}, -d", chain("ext16k", base), ["-d", "top.qcow2"], verify()))
    # Three images: into the backing file, into the base past it (-b implies -d), -b naming the backing file.
    for base, mid, top in (("std64k", "ext16k", "ext64k"), ("ext2M", "std4k", "ext16k"), ("raw", "c512", "ext2M"),
                           ("c512", "ext2M", "std64k"), ("v2", "v2", "ext64k"), ("ext64k", "std64k", "c512")):
        label = f"{top} over {mid} over {base}"
        r.add(Case(f"{label}: into mid", chain(top, base, mid), ["top.qcow2"], verify("mid.qcow2", emptied=True)))
        r.add(Case(f"{label}: -b base", chain(top, base, mid), ["-b", "base.img", "top.qcow2"], verify()))
        r.add(Case(f"{label}: -b mid", chain(top, base, mid), ["-b", "mid.qcow2", "top.qcow2"], verify("mid.qcow2")))
    # A top larger than its base: the base grows (zeros where the base ended).
    for base, top in (("std64k", "ext64k"), ("ext2M", "std64k"), ("raw", "ext16k"), ("v2", "c512")):
        r.add(Case(f"larger {top} into {base}", chain(top, base, size=2 * MIB, top_size=SIZE), ["top.qcow2"],
                   verify(emptied=True)))
        r.add(Case(f"larger {top} over mid into {base}", chain(top, base, "std4k", size=2 * MIB, top_size=SIZE),
                   ["-b", "base.img", "top.qcow2"], verify()))
    # Internal snapshots: the top's stay (its clusters stay referenced), the base's are copied on write.
    for top in ("std64k", "ext64k", "c512"):
        r.add(Case(f"{top} with a snapshot", chain(top, "std64k", top_snapshot=True), ["top.qcow2"],
                   verify(emptied=True, snapshots=[("top.qcow2", "s1")])))
        r.add(Case(f"{top} into a base with a snapshot", chain(top, "ext64k", base_snapshot=True), ["top.qcow2"],
                   verify(emptied=True, snapshots=[("base.img", "b1")])))
    # Compressed clusters in the overlay: copied, then freed with it.
    for top, mid in (("std64k", None), ("ext64k", "c512")):
        r.add(Case(f"compressed {top} into the backing file", chain(top, "ext64k", mid, compressed=True), ["top.qcow2"],
                   verify("mid.qcow2" if mid else "base.img", emptied=True)))
        r.add(Case(f"compressed {top}, -d", chain(top, "std64k", mid, compressed=True), ["-d", "top.qcow2"],
                   verify("mid.qcow2" if mid else "base.img")))
    # Options that leave the result alone.
    for extra in (["-q"], ["-p"], ["-r", "100M"], ["-t", "unsafe"], ["-t", "writethrough"], ["-t", "none"],
                  ["-f", "qcow2"], ["-p", "-q", "-d"]):
        r.add(Case(f"options {' '.join(extra)}", chain("ext64k", "std64k", "ext16k"), [*extra, "top.qcow2"],
                   verify("mid.qcow2", emptied="-d" not in extra), compare_stdout="-p" not in extra or "-q" in extra))
    # Names relative to the images' directory, not the working directory.
    r.add(Case("in a subdirectory: -b base.img", chain("ext64k", "std64k", "std4k", sub="sub"),
               ["-b", "base.img", "sub/top.qcow2"], verify(sub="sub")))
    r.add(Case("in a subdirectory: -b sub/base.img", chain("ext64k", "std64k", "std4k", sub="sub"),
               ["-b", "sub/base.img", "sub/top.qcow2"], verify(sub="sub")))
    r.add(Case("in a subdirectory", chain("ext64k", "std64k", "std4k", sub="sub"), ["sub/top.qcow2"],
               verify("mid.qcow2", emptied=True, sub="sub")))
    # An encrypted (LUKS) overlay committed into a plain base, with --object and --image-opts.
    @keyed(("luks",))
    def luks_chain(d):
        make_image(d, "base.img", KINDS["ext64k"], BASE_DATA, SIZE)
        create_luks(d, "top.qcow2", SIZE, "base.img", "qcow2", TOP_DATA)

    def verify_luks(case, dirs, rc):
        i, q = (os.path.join(dirs[k], "base.img") for k in ("qimg", "qemu"))
        same_content(i, q, "base.img against qemu-img's result")
        check_clean(i, "qimg's base.img")
        if own_bytes(os.path.join(dirs["qimg"], "top.qcow2"), luks=True)[1] != 0:
            raise CaseFailure("the encrypted top was not emptied")
    r.add(Case("luks overlay", luks_chain, [*SECRET, "--image-opts", luks_opts("top.qcow2")], verify_luks))
    r.add(Case("luks overlay without the key", luks_chain, ["top.qcow2"], verify()))
    # Errors.
    for args in (["base.img"], ["-f", "raw", "base.img"], ["-b", "nope", "top.qcow2"], ["-b", "top.qcow2", "top.qcow2"],
                 ["-r", "foo", "top.qcow2"], ["-r", "-5", "top.qcow2"], ["-t", "foo", "top.qcow2"], [], ["a", "b"],
                 ["-r", "foo"], ["-f", "foo", "top.qcow2"], ["nonexist"], ["-q", "base.img"], ["-f", "raw", "top.qcow2"]):
        r.add(Case("usage", chain("std64k", "raw"), args, verify()))
    r.add(Case("usage: a qcow2 base", chain("std64k", "ext64k"), ["base.img"], verify()))

    def lose_mid(d):
        os.unlink(os.path.join(d, "mid.qcow2"))
    r.add(Case("usage: a missing backing file", chain("ext64k", "std64k", "std4k"), ["top.qcow2"], verify(),
               pre=lose_mid))


if __name__ == "__main__":
    sys.exit(main("commit", add_cases))
