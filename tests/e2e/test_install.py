#!/usr/bin/env python3
"""`cmake --install` and the installed library as a product.

Configures, builds and installs this source tree into a fresh temporary
prefix (its own build directory under /tmp, -DQIMG_TESTS=OFF, Ninja, -O0 to
keep the build short), checks the installed layout (qimg, libqimg-qcow.a and
.so, headers, CMake package QimgQcow, qimg-qcow.pc, man page, completions) and
that no installed path is one that Debian's libyal libqcow packages own (or
would be found by `-lqcow` / `pkg-config qcow`), then builds the consumer in
tests/consumer/ (copied out of the source tree) against that prefix only, four
ways:

- find_package(QimgQcow), linking qimg::qcow (static; the config must find
  zlib, zstd, OpenSSL and fmt itself),
- find_package(QimgQcow), linking qimg::qcow_shared,
- pkg-config `qimg-qcow` (-lqimg-qcow: the shared library),
- pkg-config --static with libqimg-qcow.a named explicitly (Libs.private
  complete),

and runs each on an extended-L2 image made by qemu-img and written by qemu-io.
One project build serves all four. The temp directory is removed on success
and kept (and printed) on failure.

In a sanitizer build (QIMG_SANITIZE=ON next to --qimg) the test skips itself
(exit 77, which ctest reports as Skipped): the install it checks does not
depend on the flavour, and the plain build runs it.

Usage: test_install.py --qimg PATH
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
import qimgtest  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(os.path.dirname(HERE))
CONSUMER_DIR = os.path.join(SOURCE_DIR, "tests", "consumer")
BUILD_TIMEOUT = 900
STEP_TIMEOUT = 120

# Installed names (libqcow/CMakeLists.txt): chosen so that none is a file of a Debian package.
LIB_NAME = "libqimg-qcow"      # libqimg-qcow.a, libqimg-qcow.so[.MAJOR.MINOR[.PATCH]]
PC_NAME = "qimg-qcow"          # lib/pkgconfig/qimg-qcow.pc
CMAKE_PACKAGE = "QimgQcow"     # lib/cmake/QimgQcow/QimgQcowConfig.cmake; targets qimg::qcow*

# Every file that Debian 12 (bookworm)'s libyal libqcow packages install, version
# 20201213-1+b2 (`apt-get download libqcow1 libqcow-dev libqcow-utils python3-libqcow`,
# then `dpkg -c`), relative to /usr with the multiarch directory dropped
# (lib/x86_64-linux-gnu/ -> lib/) and man pages without .gz. An installed qimg file
# at one of these paths would make qimg and those packages uninstallable together.
DEBIAN_LIBQCOW_FILES = frozenset("""
lib/libqcow.so.1.0.0
lib/libqcow.so.1
lib/libqcow.so
lib/libqcow.a
lib/pkgconfig/libqcow.pc
include/libqcow.h
include/libqcow/codepage.h
include/libqcow/definitions.h
include/libqcow/error.h
include/libqcow/extern.h
include/libqcow/features.h
include/libqcow/types.h
share/man/man3/libqcow.3
bin/qcowinfo
bin/qcowmount
share/man/man1/qcowinfo.1
lib/python3/dist-packages/pyqcow.cpython-311-x86_64-linux-gnu.so
""".split())
# Names that clash whatever Debian's version: `-lqcow` (any libqcow.a / libqcow.so*),
# `pkg-config qcow` or `pkg-config libqcow`, and libyal's header directory.
CLASHING_NAME = re.compile(r"(^|/)(libqcow\.(a|so)(\.[0-9.]*)?|qcow\.pc|libqcow\.pc|libqcow\.h)$|(^|/)include/libqcow/")

# (name, extra cmake arguments, the consumer must load libqimg-qcow.so from the prefix)
VARIANTS = (
    ("cmake-static", ["-DCONSUMER_MODE=cmake", "-DCONSUMER_QCOW_TARGET=qimg::qcow"], False),
    ("cmake-shared", ["-DCONSUMER_MODE=cmake", "-DCONSUMER_QCOW_TARGET=qimg::qcow_shared"], True),
    ("pkgconfig", ["-DCONSUMER_MODE=pkgconfig"], True),
    ("pkgconfig-static", ["-DCONSUMER_MODE=pkgconfig-static"], False),
)


class Failed(Exception):
    pass


def run(argv, cwd=None, env=None, timeout=STEP_TIMEOUT, log=None):
    """Runs argv; returns stdout. Raises Failed with the output tail on error."""
    t0 = time.monotonic()
    try:
        rc, out, _ = qimgtest.run_killable(argv, cwd=cwd, env=env, timeout=timeout, merge_stderr=True)
    except subprocess.TimeoutExpired:
        raise Failed(f"`{' '.join(argv)}` timed out after {timeout}s")
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(argv)}\n{out}\n")
    print(f"  [{time.monotonic() - t0:5.1f}s] {' '.join(argv)} -> rc={rc}")
    if rc != 0:
        tail = "\n".join(out.splitlines()[-25:])
        raise Failed(f"`{' '.join(argv)}` exited {rc}:\n{tail}")
    return out


def sanitizer_build(qimg: str) -> bool:
    cache = os.path.join(os.path.dirname(os.path.abspath(qimg)), "CMakeCache.txt")
    try:
        return "QIMG_SANITIZE:BOOL=ON" in open(cache).read()
    except OSError:
        return False


def project_version() -> str:
    text = open(os.path.join(SOURCE_DIR, "CMakeLists.txt")).read()
    m = re.search(r"project\(\s*qimg\s+VERSION\s+([0-9.]+)", text)
    if not m:
        raise Failed("no project(qimg VERSION ...) in CMakeLists.txt")
    return m.group(1)


def clean_env(**extra) -> dict:
    """The environment minus anything that could point a build at another install."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CMAKE_PREFIX_PATH", "PKG_CONFIG_PATH", "PKG_CONFIG_LIBDIR", "LD_LIBRARY_PATH",
                        "CMAKE_GENERATOR", "CMAKE_BUILD_TYPE", "CXXFLAGS", "LDFLAGS")
           and not k.startswith(("ASAN_", "UBSAN_", "LSAN_"))}
    env.update(extra)
    return env


