"""Running qimg and qemu-img side by side on backing chains that the command
changes (rebase, commit), for test_rebase.py and test_commit.py.

Each case builds its images once, with qemu-img and qemu-io only, in a
`pristine` directory; the directory is copied twice (relative backing names
keep working), qemu-img runs the command in one copy and qimg in the other,
and then:
- exit status, stdout and stderr must be the same (stderr with each line's
  program prefix dropped and the lines joined, as qemu_diff.normalize_stderr);
- the case's own checks compare the two results (and the pristine images)
  with qemu-img: compare, check, map, info.

Cases run on a small thread pool; every process goes through qimgtest.run, so
a sanitizer report fails the test."""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import sys
import tempfile
import threading
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402
from qemu_diff import QEMU_PBKDF_FLAKE, normalize_stderr, require_qemu_tools  # noqa: E402

TIMEOUT = 120
MIB = 1 << 20


class CaseFailure(Exception):
    pass


def run(argv, cwd=None, input=None):
    return qimgtest.run(argv, cwd=cwd, input=input, text=True, timeout=TIMEOUT)


def must(argv, cwd=None, input=None):
    r = run(argv, cwd=cwd, input=input)
    for _ in range(3):  # qemu's LUKS code gives up timing PBKDF2 on a busy machine: retry, not a result
        if QEMU_PBKDF_FLAKE not in r.stderr:
            break
        r = run(argv, cwd=cwd, input=input)
    if r.returncode != 0:
        raise CaseFailure(f"command failed ({r.returncode}): {' '.join(map(str, argv))}\n{r.stdout}{r.stderr}")
    return r


def qemu_io(cwd, img, cmds, fmt="qcow2"):
    """qemu-io commands from stdin; qemu-io reports failed commands on stdout."""
    r = must(["qemu-io", "-f", fmt, img], cwd=cwd, input="\n".join(cmds) + "\n")
    low = r.stdout.lower()
    if "error" in low or "failed" in low or "invalid" in low:
        raise CaseFailure(f"qemu-io failed on {img}: {r.stdout}")


def create(cwd, name, size, opts="", backing=None, backing_fmt="qcow2", fmt="qcow2"):
    argv = ["qemu-img", "create", "-q", "-f", fmt]
    if opts:
        argv += ["-o", opts]
    if backing:
        argv += ["-b", backing, "-F", backing_fmt]
    must(argv + [name, str(size)], cwd=cwd)


def fit(cmds, size):
    """The qemu-io commands ("write [-P X|-z] OFFSET LENGTH") that lie inside a disk of `size` bytes."""
    def end(cmd):
        *_, off, length = cmd.split()
        return sum(int(x[:-1]) * {"k": 1 << 10, "M": MIB}[x[-1]] if x[-1] in "kM" else int(x) for x in (off, length))
    return [c for c in cmds if end(c) <= size]


def make_image(cwd, name, kind, data, size, backing=None, backing_fmt="qcow2"):
    """A raw or qcow2 image (kind: (format, qcow2 options)) holding the qemu-io `data`
    that fits in it; returns its format."""
    fmt, opts = kind
    if fmt == "raw":
        create(cwd, name, size, fmt="raw")
    else:
        create(cwd, name, size, opts, backing=backing, backing_fmt=backing_fmt)
    qemu_io(cwd, name, fit(data, size), fmt=fmt)
    return fmt


SECRET = ["--object", "secret,id=s0,data=pw"]


def luks_opts(path):
    """--image-opts argument of a LUKS image made with SECRET."""
    return f"driver=qcow2,file.filename={path},encrypt.key-secret=s0"


