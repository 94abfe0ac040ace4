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
# A sanitizer report exits 66, which no qimg path uses (ctest sets the same for each test).
set -a
# shellcheck source=tests/sanitizer.env
source tests/sanitizer.env
set +a
ctest --test-dir build-asan -j"$JOBS" --output-on-failure

echo "== fuzz targets, ${FUZZ_SECONDS:-30} s each (build-fuzz/, clang + ASan/UBSan)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-30}"

echo "== all tests passed (build/, build-asan/, fuzzing)"
