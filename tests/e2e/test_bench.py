#!/usr/bin/env python3
"""qimg bench: the qemu-img bench compatible mode (output lines, errors) and
every scenario with tiny sizes: JSON has every SPEC section 8 key with sane
values, CSV parses, the SVG chart parses and has one bar per run, and the
images a scenario keeps pass `qemu-img check`.

Usage: test_bench.py --qimg PATH
"""
import argparse
import csv
import io
import json
import os
import re
import shutil
import sys
import tempfile
import xml.etree.ElementTree as ET

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

FAILURES = []
RUN_KEYS = ["options", "phase", "requests", "request_size", "seconds", "ops_per_sec", "mib_per_sec",
            "guest_bytes_written", "guest_bytes_read", "host_bytes_written", "host_bytes_read",
            "write_amplification", "host_calls_per_request", "image_file_size", "image_allocated_bytes",
            "host_extents", "l2_cache_hits", "l2_cache_misses"]
CALL_KEYS = ["read", "write", "flush", "fallocate"]
PHASES = {"interleave": ["write-even", "write-odd", "read"], "cow-backing": ["write"], "alloc": ["write"],
          "partial": ["write"], "rewrite": ["write"]}


def run(argv, **kw):
    return qimgtest.run(argv, text=True, timeout=60, **kw)


def check(cond, what):
    if cond:
        print(f"ok   {what}")
    else:
        print(f"FAIL {what}")
        FAILURES.append(what)


def scenario(qimg, tmp, name, *extra):
    r = run([qimg, "bench", "--scenario", name, "--size", "4M", "--count", "64", "--dir", tmp, *extra])
    if r.returncode != 0:
        FAILURES.append(f"{name} {' '.join(extra)}: exit {r.returncode}: {r.stderr.strip()}")
        return None
    return r


