#!/usr/bin/env python3
"""qimg rebase against qemu-img rebase (chain_cases.py runs both on copies of
the same images): the same exit status, stdout and error text, and then

- the rebased image reads as before (qemu-img compare against the untouched
  copy, through its old chain) and as qemu-img's result, and so does every
  internal snapshot;
- qemu-img check finds it clean, and it records the same backing file and
  format as qemu-img's result;
- it allocates no more than qemu-img's result: guest bytes with data in the
  image itself, per qemu-img map (qemu 7.2 compares 512-byte sectors and
  lets each write copy the rest of its cluster or subcluster from the old
  backing file; qimg writes whole units where something differs, and zeros as
  zero flags).

The matrix: images with standard and extended L2 entries (16 KiB, 64 KiB and
2 MiB clusters), 512-byte clusters, compat=0.10; chains of two and three
images, raw and qcow2 backing files, different cluster sizes in every layer;
overlays larger than their backing files; internal snapshots; rebasing onto an
image of the chain, onto another image, onto nothing (-b ''), unsafe renames,
-c (qemu 8.2's option: compared with qemu-img 7.2 without it), and usage and
open errors."""
import os
import shutil
import sys

from chain_cases import MIB, SECRET, Case, CaseFailure, check_clean, check_luks_clean, create, create_luks, fit, info
from chain_cases import keyed, luks_opts, main, make_image, own_bytes, qemu_io, run, same_content, same_luks_content
from chain_cases import snapshot_export

SIZE = 5 * MIB + 4096  # an unaligned end: the last cluster is partial

BASE_DATA = ["write -P 0x11 0 1M", "write -P 0x12 2M 512k", "write -z 3M 64k", "write -P 0x13 4M 100k",
             "write -P 0x14 5M 4096"]
MID_DATA = ["write -P 0x21 512k 100k", "write -P 0x22 1536k 4k", "write -z 2M 8k", "write -P 0x23 4600k 3000"]
# Much like the base: the same in places, different in others, data where the chain reads zeros and zeros
# where it has data.
OTHER_DATA = ["write -P 0x11 0 1M", "write -P 0x31 700k 1k", "write -P 0x12 2M 512k", "write -P 0x32 3M 64k",
              "write -P 0x33 3584k 512", "write -P 0x14 5M 4096"]
TOP_DATA = ["write -P 0x41 100k 8k", "write -P 0x42 2098152 3000", "write -z 1M 128k", "write -P 0x43 5M 4096"]

OVERLAYS = {
    "std64k": "cluster_size=64k",
    "ext64k": "extended_l2=on,cluster_size=64k",
    "ext2M": "extended_l2=on,cluster_size=2M",
    "ext16k": "extended_l2=on,cluster_size=16k",
    "c512": "cluster_size=512",
    "v2": "compat=0.10",
    "std2M": "cluster_size=2M",
}
LAYERS = {  # backing layers: (format, qcow2 options)
    "raw": ("raw", ""),
    "std64k": ("qcow2", "cluster_size=64k"),
    "std4k": ("qcow2", "cluster_size=4k"),
    "ext2M": ("qcow2", "extended_l2=on,cluster_size=2M"),
    "c512": ("qcow2", "cluster_size=512"),
    "v2": ("qcow2", "compat=0.10"),
}


def layer(d, name, kind, data, size=SIZE, backing=None, backing_fmt="qcow2"):
    return make_image(d, name, LAYERS[kind], data, size, backing, backing_fmt)


def chain(overlay, base="std64k", mid="std4k", other="std64k", size=SIZE, top_size=None, other_size=None,
          snapshot=False, depth=3, compressed=False):
    """base <- [mid <-] top.qcow2, plus other.* (a candidate new backing file)."""
    @keyed(("chain", *[repr(v) for v in locals().values()]))
    def setup(d):
        bfmt = layer(d, "base.img", base, BASE_DATA, size)
        below, below_fmt = "base.img", bfmt
        if depth == 3:
            layer(d, "mid.qcow2", mid if LAYERS[mid][0] == "qcow2" else "std4k", MID_DATA, size, "base.img", bfmt)
            below, below_fmt = "mid.qcow2", "qcow2"
        layer(d, "other.img", other, OTHER_DATA, other_size or size)
        create(d, "top.qcow2", top_size or size, OVERLAYS[overlay], backing=below, backing_fmt=below_fmt)
        qemu_io(d, "top.qcow2", fit(TOP_DATA, top_size or size))
        if compressed:  # a compressed cluster in the overlay (the disks here are at least 3 MiB)
            qemu_io(d, "top.qcow2", ["write -c -P 0x46 3M 64k"])
        if snapshot:
            run(["qemu-img", "snapshot", "-c", "s1", "top.qcow2"], cwd=d)
            qemu_io(d, "top.qcow2", ["write -P 0x51 1536k 70000", "write -z 0 4k"])
    return setup


