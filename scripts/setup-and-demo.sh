#!/usr/bin/env bash
# Installs what is missing (Debian 12, as root), builds qimg, and shows it on a demo
# image with extended L2 entries: create, write some data, info, map.
# Usage: bash scripts/setup-and-demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/deps.sh
source scripts/deps.sh

qimg_install_missing

echo "== configure + build (build/)"
cmake -S . -B build -G Ninja
cmake --build build -j"${JOBS:-2}"

QIMG=$PWD/build/qimg
DEMO=$(mktemp -d /tmp/qimg-demo.XXXXXX)
IMG=$DEMO/demo.qcow2
echo
echo "== demo in $DEMO"
set -x
"$QIMG" --version
"$QIMG" create -f qcow2 -o extended_l2=on,cluster_size=128k "$IMG" 64M
"$QIMG" io -c 'write -P 0xab 0 128k' -c 'write -P 0xcd 1M 4k' -c 'write -P 0xef 2052k 8k' \
           -c 'write -z 4M 128k' -c 'read -P 0xcd 1M 4k' "$IMG"
"$QIMG" info "$IMG"
"$QIMG" map "$IMG"
"$QIMG" map --output=json "$IMG"
set +x
echo
echo "== done: a 4 KiB write into a 128 KiB cluster allocated one 4 KiB subcluster (see map)."
echo "   demo image: $IMG"