def as_usr_path(rel: str) -> str:
    """An installed path relative to the prefix as Debian's lists name it under /usr:
    lib/<multiarch>/ and lib64/ become lib/, man pages lose .gz."""
    rel = re.sub(r"^lib/[a-z0-9_]+-linux-gnu[a-z0-9_]*/", "lib/", rel)
    rel = re.sub(r"^lib64/", "lib/", rel)
    if rel.startswith("share/man/") and rel.endswith(".gz"):
        rel = rel[:-3]
    return rel


def debian_clashes(installed) -> list:
    """The installed paths (relative to the prefix) that a Debian package owns or that
    `-lqcow` / `pkg-config qcow` / `pkg-config libqcow` would find."""
    out = []
    for rel in installed:
        usr = as_usr_path(rel)
        if usr in DEBIAN_LIBQCOW_FILES or CLASHING_NAME.search(usr):
            out.append(rel)
    return sorted(out)


def check_no_debian_clash(prefix: str) -> None:
    # The check itself must be able to fail: Debian's paths, as a /usr install
    # of the old names would have put them, are all caught.
    old_names = ["lib/x86_64-linux-gnu/libqcow.so", "lib/x86_64-linux-gnu/libqcow.so.0.1",
                 "lib/libqcow.so.0.1.0", "lib64/libqcow.a", "lib/pkgconfig/qcow.pc",
                 "share/man/man1/qcowinfo.1.gz", "include/libqcow/error.h"]
    if debian_clashes(old_names) != sorted(old_names) or debian_clashes(["lib/libqimg-qcow.so.0.1", "include/qcow/image.hpp"]):
        raise Failed("debian_clashes() does not tell clashing names from ours")
    installed = []
    for root, _dirs, files in os.walk(prefix):
        installed += [os.path.relpath(os.path.join(root, f), prefix) for f in files]
    clashes = debian_clashes(installed)
    if clashes:
        raise Failed(f"installed paths clash with Debian's libqcow packages (libyal): {clashes}")
    print(f"  no Debian libqcow clash: {len(installed)} installed files checked")


