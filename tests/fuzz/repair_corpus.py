#!/usr/bin/env python3
"""The fuzz_check oracle with qemu-img as the judge, over a saved corpus: every
input that `qimg check -r all` repairs to clean (exit 0) must be clean under
`qemu-img check` too (exit 0: no corruptions, no leaks). Inputs qimg cannot
repair are skipped (they are counted). Fails on any disagreement, on a qimg
crash (exit above 3, or a sanitizer report), and if no input was judged.

Usage: repair_corpus.py --qimg build/qimg [--max N] DIR...
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    ap.add_argument("--max", type=int, default=400)
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    a.qimg = os.path.abspath(a.qimg)  # (it runs in the scratch directory)
    if shutil.which("qemu-img") is None:
        sys.exit("FAIL: qemu-img is not installed")
    files = []
    for d in a.dirs:
        if os.path.isdir(d):
            files += sorted(os.path.join(d, f) for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))
    if len(files) > a.max:  # a deterministic spread
        files = [files[i * len(files) // a.max] for i in range(a.max)]
    judged = skipped = 0
    failures = []
    with tempfile.TemporaryDirectory(prefix="qimg-corpus-") as tmp:
        img = os.path.join(tmp, "img.qcow2")
        for src in files:
            shutil.copyfile(src, img)
            # (In the scratch directory: an external data file name is opened relative to it.)
            r = subprocess.run([a.qimg, "check", "-r", "all", "-f", "qcow2", img], capture_output=True, text=True,
                               timeout=60, cwd=tmp)
            if r.returncode > 3 or "Sanitizer" in r.stderr or "runtime error:" in r.stderr:
                failures.append(f"{src}: qimg check -r all exited {r.returncode}\n{r.stderr[-2000:]}")
                continue
            if r.returncode != 0:
                skipped += 1
                continue
            # The image alone: a backing file named in a fuzzed header does not exist.
            spec = '{"driver": "qcow2", "file": {"driver": "file", "filename": "%s"}, "backing": null}' % img
            q = subprocess.run(["qemu-img", "check", "json:" + spec], capture_output=True, text=True, timeout=60, cwd=tmp)
            judged += 1
            if q.returncode != 0:
                kept = os.path.join(tempfile.gettempdir(), "qimg-corpus-" + os.path.basename(src))
                shutil.copyfile(src, kept)
                failures.append(f"{src}: repaired clean by qimg, qemu-img check exits {q.returncode} "
                                f"(input kept: {kept})\n{q.stdout}{q.stderr}")
    print(f"corpus repair oracle: {len(files)} inputs, {judged} repaired clean and judged by qemu-img, "
          f"{skipped} not repairable by qimg, {len(failures)} failures")
    for f in failures:
        print("FAIL", f)
    if failures or judged == 0:
        sys.exit(1)


if __name__ == "__main__":
    main()
