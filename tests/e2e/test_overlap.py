#!/usr/bin/env python3
"""Metadata overlap checks against qemu-io's, structure by structure.

Each case damages a qemu-made image the way a bad L2 entry or refcount would:
an allocated guest cluster (COPIED set) made to point at a metadata structure,
or a structure's cluster given refcount 0 so that an allocating write could pick
it. Then the same write runs through `qemu-io` and `qimg io` on two copies, at
an overlap-check level, and both must agree:

- refused or not (exit status);
- the message names the same structure ("Marking image as corrupt: Preventing
  invalid write on metadata (overlaps with <structure>");
- the corrupt bit (incompatible bit 1) is set on disk, and the structure's
  bytes are unchanged (or, when the level does not cover it, both overwrite it);
- afterwards reads still work, a read-write open is refused, qimg check and
  qemu-img check report the same, and `qimg check -r all` leaves an image that
  qemu-img check finds clean with the corrupt bit cleared.

Structures: the header, the active L1 and L2 tables, the refcount table and a
refcount block, the snapshot table, a snapshot's L1 and L2 tables, the bitmap
directory; levels none, constant, cached (default) and all; standard and
extended L2 entries. The encryption header is protected by qimg only (QEMU has
no overlap check for it): that case asserts the documented difference.
"""
import argparse
import os
import shutil
import struct
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from qimgtest import require_tools, run as run_checked  # noqa: E402

FAILURES = []
L1E_OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63
SECRET = ["--object", "secret,id=sec0,data=overlap-pass"]


def run(argv, **kw):
    return run_checked(argv, timeout=120, text=True, **kw)


def must(argv, **kw):
    r = run(argv, **kw)
    if r.returncode != 0:
        raise SystemExit(f"command failed ({r.returncode}): {' '.join(argv)}\n{r.stdout}{r.stderr}")
    return r


