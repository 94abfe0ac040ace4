"""Running qimg and qemu-img side by side on the same arguments (for the
measure and compare tests): same exit status, same stdout, same stderr once
each line's program prefix is dropped and the lines are joined (qimg prints
some of qemu-img's two-line errors on one line, and leaves out qemu-img's
"Try 'qemu-img --help'" hint after usage errors).

Cases run on a small thread pool: most of the time is process start-up."""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

TIMEOUT = 120


def run(argv, cwd=None, input=None):
    # qimgtest.run: a sanitizer report fails the test even where the command should fail.
    return qimgtest.run(argv, cwd=cwd, input=input, text=True, timeout=TIMEOUT)


# qemu's LUKS code times PBKDF2 with CPU-time samples and gives up on a busy
# machine; that is a qemu flake to retry, not an answer to compare.
QEMU_PBKDF_FLAKE = "Unable to get accurate CPU usage"


def must(argv, cwd=None, input=None):
    r = run(argv, cwd=cwd, input=input)
    for _ in range(3):
        if QEMU_PBKDF_FLAKE not in r.stderr:
            break
        r = run(argv, cwd=cwd, input=input)
    if r.returncode != 0:
        raise SystemExit(f"setup command failed ({r.returncode}): {' '.join(argv)}\n{r.stderr}")
    return r


def qemu_io(cwd, img, cmds, fmt="qcow2"):
    """qemu-io commands from stdin (cheap for long lists)."""
    must(["qemu-io", "-f", fmt, img], cwd=cwd, input="\n".join(cmds) + "\n")


def require_qemu_tools():
    """A missing qemu-img fails the test: without it nothing is compared."""
    missing = [t for t in ("qemu-img", "qemu-io") if shutil.which(t) is None]
    if missing:
        raise SystemExit(f"FAIL: {', '.join(missing)} not found (install qemu-utils); nothing can be compared")


def qimg_from_args() -> str:
    """The test's one argument, --qimg PATH (made absolute), once QEMU's tools are known present."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    require_qemu_tools()
    return qimg


def normalize_stderr(text: str, program: str) -> str:
    lines = []
    for line in text.splitlines():
        if line.startswith("Try '") and line.endswith("--help' for more information"):
            continue
        if line.startswith(program + ": "):
            line = line[len(program) + 2:]
        lines.append(line.strip())
    return " ".join(l for l in lines if l)


class Differ:
    """Collects cases, runs each under both programs, and records differences."""

    def __init__(self, qimg: str, cwd: str, workers: int = 4):
        self.qimg = qimg
        self.cwd = cwd
        self.workers = workers
        self.cases: list[tuple[str, list[str], list[str]]] = []
        self.failures: list[str] = []
        self.passed = 0

    def add(self, label: str, command: str, args: list[str]):
        self.cases.append((label, ["qemu-img", command, *args], [self.qimg, command, *args]))

    def add_status(self, label: str, command: str, args: list[str]):
        """A case where only the exit status must match, and a failure is one line on stderr."""
        self.cases.append((label + " [status]", ["qemu-img", command, *args], [self.qimg, command, *args]))

    def _one(self, case):
        label, qemu_argv, qimg_argv = case
        a = run(qemu_argv, cwd=self.cwd)
        for _ in range(3):
            if QEMU_PBKDF_FLAKE not in a.stderr:
                break
            a = run(qemu_argv, cwd=self.cwd)
        b = run(qimg_argv, cwd=self.cwd)
        problems = []
        if a.returncode != b.returncode:
            problems.append(f"exit {b.returncode}, qemu-img {a.returncode}")
        if label.endswith(" [status]"):
            if b.returncode and len(b.stderr.strip().splitlines()) != 1:
                problems.append(f"stderr is not one line: {b.stderr!r}")
        elif a.stdout != b.stdout:
            problems.append(f"stdout\n    qimg:     {b.stdout!r}\n    qemu-img: {a.stdout!r}")
        ea, eb = normalize_stderr(a.stderr, "qemu-img"), normalize_stderr(b.stderr, "qimg")
        if ea != eb and not label.endswith(" [status]"):
            problems.append(f"stderr\n    qimg:     {eb!r}\n    qemu-img: {ea!r}")
        for marker in ("AddressSanitizer", "runtime error", "LeakSanitizer", "terminate called"):
            if marker in b.stderr:
                problems.append(f"qimg stderr contains {marker!r}")
        return label, qimg_argv, problems

    def run_all(self):
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            for label, argv, problems in pool.map(self._one, self.cases):
                if problems:
                    self.failures.append(f"{label}: {' '.join(argv[1:])}: " + "; ".join(problems))
                else:
                    self.passed += 1
        self.cases = []

    def report(self, what: str) -> int:
        for f in self.failures:
            print("FAIL " + f)
        print(f"{self.passed} {what} cases identical to qemu-img, {len(self.failures)} different")
        return 1 if self.failures else 0


def run_test(what: str, add_cases, workers: int = 4) -> int:
    """The whole of a test script: `--qimg PATH`, a temp directory (removed at
    the end), add_cases(differ, directory) to make images and add cases, then
    every case under both programs. Returns the exit status."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    require_qemu_tools()
    with tempfile.TemporaryDirectory(prefix="qimg-" + what.replace(" ", "-") + "-") as dir_:
        d = Differ(qimg, dir_, workers)
        add_cases(d, dir_)
        total = len(d.cases)
        d.run_all()
        print(f"{total} {what} cases")
        return d.report(what)
