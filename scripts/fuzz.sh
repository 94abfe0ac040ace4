#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a fixed time.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30; CI uses the default)
# Long runs: SECONDS=3600 scripts/fuzz.sh 3600 ; corpora grow in build-fuzz/corpus/<target>.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-30}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQIMG_FUZZ=ON \
  -DQIMG_TESTS=OFF -DQIMG_EXAMPLES=OFF > build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
ninja -C build-fuzz fuzz_header fuzz_open_read fuzz_check fuzz_map >> build-fuzz.log 2>&1 || { tail -50 build-fuzz.log; exit 1; }
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fail=0
for t in fuzz_header fuzz_open_read fuzz_check fuzz_map; do
  mkdir -p "build-fuzz/corpus/$t"
  # -rss_limit_mb bounds memory: a hostile image must not make us allocate more (see docs/reliability.md).
  if ./build-fuzz/tests/fuzz/$t -max_total_time="$SECS" -rss_limit_mb=1024 -timeout=20 -max_len=262144 \
       -artifact_prefix="build-fuzz/$t-" "build-fuzz/corpus/$t" testdata/fuzz-seeds > "build-fuzz/$t.log" 2>&1; then
    echo "fuzz $t: $(grep -E '^#[0-9]+.*(DONE|pulse)' "build-fuzz/$t.log" | tail -1)"
  else
    echo "fuzz $t: FAILED (artifact in build-fuzz/)"; tail -40 "build-fuzz/$t.log"; fail=1
  fi
done
exit $fail
