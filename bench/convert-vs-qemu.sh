#!/usr/bin/env bash
# qimg convert vs qemu-img convert (issue 3), timed alternately, median of per-pair ratios.
# Usage: bench/convert-vs-qemu.sh [QIMG] [WORKDIR]     (needs ~8 GiB free in WORKDIR)
# Env: RUNS (pairs per case, default 5), CASES (space-separated subset of the case names below),
#      QEMU_M (qemu-img -m for the compressed cases; default: the best of 4 8 16, measured once),
#      STATES ("warm cold" by default): warm = the source in the page cache; cold = the source's
#      pages dropped before every run (posix_fadvise DONTNEED on the source file after a sync,
#      which needs no root, unlike /proc/sys/vm/drop_caches, and leaves the rest of the cache).
# The source is a deterministic 2 GiB raw image: ~40% random data, ~20% compressible text,
# ~40% zero runs of varying length (holes). qemu-img gets -W (out-of-order writes) everywhere,
# its fastest setting; qimg runs with its defaults.
# Columns: median wall seconds, median of the per-pair qimg/qemu wall ratios, median CPU seconds
# (user+sys, all threads), peak RSS (largest of the runs).
# The last column lists every pair as ratio(qimg seconds/qemu-img seconds); odd pairs ran qemu-img first.
set -euo pipefail
QIMG=${1:-build/qimg}; QIMG=$(readlink -f "$QIMG")
WORK=${2:-/tmp/qimg-convert-bench}
RUNS=${RUNS:-5}
CASES=${CASES:-"raw-qcow2 qcow2-raw raw-el2-2m qcow2-el2-64k raw-zlib raw-zstd"}
mkdir -p "$WORK"; cd "$WORK"

if [ ! -f src.raw ]; then
  echo "generating src.raw (2 GiB) ..." >&2
  python3 - src.raw <<'PY'
