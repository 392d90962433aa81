#!/usr/bin/env bash
# The sbuml demo: a scrapbook of directory snapshots, deduplicated.
set -euo pipefail
cd "$(dirname "$0")/.."
SBUML=${SBUML:-$PWD/bin/sbuml}
work=$(mktemp -d /tmp/sbuml-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export SBUML_DIR=$work/scrapbook
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "a directory with 64 MiB of data and a 1 GiB sparse file"
mkdir -p "$work/src/docs"
head -c $((64<<20)) /dev/urandom > "$work/src/data.bin"
truncate -s 1G "$work/src/disk.img"
echo "hello from sbuml" > "$work/src/docs/readme.txt"
ls -ls "$work/src"

step "sbuml import (makedelta): the first snapshot"
$SBUML init
$SBUML import "$work/src" -m "first"

step "rewrite 1 MiB in the middle, import again: only the change is stored"
dd if=/dev/urandom of="$work/src/data.bin" bs=1M count=1 seek=20 conv=notrunc status=none
$SBUML import "$work/src" -m "second: 1 MiB rewritten"

step "sbuml log and du"
$SBUML log --graph
$SBUML du

step "sbuml export (expanddelta) the first snapshot and compare"
$SBUML export main~1 "$work/out"
dd if=/dev/urandom of=/dev/null bs=1 count=0 status=none
cmp <(head -c $((20<<20)) "$work/out/data.bin") <(head -c $((20<<20)) "$work/src/data.bin") && echo "unchanged region identical"
ls -ls "$work/out"

step "sbuml fsck"
$SBUML fsck