def check_layout(prefix: str, version: str) -> str:
    """Checks the installed files; returns the library directory."""
    libdirs = [os.path.dirname(p) for p in glob.glob(os.path.join(prefix, "lib*", f"{LIB_NAME}.a"))]
    if len(libdirs) != 1:
        raise Failed(f"expected one {LIB_NAME}.a under {prefix}/lib*, found {libdirs}")
    libdir = libdirs[0]
    rel = os.path.relpath(libdir, prefix)
    major, minor, _ = version.split(".")
    want = [
        "bin/qimg",
        f"{rel}/{LIB_NAME}.a", f"{rel}/{LIB_NAME}.so", f"{rel}/{LIB_NAME}.so.{major}.{minor}",
        f"{rel}/{LIB_NAME}.so.{version}",
        f"{rel}/cmake/{CMAKE_PACKAGE}/{CMAKE_PACKAGE}Config.cmake",
        f"{rel}/cmake/{CMAKE_PACKAGE}/{CMAKE_PACKAGE}ConfigVersion.cmake",
        f"{rel}/cmake/{CMAKE_PACKAGE}/{CMAKE_PACKAGE}Targets.cmake",
        f"{rel}/pkgconfig/{PC_NAME}.pc",
        "share/man/man1/qimg.1",
        "share/bash-completion/completions/qimg",
        "share/zsh/vendor-completions/_qimg",
        "share/fish/vendor_completions.d/qimg.fish",
        "include/qcow/version.hpp",
    ]
    headers = sorted(os.path.basename(p) for p in glob.glob(os.path.join(SOURCE_DIR, "libqcow", "include", "qcow", "*.hpp")))
    want += [f"include/qcow/{h}" for h in headers]
    missing = [w for w in want if not os.path.exists(os.path.join(prefix, w))]
    if missing:
        raise Failed(f"not installed: {missing}")
    # Nothing private leaks into the installed headers.
    for h in glob.glob(os.path.join(prefix, "include", "qcow", "*.hpp")):
        text = open(h).read()
        for private in ("zlib.h", "zstd.h", "openssl/", "fmt/", "CLI/", "nlohmann/"):
            if private in text:
                raise Failed(f"installed header {h} includes {private}")
    print(f"  layout ok: {len(want)} files, libdir {rel}")
    return libdir


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qimg", required=True, help="the tested build's qimg (only used to detect sanitizer builds)")
    ap.add_argument("--jobs", type=int, default=2)
    a = ap.parse_args()
    if sanitizer_build(a.qimg):
        qimgtest.skip("sanitizer build (the install is checked by the plain build)")
    qimgtest.require_tools("cmake", "ninja", "pkg-config", "ldd", "qemu-img", "qemu-io")

    work = tempfile.mkdtemp(prefix="qimg-install-")
    log = os.path.join(work, "log.txt")
    try:
        version = project_version()
        build, prefix = os.path.join(work, "build"), os.path.join(work, "prefix")
        env = clean_env()
        tested_build = os.path.dirname(os.path.abspath(a.qimg))
        if os.path.exists(os.path.join(tested_build, "CMakeCache.txt")) and not os.environ.get("QIMG_INSTALL_FRESH_BUILD"):
            # Install the build under test (already built by the test run): the check is what
            # `cmake --install` puts in the prefix and whether a consumer builds from it alone.
            print(f"== install {tested_build} into {prefix}")
            run(["cmake", "--build", tested_build, "-j", str(a.jobs)], env=env, timeout=BUILD_TIMEOUT, log=log)
            run(["cmake", "--install", tested_build, "--prefix", prefix], env=env, log=log)
        else:
            print(f"== build and install {SOURCE_DIR} into {prefix}")
            run(["cmake", "-S", SOURCE_DIR, "-B", build, "-G", "Ninja", f"-DCMAKE_INSTALL_PREFIX={prefix}",
                 "-DQIMG_TESTS=OFF", "-DQIMG_EXAMPLES=OFF", "-DQIMG_SANITIZE=OFF",
                 "-DCMAKE_BUILD_TYPE=Debug", "-DCMAKE_CXX_FLAGS_DEBUG=-O0"], env=env, log=log)
            run(["cmake", "--build", build, "-j", str(a.jobs)], env=env, timeout=BUILD_TIMEOUT, log=log)
            run(["cmake", "--install", build], env=env, log=log)
        libdir = check_layout(prefix, version)
        check_no_debian_clash(prefix)

        out = run([os.path.join(prefix, "bin", "qimg"), "--version"], env=env)
        if version not in out:
            raise Failed(f"installed qimg --version printed {out!r}, want {version}")

        print("== test image (qemu-img, qemu-io)")
        image = os.path.join(work, "el2.qcow2")
        run(["qemu-img", "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=64k", image, "8M"])
        run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 66k 10k", image])

        # The consumer is copied out so nothing in the source tree is reachable.
        consumer_src = os.path.join(work, "consumer-src")
        shutil.copytree(CONSUMER_DIR, consumer_src)
        # The prefix comes first; the system's .pc files stay visible because
        # QimgQcowConfig.cmake finds libzstd (a private dependency) with pkg-config.
        consumer_env = clean_env(PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))
        pcfiledir = run(["pkg-config", "--variable=pcfiledir", PC_NAME], env=consumer_env).strip()
        if os.path.realpath(pcfiledir) != os.path.realpath(os.path.join(libdir, "pkgconfig")):
            raise Failed(f"pkg-config finds {PC_NAME}.pc in {pcfiledir}, not in the prefix")
        libs = run(["pkg-config", "--libs-only-l", PC_NAME], env=consumer_env).split()
        if libs != ["-lqimg-qcow"]:
            raise Failed(f"pkg-config --libs-only-l {PC_NAME} says {libs}, want -lqimg-qcow")
        for name, args, shared in VARIANTS:
            print(f"== consumer: {name}")
            b = os.path.join(work, f"consumer-{name}")
            run(["cmake", "-S", consumer_src, "-B", b, "-G", "Ninja", f"-DCMAKE_PREFIX_PATH={prefix}",
                 "-DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF", *args], env=consumer_env, log=log)
            run(["cmake", "--build", b], env=consumer_env, log=log)
            exe = os.path.join(b, "consumer")
            out = run([exe, image, "0x10800", "0x2800", "0x5a"], env=clean_env())
            if "ok:" not in out or f"libqcow {version}" not in out:
                raise Failed(f"{name}: unexpected consumer output {out!r}")
            if name.startswith("cmake"):
                cache = open(os.path.join(b, "CMakeCache.txt")).read()
                if f"{CMAKE_PACKAGE}_DIR:PATH={libdir}/cmake/{CMAKE_PACKAGE}" not in cache:
                    raise Failed(f"{name}: find_package({CMAKE_PACKAGE}) did not use {libdir}/cmake/{CMAKE_PACKAGE}")
            ldd = run(["ldd", exe])
            if "libqcow." in ldd:
                raise Failed(f"{name}: needs a libqcow.so (libyal's name):\n{ldd}")
            uses = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if LIB_NAME in line]
            if shared and (len(uses) != 1 or not uses[0].startswith(libdir)):
                raise Failed(f"{name}: should load {LIB_NAME}.so from {libdir}, ldd says {uses}")
            if not shared and uses:
                raise Failed(f"{name}: linked statically but loads {uses}")
            print(f"  {out.strip().splitlines()[-1]}; libqcow: {'shared ' + uses[0] if uses else 'static'}")
    except Failed as e:
        print(f"FAIL: {e}")
        print(f"kept work directory: {work} (commands and output in {log})")
        return 1
    shutil.rmtree(work, ignore_errors=True)
    print("\ninstall and consumer checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
