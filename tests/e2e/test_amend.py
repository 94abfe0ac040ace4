#!/usr/bin/env python3
"""qimg amend across a matrix of images made by QEMU: after every amend the image
must pass `qemu-img check` with no errors and no leaks, read exactly as before
(active state and every internal snapshot), and show the new option. Where
qemu-img amend supports the same change, its result is compared with ours."""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

FAILURES = []


def run(argv, **kw):
    return qimgtest.run(argv, text=True, timeout=300, **kw)


def must(argv, **kw):
    r = run(argv, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"command failed ({r.returncode}): {' '.join(argv)}\n{r.stdout}{r.stderr}")
    return r


def qemu_io(img, cmds):
    r = run(["qemu-io", "-f", "qcow2", img], input="\n".join(cmds) + "\n")
    if r.returncode != 0 or "error" in r.stdout.lower():
        raise RuntimeError(f"qemu-io failed on {img}: {r.stdout}{r.stderr}")


def export(img, snapshot=None):
    """Guest content as raw bytes (active state or an internal snapshot)."""
    out = img + (f".{snapshot}" if snapshot else "") + ".export.raw"
    argv = ["qemu-img", "convert", "-O", "raw"] + (["-l", snapshot] if snapshot else []) + [img, out]
    must(argv)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def snapshots(img):
    info = json.loads(must(["qemu-img", "info", "--output=json", img]).stdout)
    return [s["name"] for s in info.get("snapshots", [])]


def fmt_specific(img):
    info = json.loads(must(["qemu-img", "info", "--output=json", img]).stdout)
    return info["format-specific"]["data"]


