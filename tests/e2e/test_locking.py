#!/usr/bin/env python3
"""Image locking against QEMU: while qemu-io holds an image open for writing, a
second writer (qimg io) and a locking reader (qimg info/map/check without -U)
fail with one clear `qimg:` line and exit 1, and readers with -U succeed. While
qemu-io holds it read-only, qimg readers work and qimg writers fail."""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

FAILURES = []


def run(argv):
    return qimgtest.run(argv, text=True, timeout=60)


def expect(argv, ok, what):
    r = run(argv)
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    if ok and r.returncode != 0:
        FAILURES.append(f"{what}: expected success, got {r.returncode}: {r.stderr.strip()}")
    elif not ok:
        if r.returncode != 1:
            FAILURES.append(f"{what}: expected exit 1, got {r.returncode}")
        elif len(lines) != 1 or not lines[0].startswith("qimg: ") or "lock" not in lines[0]:
            FAILURES.append(f"{what}: expected one 'qimg: ... lock ...' line, got {r.stderr!r}")
    print(("ok   " if not FAILURES or not FAILURES[-1].startswith(what) else "FAIL ") + what)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    q = os.path.abspath(ap.parse_args().qimg)
    qimgtest.require_tools("qemu-img", "qemu-io")
    with tempfile.TemporaryDirectory(prefix="qimg-lock-") as d:
        img = os.path.join(d, "img.qcow2")
        r = run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"])
        if r.returncode != 0:
            print(f"FAIL setup: qemu-img create exited {r.returncode}: {r.stderr.strip()}")
            return 1
        with qimgtest.held_open(img):
            expect([q, "io", "-c", "write 0 4k", img], False, "second writer while qemu-io writes")
            expect([q, "info", img], False, "locking reader (info) while qemu-io writes")
            expect([q, "map", img], False, "locking reader (map) while qemu-io writes")
            expect([q, "info", "-U", img], True, "info -U while qemu-io writes")
            expect([q, "map", "-U", "--output=json", img], True, "map -U while qemu-io writes")
            expect([q, "io", "-U", "-r", "-c", "read 0 4k", img], True, "io -U -r while qemu-io writes")
        with qimgtest.held_open(img, readonly=True):
            expect([q, "info", img], True, "reader while qemu-io reads")
            expect([q, "io", "-c", "write 0 4k", img], False, "writer while qemu-io reads")
        expect([q, "io", "-c", "write 0 4k", img], True, "writer after qemu-io exited")
    if FAILURES:
        print("\n".join("FAIL " + f for f in FAILURES))
        return 1
    print("all locking checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
