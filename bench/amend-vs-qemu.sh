#!/usr/bin/env bash
# qimg amend -o extended_l2=on (in place) vs qemu-img convert -o extended_l2=on (the only
# alternative qemu-img offers), on a 64 GiB-virtual 64 KiB-cluster image holding 4 GiB of data.
# Usage: bench/amend-vs-qemu.sh [QIMG] [WORKDIR]   (needs ~13 GiB free in WORKDIR)
set -euo pipefail
QIMG=$(readlink -f "${1:-build/qimg}")
WORK=${2:-/tmp/qimg-amend-bench}
RUNS=${RUNS:-3}
mkdir -p "$WORK"; cd "$WORK"
if [ ! -f src.qcow2 ]; then
  echo "building src.qcow2 (4 GiB of data: 1 MiB every 16 MiB of a 64 GiB disk) ..." >&2
  python3 - <<'PY'
import os, random
random.seed(7)
fd = os.open("src.raw", os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
os.ftruncate(fd, 64 << 30)
chunk = bytes(random.getrandbits(8) for _ in range(1 << 16)) * 16
for off in range(0, 64 << 30, 16 << 20):
    os.pwrite(fd, chunk, off)
os.close(fd)
PY
  qemu-img convert -f raw -O qcow2 -o cluster_size=64k src.raw src.qcow2
  rm -f src.raw
fi
size() { stat -c %s "$1"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
: > q.t; : > i.t
for r in $(seq "$RUNS"); do
  rm -f out.qcow2; sync
  /usr/bin/time -f "%e" -o q.one qemu-img convert -f qcow2 -O qcow2 -o extended_l2=on,cluster_size=64k src.qcow2 out.qcow2
  cat q.one >> q.t
  # amend works in place: alternate directions on the same file so no copy is needed between runs.
  before=$(size src.qcow2)
  /usr/bin/time -f "%e" -o i.one "$QIMG" amend -o extended_l2=on src.qcow2
  cat i.one >> i.t
  after=$(size src.qcow2)
  qemu-img check -q src.qcow2
  qemu-img compare -q src.qcow2 out.qcow2
  echo "run $r: qemu-img convert $(cat q.one) s, qimg amend $(cat i.one) s, file $before -> $after bytes" >&2
  "$QIMG" amend -o extended_l2=off src.qcow2
done
q=$(median < q.t); i=$(median < i.t)
echo "qemu-img convert median ${q} s; qimg amend median ${i} s; speed-up $(echo "$q $i" | awk '{printf "%.0f", ($2 > 0 ? $1 / $2 : 0)}')x"
