"""What every Python test (tests/e2e, tests/interop) shares so that it cannot pass silently.

- Every command a test runs goes through `run` or `run_killable`, which end the whole test
  with a failure (`SanitizerReport`, exit 1) when the command's output holds a sanitizer
  report or it exited SANITIZER_EXIT, even where the test expects the command to fail:
  ASan's default exit status is 1, qimg's error exit, so a report must never count as one.
- `require_tools` fails the test when a tool it needs is missing (CI installs them all with
  scripts/deps.sh); `skip` is for the rare test that genuinely cannot run in a build: it exits
  SKIP, which tests/CMakeLists.txt declares as that test's SKIP_RETURN_CODE, so ctest reports
  "Skipped", never "Passed".

Standard library only. Scripts import it with
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys

# The sanitizer build's ASAN/UBSAN/LSAN_OPTIONS exitcode (tests/sanitizer.env); qimg itself
# exits 0, 1, 2, 3 or 63, never 66.
SANITIZER_EXIT = 66
# ctest's SKIP_RETURN_CODE for the tests that may skip (automake's convention).
SKIP = 77
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                     "SUMMARY: UndefinedBehaviorSanitizer", "SUMMARY: AddressSanitizer")


class SanitizerReport(SystemExit):
    """Ends the test (exit status 1, the report on stderr). A SystemExit, so the tests'
    `except Exception` handlers, which record ordinary failures and go on, cannot swallow it."""


def _text(data) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def check_sanitizer(argv, returncode, *outputs) -> None:
    """Raises SanitizerReport if the command exited SANITIZER_EXIT or printed a sanitizer report."""
    text = "".join(_text(o) for o in outputs)
    markers = [m for m in SANITIZER_MARKERS if m in text]
    if returncode != SANITIZER_EXIT and not markers:
        return
    tail = text if len(text) <= 6000 else "...\n" + text[-6000:]
    raise SanitizerReport(f"FAIL: sanitizer report (exit status {returncode}"
                          f"{', ' + ', '.join(repr(m) for m in markers) if markers else ''}) from\n"
                          f"  {shlex.join(str(a) for a in argv)}\n{tail}")


# qemu-img times PBKDF2 with the thread's CPU clock before it creates a LUKS header, and fails
# when a loaded machine gives that thread no measurable CPU time ("Unable to get accurate CPU
# usage", QEMU's qcrypto_pbkdf2_count_iters). That is QEMU's flake, not a verdict: it is retried.
QEMU_PBKDF2_FLAKE = "Unable to get accurate CPU usage"


def run(argv, *, timeout, **kw) -> subprocess.CompletedProcess:
    """subprocess.run with captured output and a timeout, checked for sanitizer reports."""
    argv = [str(a) for a in argv]
    for attempt in range(4):
        p = subprocess.run(argv, capture_output=True, timeout=timeout, **kw)
        check_sanitizer(argv, p.returncode, p.stdout, p.stderr)
        if p.returncode == 0 or os.path.basename(argv[0]) != "qemu-img" or attempt == 3:
            return p
        err = p.stderr if isinstance(p.stderr, str) else p.stderr.decode(errors="replace")
        if QEMU_PBKDF2_FLAKE not in err:
            return p
    return p


def run_killable(argv, *, timeout, cwd=None, env=None, merge_stderr=False):
    """Runs argv in its own process group; on timeout kills the whole group (no orphans) and
    raises subprocess.TimeoutExpired. Returns (returncode, stdout, stderr), text, checked for
    sanitizer reports; with merge_stderr, stderr is part of stdout (and returned as "")."""
    argv = [str(a) for a in argv]
    p = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                         text=True, errors="replace", start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = p.communicate()
        check_sanitizer(argv, None, out, err)
        raise subprocess.TimeoutExpired(argv, timeout, output=out, stderr=err)
    check_sanitizer(argv, p.returncode, out, err)
    return p.returncode, out, err or ""


@contextlib.contextmanager
def held_open(img, *, readonly=False, cwd=None, fmt="qcow2"):
    """qemu-io holding img open (and locked) for the duration of the with block: it has
    the image open when the block starts, and is told to quit and waited for after it."""
    argv = ["qemu-io"] + (["-r"] if readonly else []) + ["-f", fmt, str(img)]
    p = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, start_new_session=True)
    try:
        p.stdin.write("read 0 512\n")  # answered once the image is open
        p.stdin.flush()
        p.stdout.readline()
        yield p
    finally:
        try:
            p.stdin.close()
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def require_tools(*tools: str) -> None:
    """Fails the test (exit 1) unless every tool is on PATH."""
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        print(f"FAIL: required tool(s) not found on PATH: {' '.join(missing)} "
              "(scripts/deps.sh installs them)", flush=True)
        sys.exit(1)


def skip(reason: str):
    """Ends a test that cannot run in this build: ctest shows it as Skipped (SKIP_RETURN_CODE)."""
    print(f"SKIP: {reason}", flush=True)
    sys.exit(SKIP)


def run_cases(calls, *, workers: int = 4) -> tuple[int, list[str]]:
    """Runs each (function, *args) of `calls` on a thread pool. Every function returns
    (steps, failures); the result sums the steps and joins the failure lists in the
    order of `calls`. An exception in a case propagates (the test fails loudly)."""
    steps, failures = 0, []
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, *args) for fn, *args in calls]
        for f in futures:
            n, fails = f.result()
            steps += n
            failures += fails
    return steps, failures


def report(problems: list[str], ok: str, kind: str = "failure(s)") -> int:
    """The end of a test script: lists the problems and returns 1, or prints `ok` and returns 0."""
    if problems:
        print(f"\n{len(problems)} {kind}:")
        for p in problems:
            print(f"  - {p}")
        return 1
    print(ok)
    return 0
