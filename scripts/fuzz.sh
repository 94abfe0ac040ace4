#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each.
# Usage: scripts/fuzz.sh ci                    (what scripts/test.sh and CI run)
#        scripts/fuzz.sh [SECONDS_PER_TARGET]  (exploration, default 30)
# "ci" is a bounded run: seed 1 and a fixed number of inputs per target (about 30 s each
# here), starting from testdata/fuzz-seeds alone in a fresh build-fuzz/ci-corpus/, so its
# work does not depend on the machine's speed. It is not bit-for-bit replayable (libFuzzer's
# mutations also feed on comparison operands, which include addresses and timing of corpus
# updates): a red run is reproduced from the artifact it saves. Finding new defects is the
# job of the exploration runs: scripts/fuzz.sh 3600 (one hour per target, one after the other), or
# PARALLEL=1 NICE=19 scripts/fuzz.sh 3600 (all at once, in the background of other work;
# TARGETS="fuzz_check" picks targets, TIMEOUT=N sets libFuzzer's per-input limit, default 20 s);
# their corpora grow in build-fuzz/corpus/<target>; every finding becomes a regression seed in
# testdata/fuzz-seeds (regress-*), which every run replays first.
# Findings land in build-fuzz/<target>-crash-* etc.
# The targets check oracles (read-after-write, a clean repair stays clean, no internal
# errors) besides crashes; afterwards tests/fuzz/repair_corpus.py has qemu-img judge
# fuzz_check's corpus after qimg's repairs (needs build/qimg).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-30}
CORPUS=build-fuzz/corpus
if [ "$MODE" = ci ]; then
  CORPUS=build-fuzz/ci-corpus
  rm -rf "$CORPUS"
fi
# Inputs per target in the ci run (about 30 s each on the 2-core CI machine under ASan).
declare -A CI_RUNS=([fuzz_header]=800000 [fuzz_open_read]=20000 [fuzz_check]=10000 [fuzz_map]=50000)
TARGETS=${TARGETS:-"fuzz_header fuzz_open_read fuzz_check fuzz_map"}
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQIMG_FUZZ=ON \
  -DQIMG_TESTS=OFF -DQIMG_EXAMPLES=OFF > build-fuzz.log 2>&1 || { cat build-fuzz.log; exit 1; }
# shellcheck disable=SC2086
ninja -C build-fuzz $TARGETS >> build-fuzz.log 2>&1 || { tail -50 build-fuzz.log; exit 1; }
export ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

run_one() { # target -> exit status of libFuzzer
  local t=$1
  local limit
  if [ "$MODE" = ci ]; then limit="-seed=1 -runs=${CI_RUNS[$t]} -reload=0"; else limit="-max_total_time=$MODE"; fi
  mkdir -p "$CORPUS/$t"
  # -rss_limit_mb bounds memory: a hostile image must not make us allocate more (see docs/reliability.md).
  # shellcheck disable=SC2086
  nice -n "${NICE:-0}" "./build-fuzz/tests/fuzz/$t" $limit -rss_limit_mb=1024 -timeout="${TIMEOUT:-20}" \
    -max_len=262144 -artifact_prefix="build-fuzz/$t-" "$CORPUS/$t" testdata/fuzz-seeds \
    > "build-fuzz/$t.log" 2>&1
}

report() { # target status
  if [ "$2" = 0 ]; then
    echo "fuzz $1: $(grep -E '^#[0-9]+.*(DONE|pulse)' "build-fuzz/$1.log" | tail -1)"
  else
    echo "fuzz $1: FAILED (artifact in build-fuzz/)"; tail -40 "build-fuzz/$1.log"
  fi
}

fail=0
if [ "${PARALLEL:-0}" = 1 ]; then
  declare -A pids
  for t in $TARGETS; do run_one "$t" & pids[$t]=$!; done
  for t in $TARGETS; do
    st=0; wait "${pids[$t]}" || st=$?
    report "$t" "$st"; [ "$st" = 0 ] || fail=1
  done
else
  for t in $TARGETS; do
    st=0; run_one "$t" || st=$?
    report "$t" "$st"; [ "$st" = 0 ] || fail=1
  done
fi
# The repair oracle with qemu-img as the judge, over the seeds and what fuzz_check saved.
if [ -x build/qimg ]; then
  python3 tests/fuzz/repair_corpus.py --qimg build/qimg testdata/fuzz-seeds "$CORPUS/fuzz_check" || fail=1
else
  echo "fuzz: build/qimg is missing (build it first: scripts/test.sh does)"; fail=1
fi
exit $fail