def check_clean(img, what):
    r = run(["qemu-img", "check", "--output=json", img])
    if r.returncode != 0:
        FAILURES.append(f"{what}: qemu-img check exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
        return False
    rep = json.loads(r.stdout)
    if rep.get("leaks", 0) or rep.get("corruptions", 0):
        FAILURES.append(f"{what}: qemu-img check reports {rep}")
        return False
    return True


# name -> (create options, backing?, workload)
IMAGES = {
    "std64k": ("cluster_size=64k", None, ["write -P 1 0 1M", "write -z 2M 64k", "write -z -u 3M 128k",
                                          "write -c -P 3 4M 128k", "write -P 4 10M 4k", "discard 512k 64k"]),
    "std16k-rb64": ("cluster_size=16k,refcount_bits=64", None, ["write -P 1 100k 300k", "write -z 1M 16k"]),
    "ext64k": ("cluster_size=64k,extended_l2=on", None, ["write -P 1 4k 8k", "write -P 2 70k 1k", "write -z 200k 4k",
                                                         "write -z -u 256k 64k", "write -c -P 6 1M 64k",
                                                         "write -P 7 5M 2M"]),
    "ext2M": ("cluster_size=2M,extended_l2=on", None, ["write -P 1 64k 64k", "write -P 2 3M 100k", "write -z 8M 64k"]),
    "v2": ("compat=0.10,cluster_size=4k", None, ["write -P 1 0 64k", "write -P 2 1M 5k"]),
    "zstd": ("compression_type=zstd", None, ["write -c -P 1 0 256k", "write -P 2 1M 4k"]),
    "prealloc": ("preallocation=metadata,cluster_size=64k", None, ["write -P 1 64k 4k", "write -z 1M 64k"]),
    "overlay": ("cluster_size=64k", "raw", ["write -P 9 4k 4k", "write -z 256k 64k", "write -P 8 700k 100k"]),
    "ext-overlay": ("cluster_size=64k,extended_l2=on", "qcow2",
                    ["write -P 9 4k 4k", "write -P 9 130k 2k", "write -z 256k 4k", "write -P 8 700k 100k"]),
}
SNAPSHOT_IMAGES = {"std64k", "ext64k"}

# (amend options, applicable?, qemu-img amend supports it?)
AMENDS = [
    ("extended_l2=on", lambda o: "extended_l2=on" not in o and "compat=0.10" not in o and "4k" not in o, False),
    ("extended_l2=off", lambda o: "extended_l2=on" in o, False),
    ("compat=0.10", lambda o: "compat=0.10" not in o and "extended_l2" not in o and "zstd" not in o
     and "refcount_bits" not in o, True),
    ("compat=0.10,extended_l2=off", lambda o: "extended_l2=on" in o, False),
    ("compat=1.1", lambda o: "compat=0.10" in o, True),
    ("compat=1.1,refcount_bits=8", lambda o: "compat=0.10" in o, True),  # v2 has no refcount_order: upgraded first
    ("refcount_bits=64", lambda o: "compat=0.10" not in o and "refcount_bits" not in o, True),
    ("refcount_bits=4", lambda o: "compat=0.10" not in o, True),
    # (snapshots and compressed clusters share host clusters: refcounts above 1, see errors_case)
    ("refcount_bits=1", lambda o: "compat=0.10" not in o, True),
    ("lazy_refcounts=on", lambda o: "compat=0.10" not in o, True),
]


def build(d, name):
    opts, backing, work = IMAGES[name]
    img = os.path.join(d, f"{name}.qcow2")
    args = ["qemu-img", "create", "-f", "qcow2", "-o", opts]
    if backing:
        base = os.path.join(d, f"{name}-base.{backing}")
        must(["qemu-img", "create", "-f", backing, base, "16M"])
        r = run(["qemu-io", "-f", backing, base], input="write -P 0x55 0 8M\n")
        if r.returncode:
            raise RuntimeError(r.stderr)
        args += ["-b", os.path.basename(base), "-F", backing]
    must(args + [img, "16M"], cwd=d)
    qemu_io(img, work)
    if name in SNAPSHOT_IMAGES:
        must(["qemu-img", "snapshot", "-c", "snap1", img])
        qemu_io(img, ["write -P 0x77 0 8k", "write -P 0x78 3M 64k", "write -z 10M 4k"])
    return img


def amend_case(qimg, d, name, amend, qemu_supported):
    t0 = time.time()
    base_img = build(d, name)
    work = os.path.join(d, f"{name}-work.qcow2")
    shutil.copy(base_img, work)
    expect = {None: export(work)}
    for s in snapshots(work):
        expect[s] = export(work, s)
    what = f"{name} amend -o {amend}"
    r = run([qimg, "amend", "-o", amend, work], cwd=d)
    if r.returncode != 0:
        FAILURES.append(f"{what}: exit {r.returncode}: {r.stderr.strip()}")
        return
    if not check_clean(work, what):
        return
    for s, data in expect.items():
        if export(work, s) != data:
            FAILURES.append(f"{what}: guest content changed ({'active' if s is None else 'snapshot ' + s})")
    spec = fmt_specific(work)
    for kv in amend.split(","):
        k, v = kv.split("=")
        key = {"extended_l2": "extended-l2", "refcount_bits": "refcount-bits", "lazy_refcounts": "lazy-refcounts",
               "compat": "compat"}[k]
        want = {"on": True, "off": False}.get(v, int(v) if v.isdigit() else v)
        if key == "extended-l2" and spec.get("compat") == "0.10":
            continue
        if spec.get(key, False if key == "extended-l2" else None) != want:
            FAILURES.append(f"{what}: qemu-img info shows {key}={spec.get(key)!r}, expected {want!r}")
    # Round trip back for extended_l2 (exercises both directions on the same data).
    if amend == "extended_l2=on":
        r = run([qimg, "amend", "-o", "extended_l2=off", work], cwd=d)
        if r.returncode != 0 or not check_clean(work, what + " then off"):
            FAILURES.append(f"{what} then extended_l2=off: exit {r.returncode} {r.stderr.strip()}")
        elif export(work) != expect[None]:
            FAILURES.append(f"{what} then extended_l2=off: guest content changed")
    # qemu-img 7.2 takes minutes to change refcount_bits on 2 MiB-cluster images: compare elsewhere.
    if qemu_supported and "2M" not in IMAGES[name][0]:
        theirs = os.path.join(d, f"{name}-qemu.qcow2")
        shutil.copy(base_img, theirs)
        q = run(["qemu-img", "amend", "-o", amend, theirs], cwd=d)
        ours_spec = fmt_specific(work)
        if q.returncode != 0:
            FAILURES.append(f"{what}: qemu-img amend failed where qimg succeeded: {q.stderr.strip()} (document?)")
        elif fmt_specific(theirs) != ours_spec:
            FAILURES.append(f"{what}: format-specific info differs from qemu-img amend's: {ours_spec} vs {fmt_specific(theirs)}")
        elif export(theirs) != expect[None]:
            FAILURES.append(f"{what}: qemu-img amend changed the content (test bug?)")
    print(f"{time.time() - t0:6.2f}s ", end="")
    print(f"ok   {what}" if not any(f.startswith(what) for f in FAILURES) else f"FAIL {what}")


def errors_case(qimg, d):
    img = build(d, "ext64k")
    before = open(img, "rb").read()
    for opts, why in (("compat=0.10", "extended L2 without extended_l2=off"), ("cluster_size=4k", "creation-only"),
                      ("foo=bar", "unknown option"), ("refcount_bits=3", "not a power of two")):
        r = run([qimg, "amend", "-o", opts, img])
        lines = [l for l in r.stderr.splitlines() if l.startswith("qimg: ")]
        if r.returncode != 1 or not lines:
            FAILURES.append(f"amend -o {opts} ({why}): expected exit 1 with a qimg: message, got {r.returncode} {r.stderr!r}")
        elif open(img, "rb").read() != before:
            FAILURES.append(f"amend -o {opts} ({why}): failed but modified the image")
    # A shared cluster (refcount 2, from the snapshot) does not fit 1-bit refcounts:
    # refused with qemu-img's message, the image untouched.
    theirs = os.path.join(d, "theirs.qcow2")
    shutil.copy(img, theirs)
    q = run(["qemu-img", "amend", "-o", "refcount_bits=1", theirs])
    r = run([qimg, "amend", "-o", "refcount_bits=1", img])
    want = q.stderr.strip().removeprefix("qemu-img: ")
    got = r.stderr.strip().removeprefix(f"qimg: {img}: ")
    if q.returncode != 1 or r.returncode != 1 or got != want or not want.startswith("Cannot decrease"):
        FAILURES.append(f"amend -o refcount_bits=1 with a snapshot: qemu-img {q.returncode} {q.stderr!r}, "
                        f"qimg {r.returncode} {r.stderr!r}")
    elif open(img, "rb").read() != before:
        FAILURES.append("amend -o refcount_bits=1 with a snapshot: failed but modified the image")
    small = os.path.join(d, "small.qcow2")
    must(["qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", small, "1M"])
    r = run([qimg, "amend", "-o", "extended_l2=on", small])
    if r.returncode != 1:
        FAILURES.append("extended_l2=on with 4k clusters must fail")
    print("ok   error cases")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True)
    qimg = os.path.abspath(ap.parse_args().qimg)
    qimgtest.require_tools("qemu-img", "qemu-io")
    for name, (opts, _, _) in IMAGES.items():
        for amend, applies, qemu_supported in AMENDS:
            shared = name in SNAPSHOT_IMAGES or any(w.startswith("write -c") for w in IMAGES[name][2])
            if not applies(opts) or (amend == "refcount_bits=1" and shared):
                continue
            d = tempfile.mkdtemp(prefix="qimg-amend-")
            try:
                amend_case(qimg, d, name, amend, qemu_supported)
            except RuntimeError as e:
                FAILURES.append(f"{name} amend {amend}: {e}")
            finally:
                shutil.rmtree(d, ignore_errors=True)
    d = tempfile.mkdtemp(prefix="qimg-amend-")
    try:
        errors_case(qimg, d)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if FAILURES:
        print("\n".join("FAIL " + f for f in FAILURES))
        return 1
    print("all amend cases passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
