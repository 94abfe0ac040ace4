#!/usr/bin/env python3
"""qimg measure against qemu-img measure for LUKS-encrypted qcow2 targets
(encrypt.format=luks): the LUKS header and key material qemu-img would write
for several ciphers, modes and cluster sizes, with --size and with a source
file, and qemu-img's errors for bad encrypt.* values and a missing or unknown
secret. Same comparison as test_measure.py (qemu_diff.py).

qemu-img creates a throw-away LUKS header to size it, timing PBKDF2 first,
which takes seconds per case; encrypt.iter-time=100 keeps that short (the
sizes do not depend on it)."""
import os
import sys

from qemu_diff import Differ, must, qemu_io, run_test


def add_cases(d: Differ, dir_):
    with open(os.path.join(dir_, "pass"), "w") as f:
        f.write("secret passphrase")
    must(["qemu-img", "create", "-f", "qcow2", "src.qcow2", "8M"], cwd=dir_)
    qemu_io(dir_, "src.qcow2", ["write -P 1 0 1M", "write -P 2 5M 64k"])
    secret = ["--object", "secret,id=s0,file=pass"]
    luks = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=100"
    for out, opts, what in (
            (["--output=json"], "", ["--size", "1G"]),
            ([], "", ["--size", "1G"]),
            (["--output=json"], ",encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,"
                                "cluster_size=512", ["--size", "10M"]),
            (["--output=json"], ",encrypt.cipher-alg=aes-192,cluster_size=4k", ["--size", "3G"]),
            (["--output=json"], ",encrypt.cipher-alg=twofish-256,cluster_size=2M,extended_l2=on", ["src.qcow2"]),
            (["--output=json"], ",encrypt.cipher-alg=serpent-128,encrypt.hash-alg=sha512", ["src.qcow2"])):
        d.add("luks", "measure", [*secret, *out, "-O", "qcow2", "-o", luks + opts, *what])
    for bad in ("encrypt.format=luks", "encrypt.format=luks,encrypt.key-secret=nope",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-alg=foo",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.cipher-mode=gcm",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.ivgen-alg=random",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.hash-alg=sha3",
                "encrypt.format=luks,encrypt.cipher-alg=foo"):
        d.add("luks errors", "measure", [*secret, "-O", "qcow2", "-o", bad, "--size", "1G"])


if __name__ == "__main__":
    # Two workers: qemu-img's PBKDF2 timing needs the CPU to itself.
    sys.exit(run_test("LUKS measure", add_cases, workers=2))
