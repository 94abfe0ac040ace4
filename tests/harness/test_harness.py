#!/usr/bin/env python3
"""The test harness cannot pass silently.

- The run helpers of tests/support/qimgtest.py and tests/interop/common.py end the test with
  a failure when a command prints a sanitizer report or exits 66, also when it exits 1 like a
  qimg error; a plain qimg error passes through. The commands are fake qimgs (python -c).
- require_tools fails on a missing tool; skip exits 77.
- Every e2e and interop script runs its commands through those helpers (no direct
  subprocess or os.system calls besides the listed exceptions).
- --probe PATH (sanitizer build only): a deliberate ASan, LSan and UBSan finding of
  tests/harness/sanitizer_probe.cpp each exits 66 in this environment (tests/sanitizer.env,
  which ctest sets), and the helpers fail on each.

Usage: test_harness.py [--probe PATH]
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(TESTS, "support"))
sys.path.insert(0, os.path.join(TESTS, "interop"))
import common  # noqa: E402
import qimgtest  # noqa: E402

FAILURES: list[str] = []
ASAN_REPORT = ("==4242==ERROR: AddressSanitizer: heap-buffer-overflow on address 0x602000000020\n"
               "SUMMARY: AddressSanitizer: heap-buffer-overflow convert.cpp:42 in copy_run\n")
# name -> (stderr, exit status, the helpers must fail)
FAKES = {
    "ASan report, exit 1 (qimg's error exit)": (ASAN_REPORT, 1, True),
    "exit 66, nothing printed": ("", 66, True),
    "UBSan report, exit 0": ("io.cpp:7:5: runtime error: signed integer overflow\n"
                             "SUMMARY: UndefinedBehaviorSanitizer: undefined-behavior io.cpp:7:5\n", 0, True),
    "LeakSanitizer report, exit 1": ("==4242==ERROR: LeakSanitizer: detected memory leaks\n", 1, True),
    "plain qimg error, exit 1": ("qimg: Could not open 'x.qcow2': No such file or directory\n", 1, False),
}
# Scripts may run a command directly only for these reasons: (file, code) -> why.
# (qemu-io holding an image open is qimgtest.held_open.)
DIRECT_CALLS: dict[tuple[str, str], str] = {}


def check(cond: bool, what: str) -> None:
    print(f"{'ok  ' if cond else 'FAIL'} {what}", flush=True)
    if not cond:
        FAILURES.append(what)


def fake(stderr: str, rc: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; sys.stderr.write({stderr!r}); sys.exit({rc})"]


def helpers():
    """Each helper as a function of argv, returning the exit status."""
    return {
        "qimgtest.run (text)": lambda argv: qimgtest.run(argv, timeout=30, text=True).returncode,
        "qimgtest.run (bytes)": lambda argv: qimgtest.run(argv, timeout=30).returncode,
        "qimgtest.run_killable": lambda argv: qimgtest.run_killable(argv, timeout=30)[0],
        "qimgtest.run_killable (merged)": lambda argv: qimgtest.run_killable(argv, timeout=30, merge_stderr=True)[0],
        "interop common.run": lambda argv: common.run(argv, check=False, quiet=True).rc,
    }


def expect_verdict(helper: str, call, argv, must_fail: bool, rc: int, what: str) -> None:
    try:
        got = call(argv)
    except qimgtest.SanitizerReport as e:
        check(must_fail and e.code != 0 and "sanitizer report" in str(e.code), f"{helper}: {what}: fails the test")
        return
    check(not must_fail and got == rc, f"{helper}: {what}: exit {got} returned{' (MISSED)' if must_fail else ''}")


def test_helpers() -> None:
    for helper, call in helpers().items():
        for what, (stderr, rc, must_fail) in FAKES.items():
            expect_verdict(helper, call, fake(stderr, rc), must_fail, rc, what)


def test_require_and_skip() -> None:
    try:
        qimgtest.require_tools(sys.executable, "qimg-no-such-tool")
        check(False, "require_tools: a missing tool fails the test")
    except SystemExit as e:
        check(e.code == 1, f"require_tools: a missing tool fails the test (exit {e.code})")
    try:
        qimgtest.skip("(not a real skip) the harness checks that skip() exits 77")
        check(False, "skip exits 77")
    except SystemExit as e:
        check(e.code == qimgtest.SKIP == 77, f"skip exits 77 (exit {e.code})")


def test_no_direct_calls() -> None:
    pattern = re.compile(r"subprocess\.(run|Popen|call|check_call|check_output)\(|os\.(system|popen)\(")
    scripts = sorted(glob.glob(os.path.join(TESTS, "e2e", "*.py")) + glob.glob(os.path.join(TESTS, "interop", "*.py")))
    check(len(scripts) > 5, f"found the test scripts ({len(scripts)})")
    for path in scripts:
        for n, line in enumerate(open(path), 1):
            if pattern.search(line):
                why = [w for (f, code), w in DIRECT_CALLS.items() if os.path.basename(path) == f and code in line]
                where = f"{os.path.relpath(path, TESTS)}:{n}"
                check(bool(why), f"{where}: direct call allowed: {why[0]}" if why else
                      f"{where} runs a command without the helpers: {line.strip()}")


def test_probe(probe: str) -> None:
    for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        check(f"exitcode={qimgtest.SANITIZER_EXIT}" in os.environ.get(var, ""),
              f"{var}={os.environ.get(var, '')!r} sets exitcode={qimgtest.SANITIZER_EXIT}")
    for finding, marker in (("use-after-free", "ERROR: AddressSanitizer"), ("leak", "ERROR: LeakSanitizer"),
                            ("signed-overflow", "runtime error:")):
        try:
            rc, _, err = common.run_killable([probe, finding], timeout=30)
            check(False, f"probe {finding}: the helper did not fail")
        except qimgtest.SanitizerReport as e:
            report = str(e.code)
            check(f"exit status {qimgtest.SANITIZER_EXIT}" in report and marker in report,
                  f"probe {finding}: exit {qimgtest.SANITIZER_EXIT} with {marker!r}, and the helper fails"
                  + ("" if marker in report else f"\n{report}"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--probe", help="tests/harness/sanitizer_probe of a QIMG_SANITIZE build")
    a = ap.parse_args()
    if a.probe:
        test_probe(a.probe)
    else:
        test_helpers()
        test_require_and_skip()
        test_no_direct_calls()
    if FAILURES:
        print(f"\n{len(FAILURES)} failure(s)")
        return 1
    print("\nall harness checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
