#!/usr/bin/env bash
# Builds qimg and runs the whole test suite twice: a normal build (build/) and an
# AddressSanitizer + UndefinedBehaviorSanitizer build (build-asan/).
# Unit tests, end-to-end tests, crash replays and the QEMU interoperability matrix run via
# ctest (the sanitizer build skips the matrix and judges fewer crash states);
# then each libFuzzer target fuzzes a fixed, seeded number of inputs under ASan/UBSan (about
# 30 s each: `scripts/fuzz.sh ci`), or for FUZZ_SECONDS each when that is set.
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
# Fewer crash states per workload here: the plain build judges 60 per workload; this run is
# for what the sanitizers see on the same paths.
cmake -S . -B build-asan -G Ninja -DQIMG_SANITIZE=ON -DQIMG_CRASH_STATES=20
cmake --build build-asan -j"$JOBS"
echo "== ctest (build-asan/)"
# A sanitizer report exits 66, which no qimg path uses (ctest sets the same for each test).
set -a
# shellcheck source=tests/sanitizer.env
source tests/sanitizer.env
set +a
# The interop matrix (120 cases, most of their time is qemu-img's) runs in the plain build;
# qimg's paths in it are exercised under the sanitizers by the e2e tests and the fuzzers.
ctest --test-dir build-asan -j"$JOBS" --output-on-failure -LE interop

echo "== fuzz targets, ${FUZZ_SECONDS:-seeded ci run} (build-fuzz/, clang + ASan/UBSan)"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-ci}"

echo "== all tests passed (build/, build-asan/, fuzzing)"
