#!/usr/bin/env python3
"""CLI conventions of qimg (SPEC section 3).

- usage errors (unknown option, unknown subcommand, missing file, missing
  arguments, bad size, bad -o key or value) exit 1 with exactly one stderr
  line starting with "qimg: ", and create nothing;
- `--help` works for the top level and every subcommand (exit 0, usage on stdout);
- `qimg --version` prints the project version from CMakeLists.txt.

Usage: test_cli.py --qimg PATH
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

SUBCOMMANDS = ("create", "info", "io", "convert", "map", "measure", "compare", "rebase", "commit")
HERE = os.path.dirname(os.path.abspath(__file__))
TIMEOUT = 20


def run(argv, cwd):
    try:
        return qimgtest.run_killable(argv, cwd=cwd, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        return None, "", f"timed out after {TIMEOUT}s"


def project_version() -> str | None:
    path = os.path.join(HERE, "..", "..", "CMakeLists.txt")
    try:
        m = re.search(r"project\(\s*qimg\s+VERSION\s+([0-9.]+)", open(path).read())
    except OSError:
        return None
    return m.group(1) if m else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    a = ap.parse_args()
    q = os.path.abspath(a.qimg)
    work = tempfile.mkdtemp(prefix="qimg-cli-")
    problems: list[str] = []

    # A valid image for commands that need one.
    rc, out, err = run([q, "create", "-f", "qcow2", "ok.qcow2", "1M"], work)
    if rc != 0:
        problems.append(f"setup: `qimg create -f qcow2 ok.qcow2 1M` failed (rc={rc}): {err.strip()}")

    def usage_error(name, argv, must_not_exist=None):
        rc, out, err = run([q, *argv], work)
        lines = err.splitlines()
        bad = []
        if rc != 1:
            bad.append(f"exit status {rc}, want 1")
        if len(lines) != 1 or not lines[0].startswith("qimg: "):
            bad.append(f"stderr must be exactly one line starting with 'qimg: ', got {lines!r}")
        for marker in ("AddressSanitizer", "runtime error", "terminate called"):
            if marker in err:
                bad.append(f"stderr contains {marker!r}")
        if must_not_exist and os.path.exists(os.path.join(work, must_not_exist)):
            bad.append(f"{must_not_exist} was created although the command failed")
        status = "ok" if not bad else "PROBLEM"
        print(f"[{status}] {name}: qimg {' '.join(argv)} -> rc={rc} stderr={err.strip()[:200]!r}")
        if bad:
            problems.append(f"{name}: `qimg {' '.join(argv)}`: " + "; ".join(bad))

    usage_error("unknown option", ["info", "--no-such-option", "ok.qcow2"])
    usage_error("unknown option (create)", ["create", "-f", "qcow2", "--bogus", "x1.qcow2", "1M"],
                "x1.qcow2")
    usage_error("unknown subcommand", ["frobnicate", "ok.qcow2"])
    usage_error("no subcommand", [])
    usage_error("missing file (info)", ["info", "does-not-exist.qcow2"])
    usage_error("missing file (map)", ["map", "--output=json", "does-not-exist.qcow2"])
    usage_error("missing file (convert)", ["convert", "-O", "raw", "does-not-exist.qcow2", "o.raw"],
                "o.raw")
    usage_error("missing file (io)", ["io", "-c", "read 0 512", "does-not-exist.qcow2"])
    usage_error("missing file (measure)", ["measure", "-O", "qcow2", "does-not-exist.qcow2"])
    usage_error("missing filename (create)", ["create", "-f", "qcow2"])
    usage_error("missing filenames (compare)", ["compare", "ok.qcow2"])
    usage_error("neither --size nor file (measure)", ["measure", "-O", "qcow2"])
    usage_error("bad size (measure)", ["measure", "--size", "12Q"])
    usage_error("bad size 12Q", ["create", "-f", "qcow2", "x2.qcow2", "12Q"], "x2.qcow2")
    usage_error("bad size -1", ["create", "-f", "qcow2", "x3.qcow2", "-1"], "x3.qcow2")
    usage_error("bad -o key", ["create", "-f", "qcow2", "-o", "no_such_key=1", "x4.qcow2", "1M"],
                "x4.qcow2")
    usage_error("bad -o value", ["create", "-f", "qcow2", "-o", "cluster_size=3000", "x5.qcow2", "1M"],
                "x5.qcow2")
    usage_error("bad -o value (compat)", ["create", "-f", "qcow2", "-o", "compat=2.0", "x6.qcow2",
                                          "1M"], "x6.qcow2")
    usage_error("bad format", ["create", "-f", "vmdk9", "x7.img", "1M"], "x7.img")
    usage_error("bad --output", ["info", "--output=xml", "ok.qcow2"])
    usage_error("bad io command", ["io", "-c", "frobnicate 0 512", "ok.qcow2"])

    # --help: top level and each subcommand
    for argv in (["--help"], *[[c, "--help"] for c in SUBCOMMANDS]):
        rc, out, err = run([q, *argv], work)
        bad = []
        if rc != 0:
            bad.append(f"exit status {rc}")
        if not out.strip():
            bad.append("nothing on stdout")
        if len(argv) == 2 and argv[0] not in out:
            bad.append(f"help text does not mention {argv[0]!r}")
        if len(argv) == 1:
            missing = [c for c in SUBCOMMANDS if c not in out]
            if missing:
                bad.append(f"top-level help does not list {missing}")
        print(f"[{'ok' if not bad else 'PROBLEM'}] qimg {' '.join(argv)} -> rc={rc}")
        if bad:
            problems.append(f"`qimg {' '.join(argv)}`: " + "; ".join(bad))

    # --version
    rc, out, err = run([q, "--version"], work)
    want = project_version()
    bad = []
    if rc != 0:
        bad.append(f"exit status {rc}")
    if not want:
        bad.append("no project(qimg VERSION ...) in CMakeLists.txt to compare with")
    elif want not in out:
        bad.append(f"output {out.strip()!r} does not contain the project version {want}")
    if "qimg" not in out:
        bad.append(f"output {out.strip()!r} does not name qimg")
    print(f"[{'ok' if not bad else 'PROBLEM'}] qimg --version -> rc={rc} {out.strip()!r}")
    if bad:
        problems.append("`qimg --version`: " + "; ".join(bad))

    if qimgtest.report(problems, "\nall CLI checks passed", "problem(s)"):
        print(f"kept work directory: {work}")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
