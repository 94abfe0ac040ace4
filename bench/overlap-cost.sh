#!/usr/bin/env bash
# What the metadata overlap checks cost: qimg bench scenarios with overlap-check=none,
# constant, cached (the default) and all, in alternating order, REPEAT times; prints the
# median ops/s per level and its ratio to none, and callgrind's instruction counts of
# one run per level (deterministic, unlike the wall clock on a shared machine).
# Usage: bash bench/overlap-cost.sh [REPEAT] [QIMG]
set -euo pipefail
REPEAT=${1:-7}
QIMG=${2:-build/qimg}
DIR=$(mktemp -d /tmp/qimg-overlap-cost-XXXXXX)
trap 'rm -rf "$DIR"' EXIT
LEVELS="none constant cached all"
CASES=(
  "alloc|cluster_size=64k|256M|20000"
  "alloc|cluster_size=64k,extended_l2=on|256M|20000"
  "rewrite|cluster_size=64k|256M|20000"
  "alloc|cluster_size=512|1G|20000"
)
for c in "${CASES[@]}"; do
  IFS='|' read -r scenario opts size count <<<"$c"
  declare -A ops=()
  for ((r = 0; r < REPEAT; r++)); do
    order=$LEVELS
    ((r % 2)) && order=$(echo "$LEVELS" | tr ' ' '\n' | tac | tr '\n' ' ')
    for lvl in $order; do
      v=$("$QIMG" bench --scenario "$scenario" --size "$size" -c "$count" -o "overlap-check=$lvl,$opts" \
            --output=json --dir "$DIR" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runs"][0]["ops_per_sec"])')
      ops[$lvl]="${ops[$lvl]:-} $v"
    done
  done
  base=$(echo ${ops[none]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  line="$scenario $opts ($count requests):"
  for lvl in $LEVELS; do
    med=$(echo ${ops[$lvl]} | tr ' ' '\n' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
    insns=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$QIMG" bench --scenario "$scenario" --size "$size" \
              -c "$count" -o "overlap-check=$lvl,$opts" --dir "$DIR" 2>&1 >/dev/null | sed -n 's/.*Collected : //p')
    line+=$(printf ' %s %.0f ops/s (%.3f), %s insns;' "$lvl" "$med" "$(python3 -c "print($med / $base)")" "$insns")
  done
  echo "$line"
  unset ops
done