def create_luks(cwd, name, size, backing, backing_fmt, data):
    """An encrypted (LUKS) overlay of `backing`, holding the qemu-io `data`."""
    must(["qemu-img", "create", "-q", "-f", "qcow2", *SECRET, "-o",
          "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", "-b", backing, "-F", backing_fmt,
          name, str(size)], cwd=cwd)
    r = must(["qemu-io", *SECRET, "--image-opts", luks_opts(name)], cwd=cwd, input="\n".join(data) + "\n")
    if "error" in r.stdout.lower() or "failed" in r.stdout.lower():
        raise CaseFailure(f"qemu-io failed on {name}: {r.stdout}")


def check_luks_clean(path, what):
    r = run(["qemu-img", "check", "-U", *SECRET, "--image-opts", luks_opts(path)])
    if r.returncode != 0:
        raise CaseFailure(f"{what}: qemu-img check {path} -> {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")


def same_luks_content(a, b, what):
    r = run(["qemu-img", "compare", "-U", *SECRET, "--image-opts", luks_opts(a), luks_opts(b)])
    if r.returncode != 0:
        raise CaseFailure(f"{what}: qemu-img compare {a} {b} -> {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")


def info(path):
    return json.loads(must(["qemu-img", "info", "-U", "--output=json", path]).stdout)


def map_entries(path, luks=False):
    image = [*SECRET, "--image-opts", luks_opts(path)] if luks else [path]
    return json.loads(must(["qemu-img", "map", "-U", "--output=json", *image]).stdout)


def own_bytes(path, luks=False):
    """(data bytes, allocated bytes) the image itself holds, per qemu-img map (depth 0)."""
    data = present = 0
    for e in map_entries(path, luks):
        if e["depth"] == 0 and e["present"]:
            present += e["length"]
            if e["data"]:
                data += e["length"]
    return data, present


def same_content(a, b, what):
    """qemu-img compare: a and b read the same (through their own chains)."""
    r = run(["qemu-img", "compare", "-U", a, b])
    if r.returncode != 0:
        raise CaseFailure(f"{what}: qemu-img compare {a} {b} -> {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")


def check_clean(path, what):
    if info(path)["format"] != "qcow2":
        return
    r = run(["qemu-img", "check", "-U", path])
    if r.returncode != 0:
        raise CaseFailure(f"{what}: qemu-img check {path} -> {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")


def snapshot_export(path, name, out):
    must(["qemu-img", "convert", "-U", "-l", f"snapshot.name={name}", "-O", "raw", path, out])
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def keyed(key):
    """Decorates a setup function with the key under which Runner builds it only once."""
    def wrap(fn):
        fn.key = key
        return fn
    return wrap


class Case:
    """One command on one set of images. `setup(dir)` makes the images (once per distinct
    `setup.key`, see keyed()); `args` are the
    command's arguments (relative names, run in the case directory); `verify(case, dirs)`
    compares the results (dirs: pristine, qemu, qimg) and raises CaseFailure. With
    `qemu_args`, qemu-img runs those instead (a qimg option qemu-img 7.2 lacks, compared
    with the closest qemu-img command), and only the exit status is compared.
    With compare_stdout False stdout is not compared: qemu-img -p prints its progress
    lines into a pipe too, qimg (like its convert) only on a terminal."""

    def __init__(self, label, setup, args, verify=None, qemu_args=None, pre=None, compare_stdout=True):
        self.label = label
        self.compare_stdout = compare_stdout  # False for -p: qimg draws progress on terminals only
        self.setup = setup
        self.args = args
        self.verify = verify
        self.qemu_args = qemu_args
        self.pre = pre  # pre(dir): run in each copy before the command (e.g. rename a file)
        self.notes = []  # lines for the summary (allocation figures)


