#!/usr/bin/env bash
# qimg map vs qemu-img map on the three layouts of issue 5, timed alternately in one run.
# Usage: bench/map-vs-qemu.sh [QIMG] [WORKDIR]   (needs ~9 GiB free in WORKDIR while building images)
# Env: RUNS (pairs per image, default 5), IMAGES (default "c4k-64g el2-128k-8g c64k-8g"). Who goes first alternates from pair to pair; the ratio
# is the median of the per-pair qimg/qemu-img wall ratios, printed with their min..max.
set -euo pipefail
QIMG=${1:-build/qimg}; QIMG=$(readlink -f "$QIMG")
WORK=${2:-/tmp/qimg-map-bench}
RUNS=${RUNS:-5}
mkdir -p "$WORK"; cd "$WORK"

# A sparse raw file with `len` bytes of data every `step` bytes, written by seeking (fast, deterministic).
sparse_raw() { # file size step len
  python3 - "$@" <<'PY'
import os, sys
path, size, step, length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
buf = bytes([0x5a]) * length
fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
os.ftruncate(fd, size)
for off in range(0, size, step):
    os.pwrite(fd, buf, off)
os.close(fd)
PY
}

make_image() { # name size step len qcow2-options
  [ -f "$1.qcow2" ] && return
  echo "building $1 ..." >&2
  sparse_raw "$1.raw" "$2" "$3" "$4"
  qemu-img convert -f raw -O qcow2 -o "$5" "$1.raw" "$1.qcow2"
  rm -f "$1.raw"
}

IMAGES=${IMAGES:-c4k-64g el2-128k-8g c64k-8g}
wanted() { [[ " $IMAGES " == *" $1 "* ]]; }
wanted c4k-64g && make_image c4k-64g $((64 << 30)) $((64 << 10)) 4096 cluster_size=4k
wanted el2-128k-8g && make_image el2-128k-8g $((8 << 30)) $((8 << 10)) 4096 cluster_size=128k,extended_l2=on
wanted c64k-8g && make_image c64k-8g $((8 << 30)) $((128 << 10)) 65536 cluster_size=64k

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-14s %8s %8s %8s %7s %-12s %10s %10s\n' image lines qemu_s qimg_s ratio min..max qemu_rss qimg_rss
for img in $IMAGES; do
  : > q.t; : > i.t
  for r in $(seq "$RUNS"); do
    if [ $((r % 2)) = 1 ]; then
      /usr/bin/time -f "%e %M" -o q.one qemu-img map --output=json "$img.qcow2" > q.json; cat q.one >> q.t
      /usr/bin/time -f "%e %M" -o i.one "$QIMG" map --output=json "$img.qcow2" > i.json; cat i.one >> i.t
    else
      /usr/bin/time -f "%e %M" -o i.one "$QIMG" map --output=json "$img.qcow2" > i.json; cat i.one >> i.t
      /usr/bin/time -f "%e %M" -o q.one qemu-img map --output=json "$img.qcow2" > q.json; cat q.one >> q.t
    fi
    cmp -s q.json i.json || echo "WARNING: $img: outputs differ (pair $r)" >&2
  done
  ratios=$(paste -d' ' i.t q.t | awk '{print ($3 > 0) ? $1 / $3 : 0}')
  printf '%-14s %8s %8s %8s %7.3f %-12s %8sKB %8sKB\n' "$img" "$(wc -l < q.json)" "$(cut -d' ' -f1 q.t | median)" \
    "$(cut -d' ' -f1 i.t | median)" "$(median <<< "$ratios")" \
    "$(sort -g <<< "$ratios" | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%.2f..%.2f", lo, hi}')" \
    "$(cut -d' ' -f2 q.t | sort -n | tail -1)" "$(cut -d' ' -f2 i.t | sort -n | tail -1)"
done