def fmt_of(kind):
    return LAYERS[kind][0]


def verify(keeps_content=True, compressed=False, snapshot=False, header_only=False):
    def check(case, dirs, rc):
        p, q, i = (os.path.join(dirs[k], "top.qcow2") for k in ("pristine", "qemu", "qimg"))
        if header_only:  # the new backing file does not exist: compare what the headers say
            ii, qi = info(i), info(q)
            for key in ("backing-filename", "backing-filename-format"):
                if ii.get(key) != qi.get(key):
                    raise CaseFailure(f"{key}: qimg {ii.get(key)!r}, qemu-img {qi.get(key)!r}")
            return
        if rc != 0:
            # A failed rebase leaves the image reading as before (unless, as with qemu-img's
            # result, it cannot be opened at all: a missing backing file).
            if run(["qemu-img", "compare", "-U", q, p]).returncode != 2:
                same_content(i, p, "after the failure, against the original")
            return
        same_content(i, q, "against qemu-img's result")
        if keeps_content:
            same_content(i, p, "against the original")
        check_clean(i, "qimg's result")
        ii, qi = info(i), info(q)
        for key in ("backing-filename", "backing-filename-format"):
            if ii.get(key) != qi.get(key):
                raise CaseFailure(f"{key}: qimg {ii.get(key)!r}, qemu-img {qi.get(key)!r}")
        di, pi = own_bytes(i)
        dq, pq = own_bytes(q)
        case.notes.append(f"data {di} (allocated {pi}) bytes, qemu-img {dq} ({pq}); disk size {ii['actual-size']}, "
                          f"qemu-img {qi['actual-size']}")
        if compressed:
            r = run(["qemu-img", "check", "--output=json", i])
            if '"compressed-clusters": 0' in r.stdout or "compressed-clusters" not in r.stdout:
                raise CaseFailure(f"-c wrote no compressed cluster: {r.stdout}")
            if ii["actual-size"] > qi["actual-size"]:
                raise CaseFailure(f"-c result larger on disk than qemu-img's uncompressed one")
        elif di > dq:
            raise CaseFailure(f"qimg allocated {di} data bytes, more than qemu-img's {dq}")
        if snapshot:
            # A snapshot reads unallocated clusters from the backing file too, so it follows the
            # new one (with qemu-img as with qimg): it must read as in qemu-img's result.
            got = snapshot_export(i, "s1", os.path.join(dirs["qimg"], "s1.raw"))
            want = snapshot_export(q, "s1", os.path.join(dirs["qemu"], "s1.raw"))
            if got != want:
                raise CaseFailure("snapshot s1 reads differently from qemu-img's result")
    return check


def rename(old, new):
    def pre(d):
        shutil.move(os.path.join(d, old), os.path.join(d, new))
    return pre


