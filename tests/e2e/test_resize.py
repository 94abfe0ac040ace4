#!/usr/bin/env python3
"""qimg resize against qemu-img resize.

Lockstep runs: each configuration's image is copied twice and the same resizes
run on one copy with qemu-img and on the other with qimg: growing (absolute and
+relative, to sizes inside a cluster), shrinking with --shrink (-relative, to an
end inside a cluster, then growing again so the kept tail of the last cluster
shows, as in QEMU), --preallocation=metadata|falloc|full, -q, and the refusals
(shrinking without --shrink, sizes not a multiple of 512, zero and negative
sizes, preallocation when not growing, bad modes and sizes, compat=0.10 with
snapshots, growth of compat=0.10 over a longer backing file). After every step:
the same exit status, stdout and stderr; `qemu-img check` clean on qimg's copy;
the same virtual size, guest content (qemu-img compare) and allocation
(qemu-img map without host offsets); internal snapshots unchanged.

Configurations: 64 KiB and 2 MiB clusters with standard and extended L2 entries,
512-byte clusters, compat=0.10, an internal snapshot, overlays over a longer
backing file (standard and extended L2), raw files (probed and -f raw).

Also: growing an image whose clusters past its end survived a shrink cut short
by a crash (the header's size edited down) reads zeros there; errors for a
missing file, an unknown format, argument counts, and a locked image."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile

from qemu_diff import must, normalize_stderr, qemu_io, require_qemu_tools, run

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

MIB = 1 << 20
RAW_PROBE = ("WARNING: Image format was not specified", "Automatically detecting the format",
             "Specify the 'raw' format explicitly")
WORKLOAD = ["write -P 0x11 0 1M", "write -c -P 0x12 2M 2M", "write -z 1536k 128k", "write -P 0x13 2M 5000",
            "write -P 0x14 5M 64k", "write -P 0x15 7M 1M"]

# name: (create options, image format, with a backing file, with a snapshot)
CONFIGS = {
    "std-64k": ("cluster_size=64k", "qcow2", False, False),
    "std-2m": ("cluster_size=2M", "qcow2", False, False),
    "ext-64k": ("extended_l2=on,cluster_size=64k", "qcow2", False, False),
    "ext-2m": ("extended_l2=on,cluster_size=2M", "qcow2", False, False),
    "c512": ("cluster_size=512", "qcow2", False, False),
    "v2": ("compat=0.10", "qcow2", False, False),
    "snapshot": ("cluster_size=64k", "qcow2", False, True),
    "v2-snapshot": ("compat=0.10", "qcow2", False, True),
    "backing-std": ("cluster_size=64k", "qcow2", True, False),
    "backing-ext": ("extended_l2=on,cluster_size=64k", "qcow2", True, False),
    "v2-backing": ("compat=0.10", "qcow2", True, False),
    "raw": ("", "raw", False, False),
}


def stderr_of(text: str, program: str) -> str:
    return normalize_stderr("\n".join(l for l in text.splitlines() if not l.strip().startswith(RAW_PROBE)), program)


def allocation(img: str, fmt: str, cwd: str):
    """qemu-img map without host offsets, adjacent runs of the same kind merged. Whether
    data "reads as zeros" is left out: QEMU decides it from holes in the host file
    (qcow2_detect_metadata_preallocation), which differ between two writers' files."""
    runs = []
    for e in json.loads(must(["qemu-img", "map", "-U", "-f", fmt, "--output=json", img], cwd=cwd).stdout):
        key = (e["depth"], e["present"], e["data"], e["zero"] and not e["data"])
        if runs and runs[-1][0] == key and runs[-1][1] + runs[-1][2] == e["start"]:
            runs[-1][2] += e["length"]
        else:
            runs.append([key, e["start"], e["length"]])
    return runs