class Image:
    """Reads the few header fields and tables the cases need (spec offsets)."""

    def __init__(self, path):
        self.path = path
        with open(path, "rb") as f:
            h = f.read(4096)
        self.cluster_bits = struct.unpack(">I", h[20:24])[0]
        self.cluster_size = 1 << self.cluster_bits
        self.l1_size, self.l1_offset = struct.unpack(">IQ", h[36:48])
        self.reftable_offset, self.reftable_clusters = struct.unpack(">QI", h[48:60])
        self.nb_snapshots, self.snapshots_offset = struct.unpack(">IQ", h[60:72])
        self.incompat = struct.unpack(">Q", h[72:80])[0]
        self.extended_l2 = bool(self.incompat & (1 << 4))
        self.header_length = struct.unpack(">I", h[100:104])[0]
        self.extensions = {}
        off = self.header_length
        while off + 8 <= len(h):
            t, n = struct.unpack(">II", h[off:off + 8])
            if t == 0:
                break
            self.extensions[t] = h[off + 8:off + 8 + n]
            off += 8 + (n + 7) // 8 * 8

    def read(self, off, n):
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n)

    def write(self, off, data):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def u64(self, off):
        return struct.unpack(">Q", self.read(off, 8))[0]

    def l2_table(self, l1_offset, index):
        return self.u64(l1_offset + 8 * index) & L1E_OFFSET_MASK

    def snapshot_l1(self):
        return self.u64(self.snapshots_offset)

    def bitmap_directory(self):
        return struct.unpack(">Q", self.extensions[0x23852875][16:24])[0]

    def luks_header(self):
        return struct.unpack(">Q", self.extensions[0x0537be77][0:8])[0]

    def refblock(self):
        return self.u64(self.reftable_offset) & ~0x1FF

    def corrupt(self):
        return bool(self.u64(72) & 2)

    def point_cluster_at(self, guest_cluster, target):
        """L2 entry of guest cluster -> target, COPIED (allocated in place), all subclusters allocated."""
        entries = self.cluster_size // (16 if self.extended_l2 else 8)
        l2 = self.l2_table(self.l1_offset, guest_cluster // entries)
        assert l2, "the guest cluster needs an L2 table"
        idx = guest_cluster % entries
        if self.extended_l2:
            self.write(l2 + 16 * idx, struct.pack(">QQ", COPIED | target, 0xFFFFFFFF))
        else:
            self.write(l2 + 8 * idx, struct.pack(">Q", COPIED | target))

    def zero_refcount(self, offset):
        """Sets the refcount of the cluster at offset to 0 (16-bit refcounts)."""
        cluster = offset >> self.cluster_bits
        per_block = self.cluster_size // 2
        block = self.u64(self.reftable_offset + 8 * (cluster // per_block)) & ~0x1FF
        self.write(block + 2 * (cluster % per_block), b"\0\0")


def make_base(d, name, opts="", snapshot=False, bitmap=False, luks=False):
    path = os.path.join(d, name)
    create = ["qemu-img", "create", "-f", "qcow2"]
    io = ["qemu-io"]
    if luks:
        create += SECRET + ["-o", "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10"]
        io += SECRET + ["--image-opts"]
    if opts:
        create += ["-o", opts]
    must(create + [path, "1G"])
    target = f"driver=qcow2,file.filename={path},encrypt.key-secret=sec0" if luks else path
    # Two L2 tables (64 KiB clusters map 512 MiB per table) and data in both.
    must(io + ["-c", "write -P 0x11 0 128k", "-c", "write -P 0x22 600M 64k", target])
    if snapshot:
        must(["qemu-img", "snapshot", "-c", "s1", path])
        # Copy-on-write: the active image gets its own L2 table; the old one is the snapshot's only.
        must(["qemu-io", "-c", "write -P 0x33 0 64k", "-c", "write -P 0x33 64k 64k", path])
    if bitmap:
        must(["qemu-img", "bitmap", "--add", path, "b0"])
    return path


def tool_argv(tool, level, img, luks, cmd):
    opts = f"driver=qcow2,file.filename={img}"
    if level is not None:
        opts += f",overlap-check={level}"
    if luks:
        opts += ",encrypt.key-secret=sec0"
    image = ["--image-opts", opts] if (level is not None or luks) else [img]
    extra = SECRET if luks else []
    if tool == "qemu":
        return ["qemu-io", *extra, "-c", cmd, *image]
    return [tool, "io", *extra, "-c", cmd, *image]


def expect_same(label, what, a, b):
    if a != b:
        FAILURES.append(f"{label}: {what}: qimg {b!r}, qemu {a!r}")
        return False
    return True


def after_checks(qimg, label, q_img, i_img, refused, read_cmd, same_check=True):
    """Reads work (or fail alike where both tools overwrote metadata), writable opens of a
    corrupt image are refused, the checks agree, and repair clears the corrupt bit."""
    reads = {}
    for tool, img in (("qemu", q_img), (qimg, i_img)):
        argv = ["qemu-io", "-r", "-c", read_cmd, img] if tool == "qemu" else [tool, "io", "-r", "-c", read_cmd, img]
        r = run(argv)
        reads[tool] = r.returncode == 0 and "failed" not in r.stdout + r.stderr
        if refused and not reads[tool]:
            FAILURES.append(f"{label}: read-only read after the event failed ({tool}): {r.stderr.strip()}")
    expect_same(label, "read after the event works", reads["qemu"], reads[qimg])
    if not refused:
        expect_same(label, "qemu-img check of qemu's and qimg's image", run(["qemu-img", "check", q_img]).returncode,
                    run(["qemu-img", "check", i_img]).returncode)
        return
        r = run([qimg, "io", "-c", "write 0 512", i_img])
        if r.returncode == 0 or "marked corrupt" not in r.stderr:
            FAILURES.append(f"{label}: a read-write open of the corrupt image was not refused: rc={r.returncode} {r.stderr}")
    qc = run(["qemu-img", "check", "--output=json", i_img])
    ic = run([qimg, "check", "--output=json", i_img])
    expect_same(label, "check exit code (qimg check vs qemu-img check of qimg's image)", qc.returncode, ic.returncode)
    if same_check:  # a cluster referenced twice (guest data and metadata) is a corruption
        expect_same(label, "qemu-img check of qemu's and qimg's image", run(["qemu-img", "check", q_img]).returncode,
                    qc.returncode)
    run([qimg, "check", "-r", "all", i_img])
    final = run(["qemu-img", "check", i_img])
    if final.returncode != 0 or Image(i_img).corrupt():
        FAILURES.append(f"{label}: after qimg check -r all: qemu-img check rc={final.returncode} corrupt bit "
                        f"{Image(i_img).corrupt()}\n{final.stdout}{final.stderr}")


def case(qimg, d, label, base, poke, structure, level=None, luks=False, cmd="write -P 0x55 0 4k",
         read_cmd="read 600M 4k", qemu_differs=False, same_check=True):
    """poke(Image) damages the image and returns the structure's (offset, length) to watch."""
    src = os.path.join(d, f"{label}.src.qcow2")
    shutil.copyfile(base, src)
    watch_off, watch_len = poke(Image(src))
    q_img, i_img = os.path.join(d, f"{label}.qemu.qcow2"), os.path.join(d, f"{label}.qimg.qcow2")
    shutil.copyfile(src, q_img)
    shutil.copyfile(src, i_img)
    before = Image(src).read(watch_off, watch_len)
    q = run(tool_argv("qemu", level, q_img, luks, cmd))
    i = run(tool_argv(qimg, level, i_img, luks, cmd))
    q_refused = "Marking image as corrupt" in q.stdout + q.stderr
    i_refused = i.returncode != 0 and "Marking image as corrupt" in i.stderr
    if qemu_differs:  # qimg protects what QEMU does not
        if not i_refused or Image(i_img).read(watch_off, watch_len) != before or not Image(i_img).corrupt():
            FAILURES.append(f"{label}: qimg did not protect the {structure}: rc={i.returncode} {i.stderr}")
        elif q_refused:
            FAILURES.append(f"{label}: qemu-io now refuses too; drop the documented difference: {q.stderr}")
        else:
            print(f"ok   {label}: qimg refuses (qemu-io has no check for the {structure})")
        return
    ok = expect_same(label, "write refused", q_refused, i_refused)
    if i_refused:
        needle = f"Preventing invalid write on metadata (overlaps with {structure}"
        for who, text in (("qemu-io", q.stdout + q.stderr), ("qimg", i.stderr)):
            if needle not in text:
                ok = False
                FAILURES.append(f"{label}: {who} message does not name the {structure}: {text.strip()}")
        if i.stderr.count("\n") != 1 or not i.stderr.startswith("qimg: "):
            ok = False
            FAILURES.append(f"{label}: qimg's error is not one 'qimg:' line: {i.stderr!r}")
    ok &= expect_same(label, "corrupt bit", Image(q_img).corrupt(), Image(i_img).corrupt())
    ok &= expect_same(label, f"{structure} intact", Image(q_img).read(watch_off, watch_len) == before,
                      Image(i_img).read(watch_off, watch_len) == before)
    if ok:
        print(f"ok   {label}: {'refused' if i_refused else 'written'} by both ({structure}, level {level or 'default'})")
    after_checks(qimg, label, q_img, i_img, i_refused, read_cmd, same_check)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    require_tools("qemu-img", "qemu-io")
    with tempfile.TemporaryDirectory(prefix="qimg-overlap-") as d:
        plain = make_base(d, "plain.qcow2")
        ext = make_base(d, "ext.qcow2", "extended_l2=on")
        snap = make_base(d, "snap.qcow2", snapshot=True)
        bmap = make_base(d, "bitmap.qcow2", bitmap=True)
        cs = Image(plain).cluster_size

        def at(offset_fn, length_fn=lambda img: cs, guest_cluster=0):
            def poke(img):
                off = offset_fn(img)
                img.point_cluster_at(guest_cluster, off)
                return off, length_fn(img)
            return poke

        def refcount_zero(offset_fn, length_fn=lambda img: cs):
            def poke(img):
                off = offset_fn(img)
                img.zero_refcount(off)
                return off, length_fn(img)
            return poke

        l1 = lambda img: img.l1_offset
        reftable = lambda img: img.reftable_offset
        # The L2 table that maps 600M (the data written there): not the one of guest cluster 0.
        second_l2 = lambda img: img.l2_table(img.l1_offset, ((600 << 20) >> img.cluster_bits) //
                                             (img.cluster_size // (16 if img.extended_l2 else 8)))
        for base, tag in ((plain, "std"), (ext, "ext")):
            case(qimg, d, f"active-l1-{tag}", base, at(l1), "active L1 table")
            case(qimg, d, f"reftable-{tag}", base, at(reftable), "refcount table")
            case(qimg, d, f"refblock-{tag}", base, at(lambda img: img.refblock()), "refcount block")
            case(qimg, d, f"active-l2-{tag}", base, at(second_l2), "active L2 table")
        # Allocating writes that would pick a metadata cluster whose refcount is 0.
        alloc = "write -P 0x55 300M 4k"
        case(qimg, d, "alloc-header", plain, refcount_zero(lambda img: 0), "qcow2_header", cmd=alloc)
        case(qimg, d, "alloc-l1", plain, refcount_zero(l1), "active L1 table", cmd=alloc)
        case(qimg, d, "alloc-l2", plain, refcount_zero(second_l2), "active L2 table", cmd=alloc)
        case(qimg, d, "alloc-reftable", plain, refcount_zero(reftable), "refcount table", cmd=alloc)
        # Snapshot structures.
        case(qimg, d, "snapshot-table", snap, at(lambda img: img.snapshots_offset), "snapshot table")
        case(qimg, d, "inactive-l1", snap, at(lambda img: img.snapshot_l1()), "inactive L1 table")
        inactive_l2 = lambda img: img.l2_table(img.snapshot_l1(), 0)
        case(qimg, d, "inactive-l2-all", snap, at(inactive_l2), "inactive L2 table", level="all")
        case(qimg, d, "inactive-l2-cached", snap, at(inactive_l2), "inactive L2 table", level="cached")
        # qimg's writable open clears the autoclear bit of the bitmaps it does not maintain (as
        # the spec asks of such a program), so qemu-img check stops counting them on qimg's copy.
        case(qimg, d, "bitmap-directory", bmap, at(lambda img: img.bitmap_directory()), "bitmap directory",
             same_check=False)
        # Levels: none writes anywhere; constant does not cover the L2 tables and refcount blocks.
        case(qimg, d, "level-none-l1", plain, at(l1), "active L1 table", level="none")
        case(qimg, d, "level-constant-l1", plain, at(l1), "active L1 table", level="constant")
        case(qimg, d, "level-constant-l2", plain, at(second_l2), "active L2 table", level="constant")
        case(qimg, d, "level-constant-refblock", plain, at(lambda img: img.refblock()), "refcount block",
             level="constant")
        case(qimg, d, "level-all-reftable", ext, at(reftable), "refcount table", level="all")
        # The encryption header: qimg only.
        luks = make_base(d, "luks.qcow2", luks=True)
        case(qimg, d, "luks-header", luks, at(lambda img: img.luks_header()), "encryption header", luks=True,
             qemu_differs=True)
    if FAILURES:
        print("\n".join(f"FAIL {f}" for f in FAILURES))
        sys.exit(1)
    print("all overlap cases agree with qemu-io")


if __name__ == "__main__":
    main()
