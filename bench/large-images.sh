#!/usr/bin/env bash
# Peak memory and time of qimg and qemu-img on the two large images of issue 16:
#   sparse4k:  4 TiB virtual, 4 KiB clusters, 64 Ki allocated clusters spread over it
#              (one 4 KiB write every 64 MiB; the L1 table alone is 16 MiB)
#   meta64k:   640 GiB virtual, 64 KiB clusters, every cluster allocated (10 Mi clusters,
#              preallocation=metadata, so the host file is sparse and small on disk)
# Commands: info, check, map --output=json, amend -o refcount_bits=32 (a rewrite of every
# refcount structure, on a copy), and convert -O qcow2 (meta64k's clusters are holes in the
# host file, which both tools' block status sees, so neither reads 640 GiB of zeros).
# Each measurement is RUNS pairs (default 3), who goes first alternating; prints the median
# wall seconds and the largest peak RSS of each tool, and the median per-pair ratio.
# Usage: bench/large-images.sh [QIMG] [WORKDIR]   (needs ~1 GiB free in WORKDIR)
#        ONLY="amend check" bench/large-images.sh ...   (only those commands)
#        IMAGES=meta64k bench/large-images.sh ...       (only those images)
set -euo pipefail
QIMG=$(readlink -f "${1:-build/qimg}")
WORK=${2:-/tmp/qimg-large-bench}
RUNS=${RUNS:-3}
mkdir -p "$WORK"; cd "$WORK"

if [ ! -f sparse4k.qcow2 ]; then
  qemu-img create -q -f qcow2 -o cluster_size=4k sparse4k.qcow2 4T
  python3 -c 'for i in range(65536): print(f"write -q -P 0x5a {i * (64 << 20)} 4096")' | qemu-io -f qcow2 sparse4k.qcow2 > /dev/null
fi
[ -f meta64k.qcow2 ] || qemu-img create -q -f qcow2 -o preallocation=metadata meta64k.qcow2 640G

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
measure() { # label image "qemu-img command" "qimg command"  (OUT in a command: an output file)
  local label=$1 img=$2 qcmd=$3 icmd=$4 r
  [[ -z "${ONLY:-}" || " $ONLY " == *" $label "* ]] || return 0
  : > q.t; : > i.t
  for r in $(seq "$RUNS"); do
    for who in $( [ $((r % 2)) = 1 ] && echo "q i" || echo "i q"); do
      local cmd; if [ "$who" = q ]; then cmd=$qcmd; else cmd=$icmd; fi
      [ "$label" = amend ] && cp --sparse=always "$img.qcow2" amend.qcow2
      rm -f out.qcow2; sync
      # shellcheck disable=SC2086
      /usr/bin/time -f "%e %M" -o one.t ${cmd//OUT/out.qcow2} > /dev/null
      cat one.t >> "$who.t"
    done
  done
  rm -f out.qcow2 amend.qcow2
  printf '%-8s %-9s %8s %8s %7.3f %9sKB %9sKB\n' "$label" "$img" "$(cut -d' ' -f1 q.t | median)" \
    "$(cut -d' ' -f1 i.t | median)" "$(paste -d' ' i.t q.t | awk '{print ($3 > 0) ? $1 / $3 : 0}' | median)" \
    "$(cut -d' ' -f2 q.t | sort -n | tail -1)" "$(cut -d' ' -f2 i.t | sort -n | tail -1)"
}

printf '%-8s %-9s %8s %8s %7s %11s %11s\n' command image qemu_s qimg_s ratio qemu_rss qimg_rss
for img in ${IMAGES:-sparse4k meta64k}; do
  measure info "$img" "qemu-img info $img.qcow2" "$QIMG info $img.qcow2"
  measure check "$img" "qemu-img check $img.qcow2" "$QIMG check $img.qcow2"
  measure map "$img" "qemu-img map --output=json $img.qcow2" "$QIMG map --output=json $img.qcow2"
  measure amend "$img" "qemu-img amend -o refcount_bits=32 amend.qcow2" "$QIMG amend -o refcount_bits=32 amend.qcow2"
  measure convert "$img" "qemu-img convert -O qcow2 $img.qcow2 OUT" "$QIMG convert -O qcow2 $img.qcow2 OUT"
done
