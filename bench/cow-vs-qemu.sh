#!/usr/bin/env bash
# qimg bench scenarios vs QEMU on the same machine, same patterns:
#   cow-backing, alloc, rewrite: the same random 4 KiB write offsets (qimg's splitmix64
#     shuffle, reproduced below) sent to qemu-io as `write -q` commands on stdin;
#   interleave: qemu-img bench -d 1 with a 8 KiB stride (even, then odd), then a 1 MiB
#     sequential read after dropping the page cache.
# Each configuration is cluster_size 64k/2M x extended_l2 off/on. Prints ops/s of both and
# qimg/QEMU. Two rows per write scenario:
#   write: `qimg bench`'s own loop against qemu-io reading the commands on stdin, QEMU's time
#     being wall time minus the same qemu-io run with no writes (open + flush + close), so both
#     sides count the writes and the final flush;
#   io: whole processes on both sides, `qemu-io -c CMD ...` and `qimg io -c CMD ...` with the
#     same command list on fresh copies of the same image, RUNS pairs, who goes first
#     alternating; ops/s from the median times, the ratio is the median of the per-pair ratios
#     (min..max in the last column).
# Usage: bench/cow-vs-qemu.sh [QIMG] [WORKDIR]
#   env: SIZE (1G), COUNT (16384), CACHE (writeback|none), SEED (1), SCENARIOS, CLUSTERS (one pass each),
#        RUNS (io pairs, default 5)
set -euo pipefail
QIMG=$(readlink -f "${1:-build/qimg}")
WORK=${2:-/tmp/qimg-cow-bench}
SIZE=${SIZE:-1G}; COUNT=${COUNT:-16384}; CACHE=${CACHE:-writeback}; SEED=${SEED:-1}; RUNS=${RUNS:-5}
SCENARIOS=${SCENARIOS:-"cow-backing alloc rewrite interleave"}
CLUSTERS=${CLUSTERS:-"64k 2M"}
mkdir -p "$WORK"; cd "$WORK"
BYTES=$(python3 -c "import sys; u={'k':1<<10,'K':1<<10,'M':1<<20,'G':1<<30}; s=sys.argv[1]; print(int(s[:-1])*u[s[-1]] if s[-1] in u else int(s))" "$SIZE")

# Writes a qemu-io script: the random writes of the scenario, then a flush.
gen_script() { # scenario out
  python3 - "$BYTES" "$COUNT" "$SEED" "$1" > "$2" <<'PY'
import sys
size, count, seed, scenario = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
M = (1 << 64) - 1
state = seed
def nxt():
    global state
    state = (state + 0x9e3779b97f4a7c15) & M
    z = state
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & M
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & M
    return z ^ (z >> 31)
bs = 4096
blocks = size // bs
out = []
if scenario != "empty":
    perm = list(range(blocks))
    n = min(count, blocks)
    for i in range(n):
        j = i + nxt() % (blocks - i)
        perm[i], perm[j] = perm[j], perm[i]
    out = [f"write -q -P 0x5a {perm[i % n] * bs} 4096" for i in range(count)]
out.append("flush")
print("\n".join(out))
PY
}

fill_raw() { # file: fully written with non-zero data
  python3 - "$1" "$BYTES" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
buf = bytes([0x5a]) * (1 << 20)
for off in range(0, int(sys.argv[2]), 1 << 20):
    os.pwrite(fd, buf, off)
os.fsync(fd); os.close(fd)
PY
}

drop_cache() { python3 -c "import os,sys; fd=os.open(sys.argv[1], os.O_RDONLY); os.fsync(fd); os.posix_fadvise(fd,0,0,os.POSIX_FADV_DONTNEED); os.close(fd)" "$1"; }

now() { date +%s.%N; }

# qemu-io over a script; prints the seconds the script took beyond an empty run.
qemu_io_time() { # image script
  local t0 t1 t2 t3
  t0=$(now); qemu-io -t "$CACHE" -f qcow2 "$1" < "$WORK/empty.io" > /dev/null; t1=$(now)
  t2=$(now); qemu-io -t "$CACHE" -f qcow2 "$1" < "$2" > /dev/null; t3=$(now)
  python3 -c 'import sys; a = [float(x) for x in sys.argv[1:]]; print(max(1e-6, (a[3] - a[2]) - (a[1] - a[0])))' \
    "$t0" "$t1" "$t2" "$t3"
}

qimg_ops() { # scenario options phase [extra args...] -> ops/s of that phase
  local scenario=$1 opts=$2 phase=$3; shift 3
  "$QIMG" bench --scenario "$scenario" -o "$opts" --size "$SIZE" --count "$COUNT" --seed "$SEED" -t "$CACHE" \
    --dir "$WORK" --output=json "$@" |
    python3 -c "import json,sys; d=json.load(sys.stdin); print(next(r['ops_per_sec'] for r in d['runs'] if r['phase']==sys.argv[1]))" "$phase"
}