def test_qemu_mode(qimg, tmp):
    img = os.path.join(tmp, "q.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
    r = run([qimg, "bench", "-c", "1000", img])
    lines = r.stdout.splitlines()
    check(r.returncode == 0 and len(lines) == 2 and lines[0] ==
          "Sending 1000 read requests, 4096 bytes each, 64 in parallel (starting at offset 0, step size 4096)"
          and re.fullmatch(r"Run completed in \d+\.\d{3} seconds\.", lines[1]) is not None,
          f"qemu mode read output: {r.stdout!r} {r.stderr!r}")
    args = ["-c", "100", "-w", "-d", "4", "-s", "8k", "-S", "16k", "-o", "4096", "--pattern=3",
            "--flush-interval=20"]
    ours = run([qimg, "bench", *args, img])
    theirs = run(["qemu-img", "bench", *args, img])
    check(ours.returncode == 0 and ours.stdout.splitlines()[:2] == theirs.stdout.splitlines()[:2],
          f"qemu mode write output matches qemu-img bench: {ours.stdout!r} vs {theirs.stdout!r}")
    r = run(["qemu-io", "-f", "qcow2", "-c", "read -P 3 4096 8k", "-c", "read -P 3 20480 8k", img])
    check(r.returncode == 0 and "Pattern verification failed" not in r.stdout, "written pattern reads back in QEMU")
    for argv, message in [(["-d", "0"], "Invalid queue depth specified"),
                          (["--flush-interval=10"], "--flush-interval is only available in write tests"),
                          (["-w", "-d", "64", "--flush-interval=10"], "Flush interval can't be smaller than depth"),
                          (["-t", "bogus"], "Invalid cache mode"),
                          (["-c", "1", "-o", "1G"], "Failed request: Input/output error")]:
        r = run([qimg, "bench", *argv, img])
        check(r.returncode == 1 and r.stderr.strip().endswith(message), f"qemu mode error {argv}: {r.stderr.strip()}")
    r = run([qimg, "bench", "-c", "64", "-d", "8", "-s", "64k", "-t", "none", img])
    check(r.returncode == 0, f"qemu mode -t none -d 8 (threads, O_DIRECT): {r.stderr.strip()}")


def check_json(doc, name, what):
    check(list(doc) == ["scenario", "runs"] and doc["scenario"] == name, f"{what}: top-level keys")
    runs = doc["runs"]
    for run_ in runs:
        ok = list(run_) == RUN_KEYS and list(run_["host_calls_per_request"]) == CALL_KEYS
        ok = ok and run_["requests"] > 0 and run_["request_size"] > 0 and run_["seconds"] > 0
        ok = ok and run_["ops_per_sec"] > 0 and run_["mib_per_sec"] > 0 and run_["image_file_size"] > 0
        ok = ok and run_["image_allocated_bytes"] > 0 and run_["host_extents"] >= 0
        guest = run_["guest_bytes_written"] + run_["guest_bytes_read"]
        ok = ok and guest == run_["requests"] * run_["request_size"]
        if run_["guest_bytes_written"]:
            ok = ok and run_["host_bytes_written"] >= run_["guest_bytes_written"]
            ok = ok and run_["write_amplification"] >= 1 and run_["host_calls_per_request"]["write"] >= 1
        else:
            ok = ok and run_["host_bytes_read"] >= run_["guest_bytes_read"]
        check(ok, f"{what}: run {run_['phase']} {run_['options']} has sane values")
    return runs


def test_scenarios(qimg, tmp):
    for name in PHASES:
        r = scenario(qimg, tmp, name, "--output=json", "--matrix", "extended_l2=off,on", "--baseline", "raw")
        if not r:
            continue
        runs = check_json(json.loads(r.stdout), name, name)
        check([x["phase"] for x in runs] == PHASES[name] * 4, f"{name}: phases of 2 configs + 2 raw baselines")
        check([x["options"]["format"] for x in runs[::len(PHASES[name])]] == ["qcow2", "qcow2", "raw", "raw"],
              f"{name}: raw baselines last")

    # Write amplification: 4 KiB writes into 64k clusters.
    r = scenario(qimg, tmp, "alloc", "--output=json", "-o", "cluster_size=64k,extended_l2=off")
    if r:
        check(json.loads(r.stdout)["runs"][0]["write_amplification"] >= 1, "alloc 64k: write amplification >= 1")
    r = scenario(qimg, tmp, "cow-backing", "--output=json", "-o", "cluster_size=64k", "--matrix",
                 "extended_l2=off,on")
    if r:
        off, on = (x["write_amplification"] for x in json.loads(r.stdout)["runs"])
        check(off >= 4 * on and on < 2, f"cow-backing 64k: extended_l2=on amplifies much less ({on} vs {off})")

    # A configuration the options reject is skipped with a note; the others run.
    r = scenario(qimg, tmp, "cow-backing", "--output=json", "--matrix", "preallocation=off,metadata")
    if r:
        check(len(json.loads(r.stdout)["runs"]) == 1 and "skipping preallocation=metadata" in r.stderr,
              f"cow-backing: invalid configuration skipped: {r.stderr.strip()}")

    # Human matrix table: rows x extended_l2 columns.
    r = scenario(qimg, tmp, "rewrite", "--matrix", "cluster_size=64k,128k;extended_l2=off,on")
    if r:
        check(re.search(r"extended_l2=off\s+extended_l2=on", r.stdout) is not None and
              re.search(r"^cluster_size=128k\s+\d+\s+\d+$", r.stdout, re.M) is not None,
              "human output has the matrix table")

    # CSV: same columns as JSON, flattened.
    r = scenario(qimg, tmp, "interleave", "--output=csv", "--baseline", "raw")
    if r:
        rows = list(csv.DictReader(io.StringIO(r.stdout)))
        check(len(rows) == 9 and "host_calls_per_request.fallocate" in rows[0] and "options.format" in rows[0]
              and all(float(x["ops_per_sec"]) > 0 for x in rows), "csv parses, 9 rows, flattened columns")

    # SVG: well-formed, title, axis labels, one bar per run.
    svg = os.path.join(tmp, "chart.svg")
    r = scenario(qimg, tmp, "interleave", "--output=json", "--matrix", "cluster_size=64k,2M", "--plot", svg)
    if r:
        runs = json.loads(r.stdout)["runs"]
        root = ET.parse(svg).getroot()
        ns = "{http://www.w3.org/2000/svg}"
        classes = [e.get("class") for e in root.iter()]
        bars = [e for e in root.iter(ns + "rect") if e.get("class") == "bar"]
        title = root.find(ns + "title")
        check(root.tag == ns + "svg" and title is not None and "interleave" in title.text, "svg has a title")
        check("x-label" in classes and "y-label" in classes and
              any("MiB/s" in (e.text or "") for e in root.iter(ns + "text") if e.get("class") == "y-label"),
              "svg has axis labels with units")
        check(len(bars) == len(runs) == 6, f"svg has one bar per run ({len(bars)} bars, {len(runs)} runs)")
        check(classes.count("legend") == 3, "svg has a legend entry per phase")

    # O_DIRECT and --alloc reserve. (How many host extents each leaves depends on the file
    # system's allocator, so only their presence is checked; docs/benchmarks.md has numbers.)
    extents = {}
    for alloc in ("default", "reserve"):
        r = run([qimg, "bench", "--scenario", "interleave", "--size", "4M", "-t", "none", "--alloc", alloc,
                 "-o", "extended_l2=on", "--dir", tmp, "--output=json"])
        if r.returncode != 0:  # also without O_DIRECT in the temp dir's file system: CI has it
            FAILURES.append(f"interleave -t none --alloc {alloc}: {r.stderr.strip()}")
            break
        runs = check_json(json.loads(r.stdout), "interleave", f"interleave -t none --alloc {alloc}")
        check(runs[0]["options"]["cache"] == "none" and runs[0]["options"]["alloc"] == alloc, f"options of {alloc}")
        extents[alloc] = runs[2]["host_extents"]
        if alloc == "reserve":
            check(runs[0]["host_calls_per_request"]["fallocate"] > 0, "reserve fallocates whole clusters")
    if len(extents) == 2:
        check(all(n >= 1 for n in extents.values()), f"host extents counted: {extents}")

    # --keep: the scenario images are consistent for qemu-img check; without it nothing is left.
    r = scenario(qimg, tmp, "cow-backing", "--keep", "--matrix", "cluster_size=64k,2M;extended_l2=off,on")
    if r:
        m = re.search(r"images kept in (\S+)", r.stderr)
        check(m is not None and os.path.isdir(m.group(1)), "--keep names the kept directory")
        images = sorted(f for f in os.listdir(m.group(1)) if f.endswith(".qcow2")) if m else []
        check(len(images) == 4, f"4 kept images: {images}")
        for f in images:
            c = run(["qemu-img", "check", os.path.join(m.group(1), f)])
            check(c.returncode == 0, f"qemu-img check {f}: {c.stdout.strip()} {c.stderr.strip()}")
        if m:
            shutil.rmtree(m.group(1), ignore_errors=True)
    before_plain = set(os.listdir(tmp))
    scenario(qimg, tmp, "alloc")
    check(set(os.listdir(tmp)) == before_plain, "scratch directory removed without --keep")

    for argv, message in [(["--scenario", "bogus"], "Unknown scenario 'bogus'"),
                          (["--scenario", "alloc", "--matrix", "cluster_size"], "Invalid --matrix item"),
                          (["--scenario", "alloc", "--alloc", "x"], "Invalid --alloc"),
                          (["--scenario", "alloc", "-o", "cluster_size=3k", "--size", "4M"], "Cluster size"),
                          (["--matrix", "extended_l2=on", "x.qcow2"], "need --scenario")]:
        r = run([qimg, "bench", "--dir", tmp, *argv])
        check(r.returncode == 1 and message in r.stderr, f"scenario error {argv}: {r.stderr.strip()}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    qimgtest.require_tools("qemu-img", "qemu-io")
    with tempfile.TemporaryDirectory(prefix="qimg-test-bench-") as tmp:
        test_qemu_mode(qimg, tmp)
        test_scenarios(qimg, tmp)
    return qimgtest.report(FAILURES, "all bench tests passed")


if __name__ == "__main__":
    sys.exit(main())