def add_cases(r):
    # Onto an image of the chain (qemu-img reuses it), onto another image, onto nothing.
    for ov in OVERLAYS:
        r.add(Case(f"{ov}: onto the base below mid", chain(ov), ["-b", "base.img", "-F", "qcow2", "top.qcow2"],
                   verify()))
        r.add(Case(f"{ov}: onto another image", chain(ov), ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
        r.add(Case(f"{ov}: flatten", chain(ov), ["-b", "", "top.qcow2"], verify()))
    # Backing layers of every kind, two and three deep.
    others = ["raw", "ext2M", "c512", "v2"]
    for n, base in enumerate(LAYERS):
        for other in (others[n % 4], others[(n + 1) % 4]):
            r.add(Case(f"base {base}, other {other}, depth 2", chain("ext64k", base=base, other=other, depth=2),
                       ["-b", "other.img", "-F", fmt_of(other), "top.qcow2"], verify()))
        if n % 2 == 0:
            r.add(Case(f"base {base}, mid ext2M, onto the base", chain("std64k", base=base, mid="ext2M"),
                       ["-b", "base.img", "-F", fmt_of(base), "top.qcow2"], verify()))
        r.add(Case(f"base {base}, flatten depth 2", chain("ext2M", base=base, depth=2), ["-b", "", "top.qcow2"], verify()))
    # Cluster sizes that differ between layers (a 2 MiB extended-L2 overlay over 64 KiB images and the reverse).
    r.add(Case("ext2M over 64k onto 512", chain("ext2M", base="std64k", mid="c512", other="c512"),
               ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
    r.add(Case("c512 over ext2M onto ext2M", chain("c512", base="ext2M", mid="ext2M", other="ext2M"),
               ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
    r.add(Case("std64k over 2M onto 4k", chain("std64k", base="ext2M", other="std4k"),
               ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
    # Sizes: the overlay larger than its backing files; the new backing file smaller or larger than the old.
    for ov in ("ext64k", "v2"):
        r.add(Case(f"{ov}: larger overlay onto a larger image", chain(ov, size=3 * MIB, top_size=SIZE + MIB),
                   ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
        r.add(Case(f"{ov}: onto a smaller image", chain(ov, other_size=2 * MIB),
                   ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
        r.add(Case(f"{ov}: onto a larger image", chain(ov, size=3 * MIB, top_size=SIZE, other_size=SIZE),
                   ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
        r.add(Case(f"{ov}: larger overlay, flatten", chain(ov, size=2 * MIB, top_size=SIZE, depth=2),
                   ["-b", "", "top.qcow2"], verify()))
    # Internal snapshots in the overlay stay as they were.
    for ov in ("std64k", "ext64k", "c512"):
        r.add(Case(f"{ov}: with a snapshot, onto another image", chain(ov, snapshot=True),
                   ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify(snapshot=True)))
        r.add(Case(f"{ov}: with a snapshot, flatten", chain(ov, snapshot=True), ["-b", "", "top.qcow2"],
                   verify(snapshot=True)))
    # Compressed clusters in the overlay stay as they are.
    for ov in ("std64k", "c512"):
        r.add(Case(f"{ov}: a compressed cluster, onto another image", chain(ov, compressed=True),
                   ["-b", "other.img", "-F", "qcow2", "top.qcow2"], verify()))
    # Unsafe mode: a renamed backing file; a different one (the content changes, as with qemu-img).
    for ov in ("ext64k", "v2"):
        r.add(Case(f"{ov}: -u after a rename", chain(ov), ["-u", "-b", "renamed.qcow2", "-F", "qcow2", "top.qcow2"],
                   verify(), pre=rename("mid.qcow2", "renamed.qcow2")))
        r.add(Case(f"{ov}: -u onto another image", chain(ov), ["-u", "-b", "other.img", "-F", "qcow2", "top.qcow2"],
                   verify(keeps_content=False)))
        r.add(Case(f"{ov}: -u without a backing file", chain(ov), ["-u", "-b", "", "top.qcow2"],
                   verify(keeps_content=False)))
    r.add(Case("-u without -b removes the backing file", chain("std64k"), ["-u", "top.qcow2"],
               verify(keeps_content=False)))
    # -c (qemu 8.2; compared with qemu-img 7.2's uncompressed result).
    for ov in ("std64k", "ext64k", "ext16k", "c512"):
        r.add(Case(f"{ov}: -c flatten", chain(ov), ["-c", "-b", "", "top.qcow2"], verify(compressed=True),
                   qemu_args=["-b", "", "top.qcow2"]))
        r.add(Case(f"{ov}: -c onto another image", chain(ov), ["-c", "-b", "other.img", "-F", "qcow2", "top.qcow2"],
                   verify(compressed=True), qemu_args=["-b", "other.img", "-F", "qcow2", "top.qcow2"]))
    # Options that change nothing of the result.
    for extra in (["-q"], ["-p"], ["-t", "unsafe"], ["-t", "writethrough", "-T", "none"], ["-U", "-f", "qcow2"],
                  ["-p", "-q", "-t", "directsync"]):
        r.add(Case(f"options {' '.join(extra)}", chain("ext64k"), [*extra, "-b", "other.img", "-F", "qcow2", "top.qcow2"],
                   verify(), compare_stdout="-p" not in extra))
    # Errors, and qemu-img's quirks: without -F the data is copied and then the header refuses the
    # change; a new backing file inside the chain is reused whatever -F says.
    errors = [
        ["-b", "other.img", "top.qcow2"],
        ["-b", "base.img", "top.qcow2"],
        ["-u", "-b", "other.img", "top.qcow2"],
        ["-b", "nonexist", "top.qcow2"],
        ["-b", "nonexist", "-F", "qcow2", "top.qcow2"],
        ["-u", "-b", "nonexist", "top.qcow2"],
        ["-b", "other.img", "-F", "raw", "top.qcow2"],
        ["-b", "base.img", "-F", "raw", "top.qcow2"],
        ["-b", "other.img", "-F", "foo", "top.qcow2"],
        ["-b", "base.img", "-F", "qcow2", "-f", "raw", "top.qcow2"],
        ["-b", "base.img", "-F", "qcow2", "-f", "foo", "top.qcow2"],
        ["-b", "base.img", "-F", "qcow2", "nonexist.qcow2"],
        ["-t", "foo", "-b", "base.img", "-F", "qcow2", "top.qcow2"],
        ["-T", "foo", "-b", "base.img", "-F", "qcow2", "top.qcow2"],
        ["-b", "base.img", "-F", "qcow2"],
        ["-b", "base.img", "-F", "qcow2", "top.qcow2", "extra"],
        ["top.qcow2"],
        [],
        ["-u", "-b", "x" * 1024, "-F", "qcow2", "top.qcow2"],
        ["-u", "-b", "", "-F", "qcow2", "top.qcow2"],
        ["-u", "-b", "base.img", "-F", "qcow2", "-F", "raw", "top.qcow2"],
    ]
    for args in errors:
        r.add(Case("usage", chain("std64k", base="raw"), args, verify(keeps_content="-u" not in args)))
    r.add(Case("usage: a missing old backing file", chain("ext64k"), ["-b", "other.img", "-F", "qcow2", "top.qcow2"],
               verify(), pre=rename("mid.qcow2", "gone.qcow2")))
    # Images in another directory: names are relative to it (an image of the chain is still found).
    def in_sub(setup):
        def wrapped(d):
            os.makedirs(os.path.join(d, "sub"))
            setup(os.path.join(d, "sub"))
        return wrapped

    def verify_sub(case, dirs, rc):
        verify()(case, {k: os.path.join(v, "sub") for k, v in dirs.items()}, rc)
    for args in (["-b", "base.img", "-F", "qcow2", "sub/top.qcow2"], ["-b", "other.img", "-F", "qcow2", "sub/top.qcow2"],
                 ["-b", "sub/base.img", "-F", "qcow2", "sub/top.qcow2"], ["-b", "nonexist", "-F", "qcow2", "sub/top.qcow2"],
                 ["-b", "", "sub/top.qcow2"]):
        r.add(Case("in a subdirectory", in_sub(chain("ext64k")), args, verify_sub))
    # An encrypted overlay (--object, --image-opts) over plain images.
    @keyed(("luks",))
    def luks_chain(d):
        make_image(d, "base.img", LAYERS["std64k"], BASE_DATA, SIZE)
        make_image(d, "mid.qcow2", LAYERS["std4k"], MID_DATA, SIZE, "base.img", "qcow2")
        create_luks(d, "top.qcow2", SIZE, "mid.qcow2", "qcow2", TOP_DATA)

    def verify_luks(case, dirs, rc):
        p, q, i = (os.path.join(dirs[k], "top.qcow2") for k in ("pristine", "qemu", "qimg"))
        same_luks_content(i, q, "against qemu-img's result")
        same_luks_content(i, p, "against the original")
        check_luks_clean(i, "qimg's result")
        if info(i).get("backing-filename") != info(q).get("backing-filename"):
            raise CaseFailure("backing file differs from qemu-img's result")
    # (Only -b '': with --image-opts and a key qemu-img names the image json:{...} and cannot resolve a
    # relative backing file name against it; qimg takes it relative to file.filename.)
    r.add(Case("luks overlay -b ''", luks_chain, [*SECRET, "-b", "", "--image-opts", luks_opts("top.qcow2")],
               verify_luks))
    r.add(Case("luks overlay without the key", luks_chain, ["-b", "", "top.qcow2"], verify()))
    # 512-byte clusters leave little room for the name in the header.
    for n in (300, 376, 377, 420):
        name = ("d/" * n)[:n - 1] + "x"
        r.add(Case(f"c512: a {n}-byte name", chain("c512", depth=2),
                   ["-u", "-b", name, "-F", "raw", "top.qcow2"], verify(header_only=True)))
    r.add(Case("std64k: a 1000-byte name", chain("std64k", depth=2),
               ["-u", "-b", ("d/" * 500)[:999] + "x", "-F", "raw", "top.qcow2"], verify(header_only=True)))


if __name__ == "__main__":
    sys.exit(main("rebase", add_cases))
