#!/usr/bin/env bash
# The recorded crash-consistency run of docs/reliability.md: every workload of
# tests/crash with STATES distinct states each (default 2000), judged by
# qemu-img, then the table. Takes about an hour on 2 cores; run it at nice 19
# beside other work. Usage: bash scripts/crash-report.sh [STATES] [BUILD_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
STATES=${1:-2000}
BUILD=${2:-build}
OUT=${OUT:-$BUILD/crash-results.jsonl}
cmake --build "$BUILD" --target crash_tests >/dev/null
rm -f "$OUT"
start=$(date -u +%FT%TZ)
nice -n "${NICE:-0}" "$BUILD/tests/crash_tests" --states "$STATES" --results "$OUT" all | tee "$BUILD/crash-report.log"
echo "started $start, finished $(date -u +%FT%TZ), $(git rev-parse --short HEAD), states per workload: $STATES"
python3 scripts/crash_table.py "$OUT"