class Runner:
    def __init__(self, qimg, command, root, workers=4):
        self.qimg = qimg
        self.command = command
        self.root = root
        self.workers = workers
        self.cases: list[Case] = []
        self.failures: list[str] = []
        self.passed = 0
        # Setups with a `key` attribute are built once and copied: most cases share a few.
        self._built: dict = {}
        self._lock = threading.Lock()

    def add(self, case: Case):
        self.cases.append(case)

    def _make_pristine(self, setup, target):
        key = getattr(setup, "key", None)
        if key is None:
            os.makedirs(target)
            setup(target)
            return
        with self._lock:
            entry = self._built.setdefault(key, {"lock": threading.Lock(), "dir": None})
        with entry["lock"]:
            if entry["dir"] is None:
                built = os.path.join(self.root, f"setup{len(self._built):03d}")
                os.makedirs(built)
                setup(built)
                entry["dir"] = built
        shutil.copytree(entry["dir"], target)

    def _one(self, index_case):
        index, case = index_case
        base = os.path.join(self.root, f"case{index:03d}")
        dirs = {k: os.path.join(base, k) for k in ("pristine", "qemu", "qimg")}
        try:
            os.makedirs(base)
            self._make_pristine(case.setup, dirs["pristine"])
            shutil.copytree(dirs["pristine"], dirs["qemu"])
            shutil.copytree(dirs["pristine"], dirs["qimg"])
            if case.pre:
                case.pre(dirs["qemu"])
                case.pre(dirs["qimg"])
            a = run(["qemu-img", self.command, *(case.qemu_args or case.args)], cwd=dirs["qemu"])
            b = run([self.qimg, self.command, *case.args], cwd=dirs["qimg"])
            problems = []
            if a.returncode != b.returncode:
                problems.append(f"exit {b.returncode}, qemu-img {a.returncode}")
            if case.qemu_args is None:
                if case.compare_stdout and a.stdout != b.stdout:
                    problems.append(f"stdout\n    qimg:     {b.stdout!r}\n    qemu-img: {a.stdout!r}")
                ea, eb = normalize_stderr(a.stderr, "qemu-img"), normalize_stderr(b.stderr, "qimg")
                if ea != eb:
                    problems.append(f"stderr\n    qimg:     {eb!r}\n    qemu-img: {ea!r}")
            elif b.returncode != 0:
                problems.append(f"qimg failed: {b.stderr.strip()}")
            if problems:
                return case, "; ".join(problems)
            if case.verify:
                case.verify(case, dirs, b.returncode)
            shutil.rmtree(base, ignore_errors=True)
            return case, None
        except qimgtest.SanitizerReport:
            raise
        except CaseFailure as e:
            return case, f"{e} (directory {os.path.basename(base)})"
        except Exception:  # noqa: BLE001 - a broken case is a failure with its traceback
            return case, f"{traceback.format_exc()} (directory {os.path.basename(base)})"

    def run_all(self):
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            for case, problem in pool.map(self._one, enumerate(self.cases)):
                if problem:
                    self.failures.append(f"{case.label}: {' '.join(case.args)}: {problem}")
                else:
                    self.passed += 1

    def report(self) -> int:
        for c in self.cases:
            for n in c.notes:
                print(f"  {c.label}: {n}")
        for f in self.failures:
            print("FAIL " + f)
        print(f"{len(self.cases)} {self.command} cases: {self.passed} passed, {len(self.failures)} failed")
        return 1 if self.failures or not self.cases else 0


def main(command, add_cases, workers=4) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    ap.add_argument("-k", default="", help="run only cases whose label contains this")
    args = ap.parse_args()
    qimg = os.path.abspath(args.qimg)
    require_qemu_tools()
    with tempfile.TemporaryDirectory(prefix=f"qimg-{command}-") as root:
        r = Runner(qimg, command, root, workers)
        add_cases(r)
        r.cases = [c for c in r.cases if args.k in c.label]
        if not r.cases:
            print(f"FAIL: no {command} case matches -k {args.k!r}")
            return 1
        r.run_all()
        code = r.report()
        if r.failures:
            # Keep the failing cases' directories for inspection.
            kept = tempfile.mkdtemp(prefix=f"qimg-{command}-failed-")
            for name in os.listdir(root):
                if name.startswith("case"):
                    shutil.move(os.path.join(root, name), kept)
            print(f"failing cases kept in {kept}")
        return code
