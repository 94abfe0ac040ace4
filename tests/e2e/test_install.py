#!/usr/bin/env python3
"""`cmake --install` and the installed library as a product.

Configures, builds and installs this source tree into a fresh temporary
prefix (its own build directory under /tmp, -DQIMG_TESTS=OFF, Ninja, -O0 to
keep the build short), checks the installed layout (qimg, libqcow.a and .so,
headers, CMake package, qcow.pc, man page, completions), then builds the
consumer in tests/consumer/ (copied out of the source tree) against that
prefix only, four ways:

- find_package(qcow), linking qcow::qcow (static; the config must find zlib,
  zstd, OpenSSL and fmt itself),
- find_package(qcow), linking qcow::qcow_shared,
- pkg-config `qcow` (-lqcow: the shared library),
- pkg-config --static with libqcow.a named explicitly (Libs.private complete),

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

# (name, extra cmake arguments, the consumer must load libqcow.so from the prefix)
VARIANTS = (
    ("cmake-static", ["-DCONSUMER_MODE=cmake", "-DCONSUMER_QCOW_TARGET=qcow::qcow"], False),
    ("cmake-shared", ["-DCONSUMER_MODE=cmake", "-DCONSUMER_QCOW_TARGET=qcow::qcow_shared"], True),
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


def check_layout(prefix: str, version: str) -> str:
    """Checks the installed files; returns the library directory."""
    libdirs = [os.path.dirname(p) for p in glob.glob(os.path.join(prefix, "lib*", "libqcow.a"))]
    if len(libdirs) != 1:
        raise Failed(f"expected one libqcow.a under {prefix}/lib*, found {libdirs}")
    libdir = libdirs[0]
    rel = os.path.relpath(libdir, prefix)
    major, minor, _ = version.split(".")
    want = [
        "bin/qimg",
        f"{rel}/libqcow.a", f"{rel}/libqcow.so", f"{rel}/libqcow.so.{major}.{minor}", f"{rel}/libqcow.so.{version}",
        f"{rel}/cmake/qcow/qcowConfig.cmake", f"{rel}/cmake/qcow/qcowConfigVersion.cmake",
        f"{rel}/cmake/qcow/qcowTargets.cmake",
        f"{rel}/pkgconfig/qcow.pc",
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
        # qcowConfig.cmake finds libzstd (a private dependency) with pkg-config.
        consumer_env = clean_env(PKG_CONFIG_PATH=os.path.join(libdir, "pkgconfig"))
        pcfiledir = run(["pkg-config", "--variable=pcfiledir", "qcow"], env=consumer_env).strip()
        if os.path.realpath(pcfiledir) != os.path.realpath(os.path.join(libdir, "pkgconfig")):
            raise Failed(f"pkg-config finds qcow.pc in {pcfiledir}, not in the prefix")
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
                if f"qcow_DIR:PATH={libdir}/cmake/qcow" not in cache:
                    raise Failed(f"{name}: find_package(qcow) did not use {libdir}/cmake/qcow")
            ldd = run(["ldd", exe])
            uses = [line.split("=>")[1].split()[0] for line in ldd.splitlines() if "libqcow" in line]
            if shared and (len(uses) != 1 or not uses[0].startswith(libdir)):
                raise Failed(f"{name}: should load libqcow.so from {libdir}, ldd says {uses}")
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