import os, random, sys
SIZE = 2 << 30
rng = random.Random(20240611)
pool = rng.randbytes(64 << 20)                        # random data, sliced at random offsets
words = b"the quick brown fox jumps over lazy dog qcow2 cluster image data block sector".split()
text = b" ".join(rng.choice(words) for _ in range(300000))[: 2 << 20]
fd = os.open(sys.argv[1], os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
os.ftruncate(fd, SIZE)
pos = 0
while pos < SIZE:
    n = min(SIZE - pos, rng.choice((4096, 65536, 1 << 20)) * rng.randint(1, 16) + rng.choice((0, 512, 3000)))
    kind = rng.random()
    if kind < 0.4:                                     # random: incompressible
        while n > 0:
            k = min(n, len(pool) // 2)
            o = rng.randrange(0, len(pool) - k)
            os.pwrite(fd, pool[o:o + k], pos); pos += k; n -= k
        continue
    if kind < 0.6:                                     # text: compressible
        while n > 0:
            k = min(n, len(text) // 2)
            o = rng.randrange(0, len(text) - k)
            os.pwrite(fd, text[o:o + k], pos); pos += k; n -= k
        continue
    pos += n                                           # zero run: a hole
os.close(fd)
PY
fi
[ -f src64k.qcow2 ] || qemu-img convert -f raw -O qcow2 src.raw src64k.qcow2

# case -> "SRC|qemu-img args|qimg args" (the output file is appended to both)
declare -A CASE
CASE[raw-qcow2]="src.raw|-f raw -O qcow2 -W|-f raw -O qcow2"
CASE[qcow2-raw]="src64k.qcow2|-f qcow2 -O raw -W|-f qcow2 -O raw"
CASE[raw-el2-2m]="src.raw|-f raw -O qcow2 -o extended_l2=on,cluster_size=2M -W|-f raw -O qcow2 -o extended_l2=on,cluster_size=2M"
CASE[qcow2-el2-64k]="src64k.qcow2|-f qcow2 -O qcow2 -o extended_l2=on,cluster_size=64k -W|-f qcow2 -O qcow2 -o extended_l2=on,cluster_size=64k"
CASE[raw-zlib]="src.raw|-f raw -O qcow2 -c -o compression_type=zlib -W -m QM|-f raw -O qcow2 -c -o compression_type=zlib"
CASE[raw-zstd]="src.raw|-f raw -O qcow2 -c -o compression_type=zstd -W -m QM|-f raw -O qcow2 -c -o compression_type=zstd"

# Page supply. On this VM, writing 1.2 GB into the page cache costs 0.3 s with pages freed a
# moment ago and 2-3 s (all in copy_folio_from_iter_atomic) with pages freed a few seconds
# earlier, presumably because the host has reclaimed those by then. Deleting the previous
# output just before a run is not enough (whoever runs after the other tool's bigger or
# older output pays), so every timed run starts right after writing and deleting a 1.4 GB
# scratch file: both tools get the same, freshly freed pages.
warm_pages() {
  dd if=/dev/zero of=warm.tmp bs=1M count="${WARM_MB:-1400}" status=none
  rm -f warm.tmp
}

# Drops the source file's pages from the page cache (cold state).
drop_source() {
  python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)' "$1"
}

run() { # label outfile cmd... ; appends "seconds maxrss_kb cpu_seconds" to label.t
  local label=$1 out=$2; shift 2
  rm -f "$out"; sync
  warm_pages
  if [ "$STATE" = cold ]; then drop_source "$SRC"; else cat "$SRC" > /dev/null; fi
  /usr/bin/time -f "%e %M %U %S" -o "$label.one" "$@" "$out" >/dev/null
  awk '{print $1, $2, $3 + $4}' "$label.one" >> "$label.t"
}

if [ -z "${QEMU_M:-}" ] && [[ " $CASES " == *" raw-zlib "* || " $CASES " == *" raw-zstd "* ]]; then
  best=""; QEMU_M=16
  for m in 4 8 16; do
    s=$( { /usr/bin/time -f "%e" qemu-img convert -f raw -O qcow2 -c -W -m $m src.raw m.qcow2 >/dev/null; } 2>&1 | tail -1)
    echo "qemu-img -c -W -m $m: ${s}s" >&2
    if [ -z "$best" ] || awk -v a="$s" -v b="$best" 'BEGIN{exit !(a < b)}'; then best=$s; QEMU_M=$m; fi
  done
  rm -f m.qcow2
fi

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for STATE in ${STATES:-warm cold}; do
echo "== source $STATE"
printf '%-14s %8s %8s %7s %9s %9s %10s %10s %s\n' case qemu_s qimg_s ratio qemu_cpu qimg_cpu qemu_rss qimg_rss check
for c in $CASES; do
  IFS='|' read -r src qargs iargs <<< "${CASE[$c]}"
  SRC=$src
  qargs=${qargs//QM/${QEMU_M:-16}}
  : > q.t; : > i.t
  for r in $(seq "$RUNS"); do
    # Who goes first alternates, so a slow phase of the (shared) machine hits both alike.
    if [ $((r % 2)) = 1 ]; then
      # shellcheck disable=SC2086
      run q "q.$c.out" qemu-img convert $qargs "$src"
      # shellcheck disable=SC2086
      run i "i.$c.out" "$QIMG" convert $iargs "$src"
    else
      # shellcheck disable=SC2086
      run i "i.$c.out" "$QIMG" convert $iargs "$src"
      # shellcheck disable=SC2086
      run q "q.$c.out" qemu-img convert $qargs "$src"
    fi
  done
  ok=$(qemu-img compare -q "$src" "i.$c.out" && echo same || echo DIFFERENT)
  case $c in *raw) ;; *) qemu-img check -q "i.$c.out" || ok="$ok,check-FAILED" ;; esac
  # i.t and q.t lines: wall maxrss cpu; the pair's ratio is qimg wall / qemu-img wall.
  ratio=$(paste -d' ' i.t q.t | awk '{print ($4 > 0) ? $1 / $4 : 0}' | median)
  # Each pair: ratio (qimg seconds/qemu-img seconds); odd pairs ran qemu-img first.
  pairs=$(paste -d' ' i.t q.t | awk '{printf "%s%.2f(%s/%s)", (NR > 1 ? "," : ""), ($4 > 0) ? $1 / $4 : 0, $1, $4}')
  printf '%-14s %8s %8s %7.3f %9s %9s %8sKB %8sKB %s\n' "$c" "$(cut -d' ' -f1 q.t | median)" "$(cut -d' ' -f1 i.t | median)" \
    "$ratio" "$(cut -d' ' -f3 q.t | median)" "$(cut -d' ' -f3 i.t | median)" \
    "$(cut -d' ' -f2 q.t | sort -n | tail -1)" "$(cut -d' ' -f2 i.t | sort -n | tail -1)" \
    "$ok; sizes q=$(du -k "q.$c.out" | cut -f1)K i=$(du -k "i.$c.out" | cut -f1)K; pairs $pairs"
  rm -f "q.$c.out" "i.$c.out"
done
done
