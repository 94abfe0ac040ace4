#!/usr/bin/env bash
# Builds qimg and runs the whole test suite twice: a normal build (build/) and an
# AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/).
# Unit tests, end-to-end tests and the QEMU interoperability matrix all run via ctest;
# then each libFuzzer target runs for FUZZ_SECONDS (default 30) under ASan/UBSan.
# Usage: bash scripts/test.sh        (from anywhere; .ci/run runs exactly this)
set -euo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-2}

echo "== configure + build (build/)"
cmake -S . -B build -G Ninja
cmake --build build -j"$JOBS"
echo "== ctest (build/)"
ctest --test-dir build -j"$JOBS" --output-on-failure

echo "== configure + build with sanitizers (build-asan/)"
cmake -S . -B build-asan -G Ninja -DQIMG_SANITIZE=ON
cmake --build build-asan -j"$JOBS"
echo "== ctest (build-asan/)"
export ASAN_OPTIONS=detect_leaks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
ctest --test-dir build-asan -j"$JOBS" --output-on-failure

echo "== fuzz targets, ${FUZZ_SECONDS:-30} s each (build-fuzz/, clang + ASan/UBSan)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "== all tests passed (build/, build-asan/, fuzzing)"