# Whole-process pairs: prints "qimg_ops qemu_ops median_ratio min..max" (ratio = qimg ops / QEMU ops).
io_pairs() { # template-image script
  local tmpl=$1 r t0 t1 tq ti; local -a cmds=()
  while IFS= read -r line; do cmds+=(-c "$line"); done < "$2"
  : > io.t
  for r in $(seq "$RUNS"); do
    for who in $( [ $((r % 2)) = 1 ] && echo "qemu qimg" || echo "qimg qemu"); do
      cp --sparse=always "$tmpl" io.qcow2
      for f in io.qcow2 backing.raw full.raw; do [ -f "$f" ] && drop_cache "$f"; done
      t0=$(now)
      if [ "$who" = qemu ]; then qemu-io -t "$CACHE" -f qcow2 "${cmds[@]}" io.qcow2 > /dev/null
      else "$QIMG" io -t "$CACHE" -f qcow2 "${cmds[@]}" io.qcow2 > /dev/null; fi
      t1=$(now)
      if [ "$who" = qemu ]; then tq=$(python3 -c "print($t1 - $t0)"); else ti=$(python3 -c "print($t1 - $t0)"); fi
    done
    echo "$ti $tq" >> io.t
  done
  rm -f io.qcow2
  python3 - "$COUNT" io.t <<'PY'
import statistics, sys
count = int(sys.argv[1])
pairs = [tuple(map(float, l.split())) for l in open(sys.argv[2]) if l.strip()]
ratios = sorted(q / i for i, q in pairs)
print(count / statistics.median(i for i, _ in pairs), count / statistics.median(q for _, q in pairs),
      statistics.median(ratios), f"{ratios[0]:.2f}..{ratios[-1]:.2f}")
PY
}

qemu_bench_ops() { # qemu-img bench args... -> ops/s
  local out count
  out=$(qemu-img bench "$@")
  count=$(sed -n 's/^Sending \([0-9]*\) .*/\1/p' <<< "$out")
  awk -v c="$count" '/Run completed in/ {print c / ($4 > 0 ? $4 : 1e-6)}' <<< "$out"
}

gen_script empty empty.io
printf '%-12s %-24s %-10s %12s %12s %8s %s\n' scenario config phase qimg_ops/s qemu_ops/s ratio min..max
for scenario in $SCENARIOS; do
  if [ "$scenario" = cow-backing ] && [ ! -f backing.raw ]; then fill_raw backing.raw; fi
  if [ "$scenario" != interleave ]; then gen_script "$scenario" "$scenario.io"; fi
  for cs in $CLUSTERS; do
    for el2 in off on; do
      opts="cluster_size=$cs,extended_l2=$el2"
      img=q-$scenario-$cs-$el2.qcow2
      rm -f "$img"
      case $scenario in
        cow-backing) qemu-img create -q -f qcow2 -o "$opts" -b backing.raw -F raw "$img" "$SIZE" ;;
        rewrite) [ -f full.raw ] || fill_raw full.raw
                 qemu-img convert -f raw -O qcow2 -o "$opts" full.raw "$img" ;;
        *) qemu-img create -q -f qcow2 -o "$opts" "$img" "$SIZE" ;;
      esac
      # Both sides start with nothing dirty or cached (qimg bench does the same).
      for f in "$img" backing.raw full.raw; do [ -f "$f" ] && drop_cache "$f"; done
      if [ "$scenario" = interleave ]; then
        n=$((BYTES / 8192))
        q1=$(qemu_bench_ops -w -d 1 -t "$CACHE" -s 4k -S 8k -c "$n" "$img")
        q2=$(qemu_bench_ops -w -d 1 -t "$CACHE" -s 4k -S 8k -o 4k -c "$n" "$img")
        drop_cache "$img"
        q3=$(qemu_bench_ops -d 1 -t "$CACHE" -s 1M -c $((BYTES >> 20)) "$img")
        json=$("$QIMG" bench --scenario interleave -o "$opts" --size "$SIZE" -t "$CACHE" --dir "$WORK" --output=json)
        for pair in "write-even $q1" "write-odd $q2" "read $q3"; do
          set -- $pair
          i=$(python3 -c "import json,sys; d=json.loads(sys.argv[2]); print(next(r['ops_per_sec'] for r in d['runs'] if r['phase']==sys.argv[1]))" "$1" "$json")
          printf '%-12s %-24s %-10s %12.0f %12.0f %8.2f\n' "$scenario" "$cs el2=$el2" "$1" "$i" "$2" \
            "$(python3 -c "print($i / max($2, 1e-9))")"
        done
      else
        t=$(qemu_io_time "$img" "$scenario.io")
        q=$(python3 -c "print($COUNT / $t)")
        i=$(qimg_ops "$scenario" "$opts" write)
        printf '%-12s %-24s %-10s %12.0f %12.0f %8.2f\n' "$scenario" "$cs el2=$el2" write "$i" "$q" \
          "$(python3 -c "print($i / max($q, 1e-9))")"
        # The template was written by qemu-io above: start the io pairs from a fresh one.
        rm -f "$img"
        case $scenario in
          cow-backing) qemu-img create -q -f qcow2 -o "$opts" -b backing.raw -F raw "$img" "$SIZE" ;;
          rewrite) qemu-img convert -f raw -O qcow2 -o "$opts" full.raw "$img" ;;
          *) qemu-img create -q -f qcow2 -o "$opts" "$img" "$SIZE" ;;
        esac
        read -r i q ratio range <<< "$(io_pairs "$img" "$scenario.io")"
        printf '%-12s %-24s %-10s %12.0f %12.0f %8.2f %s\n' "$scenario" "$cs el2=$el2" io "$i" "$q" "$ratio" "$range"
      fi
      rm -f "$img"
    done
  done
done
