"""Helpers shared by the interoperability matrix (matrix.py).

Standard library only. Everything here is deterministic: the same case always
runs the same commands with the same data, so a failure can be reproduced by
re-running one case (`matrix.py --qimg PATH --case NAME`).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from qimgtest import run_killable  # noqa: E402  (fails the case on a sanitizer report)

TIMEOUT = 60  # seconds per external command

KiB = 1024
MiB = 1024 * KiB


class CaseFailure(Exception):
    """A check failed; the message says what and where."""


def log(msg: str) -> None:
    print(msg, flush=True)


def size_str(n: int) -> str:
    for unit, div in (("M", MiB), ("k", KiB)):
        if n % div == 0 and n >= div:
            return f"{n // div}{unit}"
    return str(n)


def parse_size(text: str) -> int:
    text = text.strip()
    mult = {"k": KiB, "K": KiB, "M": MiB, "G": 1024 * MiB}
    if text and text[-1] in mult:
        return int(text[:-1]) * mult[text[-1]]
    return int(text)


class Result:
    def __init__(self, argv, rc, out, err, seconds):
        self.argv, self.rc, self.out, self.err, self.seconds = argv, rc, out, err, seconds

    def describe(self, limit: int = 2000) -> str:
        def tail(s: str) -> str:
            s = s.rstrip()
            return s if len(s) <= limit else "...\n" + s[-limit:]
        return (f"  command: {shlex.join(self.argv)}\n  exit status: {self.rc}\n"
                f"  stdout:\n{indent(tail(self.out))}\n  stderr:\n{indent(tail(self.err))}")


def indent(s: str, pre: str = "    ") -> str:
    return "\n".join(pre + line for line in s.splitlines()) if s else pre + "(empty)"


def run(argv, *, check: bool = True, cwd: str | None = None, quiet: bool = False,
        timeout: int = TIMEOUT) -> Result:
    """Run a command with a timeout; on failure raise CaseFailure with full context."""
    argv = [str(a) for a in argv]
    if not quiet:
        log(f"$ {shlex.join(argv)}")
    t0 = time.monotonic()
    try:
        rc, out, err = run_killable(argv, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        r = Result(argv, None, e.output or "", e.stderr or "", timeout)
        raise CaseFailure(f"command timed out after {timeout}s\n{r.describe()}")
    except FileNotFoundError as e:
        raise CaseFailure(f"cannot run {argv[0]}: {e}")
    p = subprocess.CompletedProcess(argv, rc, out, err)
    r = Result(argv, p.returncode, p.stdout, p.stderr, time.monotonic() - t0)
    if check and p.returncode != 0:
        raise CaseFailure(f"command failed\n{r.describe()}")
    if p.returncode is not None and p.returncode < 0:
        raise CaseFailure(f"command killed by signal {-p.returncode}\n{r.describe()}")
    return r


def run_json(argv, **kw):
    r = run(argv, **kw)
    try:
        return json.loads(r.out)
    except json.JSONDecodeError as e:
        raise CaseFailure(f"output is not valid JSON ({e})\n{r.describe()}")


# --------------------------------------------------------------------------
# Workloads: lists of qemu-io commands.  All offsets are plain byte counts so
# the command text is identical for qemu-io and `qimg io`.
# --------------------------------------------------------------------------

def pattern(layer: int, i: int) -> int:
    """A distinct, non-zero byte per (layer, step)."""
    return 0x11 + ((layer * 0x35 + i * 0x0b) % 0xe0)


def workload(*, cluster_size: int, size: int, layer: int = 0, extended_l2: bool = False,
             compress: bool = False, discard: bool = True, raw_target: bool = False) -> list[str]:
    """Deterministic write/zero/discard workload for one image (one layer of a chain).

    Every range stays within `size`.  Discards are whole, aligned clusters only:
    QEMU ignores partial-cluster discards, so only whole-cluster discards have a
    deterministic effect (the range reads as zeroes afterwards).  `layer` shifts
    some offsets and changes the patterns so the layers of a chain differ.
    """
    cs = cluster_size
    sub = cs // 32 if extended_l2 else (cs // 32 if cs >= 16 * KiB else 512)
    sub = max(sub, 512)
    cmds: list[str] = []
    k = 0

    def c(n: int) -> int:
        return n * cs

    def add(cmd: str, off: int, length: int) -> None:
        if off < 0 or length <= 0 or off + length > size:
            raise ValueError(f"workload command {cmd} {off} {length} exceeds size {size}")
        cmds.append(f"{cmd} {off} {length}")

    def P(i: int) -> str:
        return f"-P 0x{pattern(layer, i):02x}"

    shift = layer * 3 * sub
    # 1. two whole clusters, then a partial overwrite inside them (COW inside an allocated cluster)
    add(f"write {P(0)}", c(1), 2 * cs)
    add(f"write {P(1)}", c(1) + cs // 2 + shift, 4096 if cs >= 8192 else 1024)
    # 2. sector-aligned write crossing a cluster boundary
    add(f"write {P(2)}", c(4) - 1536 + shift, 3072)
    # 3. byte-unaligned write crossing a cluster boundary
    add(f"write {P(3)}", c(7) - 1001 + layer * 77, 2002)
    # 4. subcluster-granular 4k writes at odd subcluster offsets (and one not subcluster aligned)
    add(f"write {P(4)}", c(8) + 3 * sub + shift, 4096)
    add(f"write {P(5)}", c(8) + 11 * sub + 1024, 4096)
    add(f"write {P(6)}", c(9) + 5 * sub, 4096)
    # 5. zero writes: over allocated data (full cluster, with and without unmap), partial
    add(f"write {P(7)}", c(10), 3 * cs)
    add("write -z", c(10), cs)
    add("write -z -u", c(11), cs)
    add("write -z", c(12) + sub, 2 * sub)
    add("write -z -u", c(12) + 6 * sub + 512, sub)
    add("write -z", c(20), cs)          # over unallocated (or backing) area
    add("write -z -u", c(21) + sub, 3 * sub)
    # 6. discard of whole clusters out of a written range
    if discard:
        add(f"write {P(8)}", c(13), 3 * cs)
        add("discard", c(14), cs)
        add("discard", c(22), 2 * cs)   # unallocated in this layer, maybe data in backing
    # 7. compressed whole clusters, then a partial overwrite of a compressed cluster
    if compress:
        # QEMU only compresses into clusters unallocated in this image (and not shared
        # with a snapshot), so each layer/phase gets its own clusters.
        base = 24 + 3 * layer
        cmd = f"write {P(9)}" if raw_target else f"write -c {P(9)}"
        add(cmd, c(base), 2 * cs)
        add(f"write {P(10)}", c(base + 1) + sub, min(4096, cs // 2))
        add(f"write {P(11)}" if raw_target else f"write -c {P(11)}", c(base + 2), cs)
    # 8. the last bytes of the image (tail cluster), crossing into it
    add(f"write {P(12)}", size - cs - 512, cs + 512)
    return cmds


def raw_equivalent(cmds: list[str]) -> list[str]:
    """The same workload for a raw file: compressed writes become plain writes,
    discards become zero writes (a whole-cluster qcow2 discard reads as zeroes
    when the image has no backing file, or compat=1.1 with one)."""
    out = []
    for cmd in cmds:
        words = cmd.split()
        if words[0] == "write" and "-c" in words:
            words.remove("-c")
        elif words[0] == "discard":
            words = ["write", "-z"] + words[1:]
        out.append(" ".join(words))
    return out


def io_args(cmds: list[str]) -> list[str]:
    args = []
    for c in cmds:
        args += ["-c", c]
    return args


def command_ranges(cmds: list[str]) -> list[tuple[int, int]]:
    ranges = []
    for c in cmds:
        w = c.split()
        if w[0] in ("write", "discard", "read"):
            ranges.append((int(w[-2]), int(w[-1])))
    return ranges


def spot_checks(raw_path: str, cmds: list[str], limit: int = 12) -> list[str]:
    """`read -P` commands for ranges of the expected raw image that hold one byte value
    (non-zero patterns first, then a few zero ranges)."""
    data_reads, zero_reads = [], []
    with open(raw_path, "rb") as f:
        for off, length in command_ranges(cmds):
            length = min(length, 256 * KiB)
            f.seek(off)
            data = f.read(length)
            if len(data) == length and data.count(data[0]) == length:
                cmd = f"read -P 0x{data[0]:02x} {off} {length}"
                if cmd not in data_reads and cmd not in zero_reads:
                    (zero_reads if data[0] == 0 else data_reads).append(cmd)
    return (data_reads[:limit - 4] + zero_reads[:4])[:limit]


def first_mismatch(a: str, b: str, chunk: int = MiB):
    """Offset of the first differing byte of two files, or None."""
    sa, sb = os.path.getsize(a), os.path.getsize(b)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        off = 0
        while True:
            da, db = fa.read(chunk), fb.read(chunk)
            if da != db:
                n = min(len(da), len(db))
                for i in range(n):
                    if da[i] != db[i]:
                        return off + i, da[i], db[i], sa, sb
                return off + n, None, None, sa, sb
            if not da:
                return None
            off += len(da)


def diff_json_lists(ours, theirs, ours_name="qimg", theirs_name="qemu-img") -> str | None:
    """Compare two JSON lists entry by entry; describe the first difference."""
    if not isinstance(ours, list) or not isinstance(theirs, list):
        return f"{ours_name} output is {type(ours).__name__}, {theirs_name} output is {type(theirs).__name__}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            keys = sorted(set(a) | set(b)) if isinstance(a, dict) and isinstance(b, dict) else []
            detail = ", ".join(f"{k}: {a.get(k, '<absent>')!r} vs {b.get(k, '<absent>')!r}"
                               for k in keys if a.get(k, "<absent>") != b.get(k, "<absent>"))
            return (f"entry {i} differs ({detail})\n    {ours_name}:   {json.dumps(a)}\n"
                    f"    {theirs_name}: {json.dumps(b)}")
    if len(ours) != len(theirs):
        longer, name = (ours, ours_name) if len(ours) > len(theirs) else (theirs, theirs_name)
        n = min(len(ours), len(theirs))
        return (f"{ours_name} has {len(ours)} entries, {theirs_name} has {len(theirs)}; "
                f"first extra entry ({name}): {json.dumps(longer[n])}")
    return None


def diff_dicts(ours: dict, theirs: dict, keys, where: str) -> list[str]:
    problems = []
    for k in keys:
        a, b = ours.get(k, "<absent>"), theirs.get(k, "<absent>")
        if a != b:
            problems.append(f"{where}{k}: qimg {a!r} vs qemu-img {b!r}")
    return problems


class TempDir:
    """Fresh directory per case: removed on success, kept (and printed) on failure."""

    def __init__(self, name: str):
        safe = name.replace("/", "_")
        self.path = tempfile.mkdtemp(prefix=f"qimg-{safe}-")
        self.ok = False

    def __enter__(self):
        return self.path

    def __exit__(self, exc_type, exc, tb):
        if self.ok and exc_type is None:
            shutil.rmtree(self.path, ignore_errors=True)
        else:
            log(f"kept work directory: {self.path}")
        return False


def fail(msg: str) -> None:
    raise CaseFailure(msg)


def main_guard(fn) -> int:
    try:
        return fn()
    except CaseFailure as e:
        log(f"FAIL: {e}")
        return 1
    except KeyboardInterrupt:
        return 130


def eprint(*a):
    print(*a, file=sys.stderr, flush=True)
