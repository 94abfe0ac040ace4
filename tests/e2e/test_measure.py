#!/usr/bin/env python3
"""qimg measure against qemu-img measure: identical stdout (human and JSON),
exit status and error text (see qemu_diff.py) on

- --size alone: every cluster size 512..2M x every refcount width 1..64 x
  extended L2 off/on (invalid combinations included), at two sizes;
- sizes: empty, unaligned, huge, the exact L1-table limits of several
  geometries and one past them, 8 EiB-1, values qemu-img rejects (8E, 16E,
  negative, malformed);
- creation options: preallocation x compat x extended L2, backing_file,
  options qemu-img measure accepts and ignores, options it rejects, -o given
  twice, host file options (nocow, extent_size_hint);
- usage errors (both --size and a file, neither, two files, -f/-l without a
  file, bad --output, unknown -O).

Source files are in test_measure_sources.py, LUKS targets in
test_measure_luks.py (qemu-img takes seconds for each)."""
import sys

from qemu_diff import Differ, must, run_test

CLUSTER_SIZES = ["512", "1k", "2k", "4k", "8k", "16k", "32k", "64k", "128k", "256k", "512k", "1M", "2M"]
REFCOUNT_BITS = [1, 2, 4, 8, 16, 32, 64]


def size_cases(d: Differ):
    # The whole geometry product, at a large and at an unaligned size.
    n = 0
    for size in ("1T", "5000000013"):
        for cs in CLUSTER_SIZES:
            for rb in REFCOUNT_BITS:
                for el2 in ("off", "on"):
                    opts = f"cluster_size={cs},refcount_bits={rb},extended_l2={el2}"
                    d.add("geometry", "measure", ["--output=json", "-O", "qcow2", "-o", opts, "--size", size])
                    n += 1
                    if n % 7 == 0:  # human output on a seventh of them
                        d.add("geometry", "measure", ["-O", "qcow2", "-o", opts, "--size", size])
    # Sizes, including the largest each geometry's L1 table can map (2^61 with 2M
    # clusters, 2^51 with 64k, 2^50 with 64k extended L2) and one byte more.
    sizes = ["0", "1", "511", "512", "513", "65535", "1.5G", "0x12345", "1k", "3T", "256T", "1P", "1125899906842625",
             "2P", "2251799813685249", "2E", "2305843009213693953", "7E", "9223372036854775807", "8E", "16E",
             "9223372036854775808", "-1", "abc", "1x", ""]
    targets = [[], ["-O", "raw"], ["-O", "qcow2"], ["-O", "qcow2", "-o", "cluster_size=512"],
               ["-O", "qcow2", "-o", "cluster_size=2M"], ["-O", "qcow2", "-o", "extended_l2=on"],
               ["-O", "qcow2", "-o", "cluster_size=2M,extended_l2=on,refcount_bits=64"]]
    for size in sizes:
        for i, t in enumerate(targets):
            d.add("size", "measure", ["--output=json", *t, "--size", size])
            if i in (1, 6):
                d.add("size", "measure", [*t, "--size", size])


def option_cases(d: Differ):
    for prealloc in ("off", "metadata", "falloc", "full"):
        for compat in ("0.10", "1.1"):
            for el2 in ("off", "on"):
                for out in ([], ["--output=json"]):
                    d.add("options", "measure", [*out, "-O", "qcow2", "-o",
                                                 f"preallocation={prealloc},compat={compat},extended_l2={el2}",
                                                 "--size", "10G"])
    accepted = ["backing_file=base.qcow2", "backing_file=x,backing_fmt=raw", "lazy_refcounts=on,compat=0.10",
                "compression_type=zstd", "compat=0.10,compression_type=zstd", "encrypt.format=aes", "encryption=on",
                "encrypt.cipher-alg=foo", "data_file=d.raw", "data_file_raw=on", "nocow=on", "extent_size_hint=1M",
                "size=3G", "refcount_bits=0x10", "cluster_size=4k,preallocation=full", "encrypt.format=foo"]
    for o in accepted:
        d.add("options", "measure", ["-O", "qcow2", "-o", o, "--size", "1G"])
    rejected = ["foo=bar", "help", "?", "cluster_size=1000", "cluster_size=256", "cluster_size=4M", "cluster_size=abc",
                "compat=v3", "compat=1.0", "compat=0.10,refcount_bits=8", "refcount_bits=3", "refcount_bits=128",
                "refcount_bits=0", "refcount_bits=x", "preallocation=foo", "extended_l2=on,cluster_size=8k",
                "extended_l2=maybe", "lazy_refcounts=2", "nocow=x", "extent_size_hint=-1", "size=abc",
                "cluster_size=1000,compat=v3", "encrypt.format=luks", "encrypt.format=luks,encrypt.key-secret=nope"]
    for o in rejected:
        d.add("options", "measure", ["-O", "qcow2", "-o", o, "--size", "1G"])
    for o in ("preallocation=full", "preallocation=metadata", "preallocation=foo", "nocow=on",
              "extent_size_hint=64k", "size=2G", "cluster_size=64k", "help"):
        d.add("raw options", "measure", ["-O", "raw", "-o", o, "--size", "1G"])
    d.add("options twice", "measure", ["-O", "qcow2", "-o", "cluster_size=4k", "-o", "cluster_size=8k,refcount_bits=1",
                                       "--size", "1G"])
    d.add("size option without --size", "measure", ["-O", "qcow2", "-o", "size=1G"])


def usage_cases(d: Differ):
    for args in ([], ["--size", "1G", "raw.img"], ["raw.img", "raw.img"], ["-f", "raw", "--size", "1G"],
                 ["-l", "snap", "--size", "1G"], ["--output=xml", "--size", "1G"], ["--size", "1G", "-O", "foo"],
                 ["--size", "1G", "-O", "qcow2", "--output=json", "--output=human"], ["-O", "qcow", "nosuchfile"],
                 ["nosuchfile"], ["-f", "qcow2", "raw.img"], ["-l", "snap", "raw.img"],
                 ["--object", "secret,id=s0,data=x", "--size", "1M"], ["-U", "--size", "1G"]):
        d.add("usage", "measure", args)


def add_cases(d: Differ, dir_):
    must(["qemu-img", "create", "-f", "raw", "raw.img", "1M"], cwd=dir_)
    size_cases(d)
    option_cases(d)
    usage_cases(d)


if __name__ == "__main__":
    sys.exit(run_test("measure", add_cases))
