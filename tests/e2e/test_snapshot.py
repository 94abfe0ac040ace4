#!/usr/bin/env python3
"""qimg snapshot against qemu-img snapshot.

Lockstep runs: each configuration's image is copied twice; the same sequence of
snapshot commands (create, duplicate names, list, apply by name and by id, apply
across a resize, delete, missing snapshots, over-long names) and guest writes
(qemu-io) runs on one copy with qemu-img and on the other with qimg. After every
step: the same exit status, stdout (-l listings with the dates blanked: the two
copies' snapshots were made at different instants) and stderr; `qemu-img check`
clean on qimg's copy; the same snapshot list (ids, names, sizes), and the active
image and every snapshot reading the same (qemu-img compare, convert -l).

Configurations: 64 KiB and 2 MiB clusters with standard and extended L2 entries,
512-byte clusters, compat=0.10, 16-bit and 2-bit refcounts, a backing chain (the
overlay with extended L2). Data, compressed and zero clusters, partial clusters.

Interop: qemu-img applies and deletes the snapshots qimg made (check clean,
contents kept), and qimg applies and deletes the ones qemu-img made (compared
with qemu-img doing the same on a third copy).

Errors, compared with qemu-img: mixed actions, argument counts, -U with a
change, a missing file, raw images, a refcount width too small for a snapshot
(refcount_bits=1), a read-only file (as user nobody), an image another process
holds (exit status and one line naming the lock)."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile

from qemu_diff import must, normalize_stderr, qemu_io, require_qemu_tools, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

MIB = 1 << 20
SIZE = 8 * MIB
DATE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")
# qemu-img warns about probed raw images; qimg does not.
RAW_PROBE = ("WARNING: Image format was not specified", "Automatically detecting the format",
             "Specify the 'raw' format explicitly")

CONFIGS = {
    "std-64k": "cluster_size=64k",
    "std-2m": "cluster_size=2M",
    "ext-64k": "extended_l2=on,cluster_size=64k",
    "ext-2m": "extended_l2=on,cluster_size=2M",
    "c512": "cluster_size=512",
    "v2": "compat=0.10",
    "refcount-2": "refcount_bits=2",
    "chain": "extended_l2=on,cluster_size=32k",  # over a backing file
}
# Compressed writes cover whole 2 MiB clusters (QEMU compresses whole clusters that hold nothing yet).
FULL = ("std-64k", "ext-64k")  # the configurations that also run the lookup and name cases
WORKLOAD = ["write -P 0x11 0 1M", "write -c -P 0x12 2M 2M", "write -z 1536k 128k", "write -P 0x13 2M 5000",
            "write -P 0x14 5M 64k"]


def stderr_of(text: str, program: str) -> str:
    return normalize_stderr("\n".join(l for l in text.splitlines() if not l.strip().startswith(RAW_PROBE)), program)


class Case:
    """One configuration in lockstep: `qemu.qcow2` changed by qemu-img, `qimg.qcow2` by qimg."""

    def __init__(self, qimg: str, dir_: str, name: str, opts: str):
        self.qimg, self.dir, self.name, self.opts = qimg, dir_, name, opts
        self.failures: list[str] = []
        self.steps = 0
        self.qemu = os.path.join(dir_, "qemu.qcow2")
        self.mine = os.path.join(dir_, "qimg.qcow2")

    def fail(self, what: str):
        self.failures.append(f"{self.name}: {what}")

    def prepare(self):
        args = ["-o", self.opts]
        if self.name == "chain":
            must(["qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", "base.qcow2", str(SIZE)], cwd=self.dir)
            qemu_io(self.dir, "base.qcow2", ["write -P 0x21 0 8M"])
            args += ["-b", "base.qcow2", "-F", "qcow2"]
        must(["qemu-img", "create", "-f", "qcow2", *args, self.qemu, str(SIZE)], cwd=self.dir)
        qemu_io(self.dir, self.qemu, WORKLOAD)
        shutil.copy(self.qemu, self.mine)

    def write(self, *cmds: str):
        for img in (self.qemu, self.mine):
            qemu_io(self.dir, img, list(cmds))

    def both(self, *args: str, image=None):
        """The same command on both copies (the image replaces "IMG" in args, or comes
        last); compares what they print."""
        self.steps += 1
        label = " ".join(args)
        def argv(img):
            return [img if a == "IMG" else a for a in args] + ([] if "IMG" in args else [img])
        a = run(["qemu-img", *argv(image or self.qemu)], cwd=self.dir)
        b = run([self.qimg, *argv(image or self.mine)], cwd=self.dir)
        if a.returncode != b.returncode:
            self.fail(f"{label}: exit {b.returncode}, qemu-img {a.returncode} ({b.stderr.strip()!r} / {a.stderr.strip()!r})")
        if DATE.sub("DATE", a.stdout) != DATE.sub("DATE", b.stdout):
            self.fail(f"{label}: stdout\n    qimg:     {b.stdout!r}\n    qemu-img: {a.stdout!r}")
        ea = stderr_of(a.stderr, "qemu-img").replace(self.qemu, "IMG")
        eb = stderr_of(b.stderr, "qimg").replace(self.mine, "IMG")
        if ea != eb:
            self.fail(f"{label}: stderr\n    qimg:     {eb!r}\n    qemu-img: {ea!r}")
        if a.returncode == 0 and image is None and "-l" not in args:
            # A new snapshot is compared once; all of them at the end (scenario).
            self.compare_state(label, new_snapshot="-c" in args)
        return a.returncode

    def snapshots(self, img: str) -> list[tuple[str, str, int]]:
        """(id, name, vm state size) of each snapshot, as qemu-img reads them."""
        info = json.loads(must(["qemu-img", "info", "-U", "--output=json", img], cwd=self.dir).stdout)
        return [(s["id"], s["name"], s["vm-state-size"]) for s in info.get("snapshots", [])]

    def compare_state(self, label: str, new_snapshot=False, all_snapshots=False):
        c = run(["qemu-img", "check", self.mine], cwd=self.dir)
        if c.returncode != 0:
            self.fail(f"after {label}: qemu-img check exit {c.returncode}: {c.stdout.strip()} {c.stderr.strip()}")
        sa, sb = self.snapshots(self.qemu), self.snapshots(self.mine)
        if sa != sb:
            self.fail(f"after {label}: snapshots {sb} (qemu-img: {sa})")
        r = run(["qemu-img", "compare", "-U", self.qemu, self.mine], cwd=self.dir)
        if r.returncode != 0:
            self.fail(f"after {label}: active images differ: {r.stdout.strip()} {r.stderr.strip()}")
        compared = sa if all_snapshots else sa[-1:] if new_snapshot else []
        for id_, name, _ in compared if sa == sb else []:
            outs = []
            for img, tag in ((self.qemu, "a"), (self.mine, "b")):
                out = os.path.join(self.dir, f"snap-{tag}.raw")
                must(["qemu-img", "convert", "-U", "-l", f"snapshot.id={id_}", "-O", "raw", img, out], cwd=self.dir)
                outs.append(out)
            if run(["cmp", "-s", *outs], cwd=self.dir).returncode != 0:
                self.fail(f"after {label}: snapshot {id_} {name[:20]!r} reads differently")

    def scenario(self):
        self.prepare()
        both = self.both
        both("snapshot", "-l")
        both("snapshot", "-c", "first")
        self.write("write -P 0x31 64k 100k", "write -P 0x32 1M 4k", "write -z 2M 64k")
        both("snapshot", "-c", "second")
        both("snapshot", "-c", "first")  # names need not be unique
        self.write("discard 0 512k", "write -c -P 0x33 6M 2M")
        both("snapshot", "-l")
        both("snapshot", "-a", "first")  # by name: the first one
        self.write("write -P 0x34 4k 4k")
        both("snapshot", "-a", "3")  # by id
        both("snapshot", "-d", "second")
        if self.name in FULL:  # lookups and names: the same code whatever the layout
            both("snapshot", "-a", "nope")
            both("snapshot", "-d", "2")  # -d takes names only
            both("snapshot", "-d", "nope")
            both("snapshot", "-c", "x" * 300)  # qemu-img keeps 255 bytes of it
            both("snapshot", "-d", "x" * 255)
            both("snapshot", "-c", "")
            both("snapshot", "-d", "")
        both("snapshot", "-c", "4")
        both("snapshot", "-a", "4")  # id 4 first, not the snapshot named 4
        if self.opts != "compat=0.10":  # v2 images with snapshots cannot be resized
            both("resize", "IMG", "10M")
            self.write("write -P 0x35 9M 64k")
            both("snapshot", "-c", "big")
            both("snapshot", "-a", "first")  # back to 8 MiB
            both("snapshot", "-a", "big")
        else:
            both("resize", "IMG", "10M")
        both("snapshot", "-d", "first")
        both("snapshot", "-l")
        both("snapshot")  # no action: nothing happens
        self.compare_state("the whole scenario", all_snapshots=True)
        self.interop()

    def interop(self):
        """qemu-img on qimg's snapshots, qimg on qemu-img's."""
        ids = [i for i, _, _ in self.snapshots(self.mine)]
        for id_ in ids:
            probe = os.path.join(self.dir, "probe.qcow2")
            shutil.copy(self.mine, probe)
            must(["qemu-img", "snapshot", "-a", id_, probe], cwd=self.dir)
            self.check_clean(probe, f"qemu-img -a {id_} on qimg's snapshots")
            self.same_as_snapshot(probe, self.mine, id_, "qemu-img -a of a qimg snapshot")
        for _, name, _ in self.snapshots(self.mine):
            must(["qemu-img", "snapshot", "-d", name, self.mine], cwd=self.dir)
            self.check_clean(self.mine, f"qemu-img -d {name[:20]} of a qimg snapshot")
        # qimg on qemu-img's snapshots, against qemu-img doing the same on a copy.
        theirs = os.path.join(self.dir, "theirs.qcow2")
        for id_ in [i for i, _, _ in self.snapshots(self.qemu)]:
            shutil.copy(self.qemu, theirs)
            r = run([self.qimg, "snapshot", "-a", id_, theirs], cwd=self.dir)
            if r.returncode != 0:
                self.fail(f"qimg -a {id_} of a qemu-img snapshot: {r.stderr.strip()}")
            self.check_clean(theirs, f"qimg -a {id_} of a qemu-img snapshot")
            self.same_as_snapshot(theirs, self.qemu, id_, "qimg -a of a qemu-img snapshot")
        for name in [n for _, n, _ in self.snapshots(self.qemu)]:
            shutil.copy(self.qemu, theirs)
            r = run([self.qimg, "snapshot", "-d", name, theirs], cwd=self.dir)
            must(["qemu-img", "snapshot", "-d", name, self.qemu], cwd=self.dir)
            if r.returncode != 0:
                self.fail(f"qimg -d {name} of a qemu-img snapshot: {r.stderr.strip()}")
            self.check_clean(theirs, f"qimg -d {name} of a qemu-img snapshot")
            if self.snapshots(theirs) != self.snapshots(self.qemu):
                self.fail(f"qimg -d {name}: snapshots {self.snapshots(theirs)}, qemu-img {self.snapshots(self.qemu)}")
            if run(["qemu-img", "compare", "-U", theirs, self.qemu], cwd=self.dir).returncode != 0:
                self.fail(f"qimg -d {name} of a qemu-img snapshot changed the active image")

    def check_clean(self, img: str, what: str):
        c = run(["qemu-img", "check", img], cwd=self.dir)
        if c.returncode != 0:
            self.fail(f"{what}: qemu-img check exit {c.returncode}: {c.stdout.strip()} {c.stderr.strip()}")

    def same_as_snapshot(self, active: str, img: str, id_: str, what: str):
        a, b = os.path.join(self.dir, "active.raw"), os.path.join(self.dir, "snap.raw")
        must(["qemu-img", "convert", "-U", "-O", "raw", active, a], cwd=self.dir)
        must(["qemu-img", "convert", "-U", "-l", f"snapshot.id={id_}", "-O", "raw", img, b], cwd=self.dir)
        # qemu-img convert -l reads a snapshot at the current virtual size: compare, not cmp.
        if run(["qemu-img", "compare", "-f", "raw", "-F", "raw", a, b], cwd=self.dir).returncode != 0:
            self.fail(f"{what}: the active image does not read as snapshot {id_}")


def run_config(qimg: str, root: str, name: str, opts: str) -> tuple[int, list[str]]:
    dir_ = os.path.join(root, name)
    os.mkdir(dir_)
    c = Case(qimg, dir_, name, opts)
    c.scenario()
    return c.steps, c.failures


def error_cases(qimg: str, root: str) -> tuple[int, list[str]]:
    dir_ = os.path.join(root, "errors")
    os.mkdir(dir_)
    c = Case(qimg, dir_, "errors", "cluster_size=64k")
    c.prepare()
    both = c.both
    both("snapshot", "-l", "-c", "x")
    both("snapshot", "-c", "x", "-c", "y")
    both("snapshot", "-l", "-l")
    both("snapshot", "-U", "-c", "x")
    both("snapshot", "-U", "-d", "x")
    both("snapshot", "-U", "-l")
    both("snapshot", "-q", "-c", "quiet")
    both("snapshot", "-l", image="missing.qcow2")
    for args in (["snapshot"], ["snapshot", "-l"], ["snapshot", "-l", "a", "b"]):
        a, b = run(["qemu-img", *args], cwd=dir_), run([qimg, *args], cwd=dir_)
        if (a.returncode, stderr_of(a.stderr, "qemu-img")) != (b.returncode, stderr_of(b.stderr, "qimg")):
            c.fail(f"{' '.join(args)}: {b.returncode} {b.stderr!r}, qemu-img {a.returncode} {a.stderr!r}")
    must(["qemu-img", "create", "-f", "raw", "disk.raw", "1M"], cwd=dir_)
    for args in (["-l"], ["-c", "x"], ["-a", "x"], ["-d", "x"]):
        a, b = run(["qemu-img", "snapshot", *args, "disk.raw"], cwd=dir_), run([qimg, "snapshot", *args, "disk.raw"], cwd=dir_)
        if (a.returncode, a.stdout, stderr_of(a.stderr, "qemu-img")) != (b.returncode, b.stdout, stderr_of(b.stderr, "qimg")):
            c.fail(f"raw {' '.join(args)}: {b.returncode} {b.stderr!r}, qemu-img {a.returncode} {a.stderr!r}")
    # One-bit refcounts cannot count a second reference; neither tool leaves a corruption.
    for img in ("rb1-a.qcow2", "rb1-b.qcow2"):
        must(["qemu-img", "create", "-f", "qcow2", "-o", "refcount_bits=1", img, "1M"], cwd=dir_)
        qemu_io(dir_, img, ["write 0 64k"])
    a, b = run(["qemu-img", "snapshot", "-c", "x", "rb1-a.qcow2"], cwd=dir_), run([qimg, "snapshot", "-c", "x", "rb1-b.qcow2"], cwd=dir_)
    if (a.returncode, stderr_of(a.stderr, "qemu-img")) != (b.returncode, stderr_of(b.stderr, "qimg")):
        c.fail(f"refcount_bits=1: {b.returncode} {b.stderr!r}, qemu-img {a.returncode} {a.stderr!r}")
    c.check_clean(os.path.join(dir_, "rb1-b.qcow2"), "refcount_bits=1")
    # A read-only file, as a user who cannot write it.
    if os.geteuid() == 0 and shutil.which("setpriv"):
        ro = os.path.join(dir_, "ro.qcow2")
        shutil.copy(c.qemu, ro)
        os.chmod(ro, 0o444)
        os.chmod(dir_, 0o755)
        nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
        for args in (["-c", "x"], ["-l"], ["-d", "first"]):
            a = run([*nobody, "qemu-img", "snapshot", *args, ro], cwd=dir_)
            b = run([*nobody, qimg, "snapshot", *args, ro], cwd=dir_)
            if (a.returncode, DATE.sub("", a.stdout), stderr_of(a.stderr, "qemu-img")) != \
               (b.returncode, DATE.sub("", b.stdout), stderr_of(b.stderr, "qimg")):
                c.fail(f"read-only {' '.join(args)}: {b.returncode} {b.stderr!r}, qemu-img {a.returncode} {a.stderr!r}")
    # Another process holds the image: both refuse (qimg's lock message is one line).
    with qimgtest.held_open(c.mine, cwd=dir_):
        for args in (["-c", "x"], ["-l"], ["-a", "first"], ["-d", "first"]):
            a = run(["qemu-img", "snapshot", *args, c.mine], cwd=dir_)
            b = run([qimg, "snapshot", *args, c.mine], cwd=dir_)
            lines = b.stderr.strip().splitlines()
            if a.returncode != b.returncode or len(lines) != 1 or "lock" not in lines[0]:
                c.fail(f"locked {' '.join(args)}: {b.returncode} {b.stderr!r}, qemu-img {a.returncode} {a.stderr!r}")
        b = run([qimg, "snapshot", "-U", "-l", c.mine], cwd=dir_)
        if b.returncode != 0:
            c.fail(f"locked -U -l: {b.returncode} {b.stderr!r}")
    return c.steps + 20, c.failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    require_qemu_tools()
    qimgtest.require_tools("cmp")
    with tempfile.TemporaryDirectory(prefix="qimg-snapshot-") as root:
        os.chmod(root, 0o755)
        steps, failures = qimgtest.run_cases([(run_config, qimg, root, n, o) for n, o in CONFIGS.items()]
                                             + [(error_cases, qimg, root)])
    for f in failures:
        print("FAIL " + f)
    print(f"{len(CONFIGS)} configurations, {steps} steps compared with qemu-img, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