class Case:
    def __init__(self, qimg: str, dir_: str, name: str, config):
        self.qimg, self.dir, self.name = qimg, dir_, name
        self.opts, self.fmt, self.backing, self.snapshot = config
        self.failures: list[str] = []
        self.steps = 0
        ext = "raw" if self.fmt == "raw" else "qcow2"
        self.qemu, self.mine = os.path.join(dir_, f"qemu.{ext}"), os.path.join(dir_, f"qimg.{ext}")

    def fail(self, what: str):
        self.failures.append(f"{self.name}: {what}")

    def prepare(self, size=8 * MIB):
        args = ["-f", self.fmt]
        if self.opts:
            args += ["-o", self.opts]
        if self.backing:
            must(["qemu-img", "create", "-f", "raw", "base.raw", str(32 * MIB)], cwd=self.dir)
            qemu_io(self.dir, "base.raw", ["write -P 0x21 0 32M"], fmt="raw")
            args += ["-b", "base.raw", "-F", "raw"]
        must(["qemu-img", "create", *args, self.qemu, str(size)], cwd=self.dir)
        qemu_io(self.dir, self.qemu, [c for c in WORKLOAD if self.fmt == "qcow2" or " -c " not in c], fmt=self.fmt)
        if self.snapshot:
            must(["qemu-img", "snapshot", "-c", "s1", self.qemu], cwd=self.dir)
            qemu_io(self.dir, self.qemu, ["write -P 0x31 6M 1M"])
        shutil.copy(self.qemu, self.mine)

    def both(self, *args: str):
        """`resize ARGS...` on both copies ("IMG" marks the image's place)."""
        self.steps += 1
        label = " ".join(args)
        def argv(img):
            return ["resize", *[img if a == "IMG" else a for a in args]]
        a = run(["qemu-img", *argv(self.qemu)], cwd=self.dir)
        b = run([self.qimg, *argv(self.mine)], cwd=self.dir)
        if a.returncode != b.returncode:
            self.fail(f"{label}: exit {b.returncode}, qemu-img {a.returncode} ({b.stderr.strip()!r} / {a.stderr.strip()!r})")
        if a.stdout != b.stdout:
            self.fail(f"{label}: stdout\n    qimg:     {b.stdout!r}\n    qemu-img: {a.stdout!r}")
        ea = stderr_of(a.stderr, "qemu-img").replace(self.qemu, "IMG")
        eb = stderr_of(b.stderr, "qimg").replace(self.mine, "IMG")
        if ea != eb:
            self.fail(f"{label}: stderr\n    qimg:     {eb!r}\n    qemu-img: {ea!r}")
        self.compare_state(label)

    def size(self, img: str) -> int:
        return json.loads(must(["qemu-img", "info", "-U", "-f", self.fmt, "--output=json", img], cwd=self.dir).stdout)["virtual-size"]

    def compare_state(self, label: str):
        if self.fmt == "qcow2":
            c = run(["qemu-img", "check", self.mine], cwd=self.dir)
            if c.returncode != 0:
                self.fail(f"after {label}: qemu-img check exit {c.returncode}: {c.stdout.strip()} {c.stderr.strip()}")
        sa, sb = self.size(self.qemu), self.size(self.mine)
        if sa != sb:
            self.fail(f"after {label}: virtual size {sb}, qemu-img {sa}")
            return
        r = run(["qemu-img", "compare", "-U", "-f", self.fmt, "-F", self.fmt, self.qemu, self.mine], cwd=self.dir)
        if r.returncode != 0:
            self.fail(f"after {label}: contents differ: {r.stdout.strip()} {r.stderr.strip()}")
        if self.fmt == "qcow2":
            ma, mb = allocation(self.qemu, "qcow2", self.dir), allocation(self.mine, "qcow2", self.dir)
            if ma != mb:
                self.fail(f"after {label}: allocation\n    qimg:     {mb}\n    qemu-img: {ma}")
        if self.snapshot:
            outs = []
            for img, tag in ((self.qemu, "a"), (self.mine, "b")):
                out = os.path.join(self.dir, f"snap-{tag}.raw")
                must(["qemu-img", "convert", "-U", "-l", "snapshot.name=s1", "-O", "raw", img, out], cwd=self.dir)
                outs.append(out)
            if run(["cmp", "-s", *outs], cwd=self.dir).returncode != 0:
                self.fail(f"after {label}: snapshot s1 reads differently")

    def scenario(self):
        self.prepare()
        both = self.both
        both("IMG", "+1M")
        both("IMG", str(12 * MIB + 512))  # inside a cluster
        both("IMG", "4M")  # refused without --shrink
        both("--shrink", "IMG", str(3 * MIB + 1536))  # inside a cluster: QEMU keeps the rest of it
        both("IMG", "6M")  # ... and shows it again
        both("--shrink", "IMG", "--", "-1M")
        both("-q", "IMG", "+64k")
        both("--preallocation=metadata", "IMG", "8M")
        both("--preallocation=falloc", "IMG", str(9 * MIB + 4096))
        both("--preallocation=full", "IMG", "11M")
        both("--preallocation=off", "IMG", "+1M")
        both("--shrink", "IMG", "2M")
        both("IMG", "+0")
        if self.name in ("std-64k", "raw"):  # the refusals: the same code whatever the layout
            both("IMG", "1000")
            both("--shrink", "IMG", "1000")
            both("IMG", "0")
            both("IMG", "--", "-5M")
            both("--shrink", "--preallocation=full", "IMG", "1M")
            both("--preallocation=full", "IMG", "+0")
            both("--preallocation=foo", "IMG", "20M")
            both("IMG", "abc")
            both("IMG", "18E")
            both("IMG", "8E")
            both("IMG", "7E")
            both("-f", "foo", "IMG", "4M")


def run_config(qimg: str, root: str, name: str) -> tuple[int, list[str]]:
    dir_ = os.path.join(root, name)
    os.mkdir(dir_)
    c = Case(qimg, dir_, name, CONFIGS[name])
    c.scenario()
    return c.steps, c.failures


def stale_tail(qimg: str, root: str) -> tuple[int, list[str]]:
    """A shrink cut short after its commit point leaves clusters mapped past the end;
    growing must not show them (qemu-img would: it never meets such an image)."""
    dir_ = os.path.join(root, "stale")
    os.mkdir(dir_)
    failures = []
    for opts in ("cluster_size=64k", "extended_l2=on,cluster_size=64k", "cluster_size=4k"):
        img = os.path.join(dir_, "img.qcow2")
        must(["qemu-img", "create", "-f", "qcow2", "-o", opts, img, "8M"], cwd=dir_)
        qemu_io(dir_, img, ["write -P 0x41 0 8M"])
        with open(img, "r+b") as f:
            f.seek(24)
            f.write(struct.pack(">Q", 3 * MIB))  # the size a shrink commits first
        r = run([qimg, "resize", img, "8M"], cwd=dir_)
        c = run(["qemu-img", "check", img], cwd=dir_)
        z = run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x41 0 3M", "-c", "read -P 0 3M 5M", img], cwd=dir_)
        if r.returncode or c.returncode or z.returncode or "Pattern verification failed" in z.stdout:
            failures.append(f"stale tail ({opts}): resize {r.returncode} {r.stderr.strip()!r}, check {c.returncode} "
                            f"{c.stdout.strip()!r}, read {z.stdout.strip()!r}")
    return 3, failures


def errors(qimg: str, root: str) -> tuple[int, list[str]]:
    dir_ = os.path.join(root, "errors")
    os.mkdir(dir_)
    failures = []
    must(["qemu-img", "create", "-f", "qcow2", "img.qcow2", "4M"], cwd=dir_)
    cases = [["resize"], ["resize", "img.qcow2"], ["resize", "img.qcow2", "1M", "2M"], ["resize", "missing.qcow2", "1M"],
             ["resize", "missing.qcow2", "abc"]]
    for args in cases:
        a, b = run(["qemu-img", *args], cwd=dir_), run([qimg, *args], cwd=dir_)
        if (a.returncode, a.stdout, stderr_of(a.stderr, "qemu-img")) != (b.returncode, b.stdout, stderr_of(b.stderr, "qimg")):
            failures.append(f"{' '.join(args)}: {b.returncode} {b.stderr!r}, qemu-img {a.returncode} {a.stderr!r}")
    with qimgtest.held_open("img.qcow2", cwd=dir_):
        a, b = run(["qemu-img", "resize", "img.qcow2", "8M"], cwd=dir_), run([qimg, "resize", "img.qcow2", "8M"], cwd=dir_)
        lines = b.stderr.strip().splitlines()
        if a.returncode != b.returncode or len(lines) != 1 or "lock" not in lines[0]:
            failures.append(f"locked: {b.returncode} {b.stderr!r}, qemu-img {a.returncode} {a.stderr!r}")
    return len(cases) + 1, failures


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    require_qemu_tools()
    with tempfile.TemporaryDirectory(prefix="qimg-resize-") as root:
        steps, failures = qimgtest.run_cases([(run_config, qimg, root, n) for n in CONFIGS]
                                             + [(stale_tail, qimg, root), (errors, qimg, root)])
    for f in failures:
        print("FAIL " + f)
    print(f"{len(CONFIGS)} configurations, {steps} resizes compared with qemu-img, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
