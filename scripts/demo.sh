#!/usr/bin/env bash
# The sbuml demo: save a running Linux machine mid-execution, halt it, and
# bring it back from the snapshot, carrying on where it was.
set -euo pipefail
cd "$(dirname "$0")/.."
SBUML=${SBUML:-$PWD/bin/sbuml}
work=$(mktemp -d /tmp/sbuml-demo.XXXXXX)
export SBUML_DIR=$work/scrapbook
cleanup() { "$SBUML" halt --all >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
type_in() { printf '%s\n' "$2" | "$SBUML" console "$1" >/dev/null; }
console_tail() { "$SBUML" console "$1" --tail | tr -d '\r' | grep -a "$2" | tail -n "${3:-3}"; }

step "sbuml boot m1 (the default image is built from Debian packages on first use)"
"$SBUML" init >/dev/null
"$SBUML" boot m1 --memory 512M

step "start a counter in the guest, and leave a file on its disk and in its tmpfs"
type_in m1 'echo "written before the snapshot" > /mnt/note; echo tmpfs-data > /tmp/note; (i=0; while true; do echo "tick $i"; i=$((i+1)); sleep 0.5; done) &'
sleep 3
console_tail m1 tick

step "sbuml commit m1: save the running machine"
"$SBUML" commit m1 -m "counter running"
sleep 2
step "m1 went on running; now halt it"
console_tail m1 tick 1
"$SBUML" halt m1
"$SBUML" ps

step "sbuml spare m1: a QEMU started ahead of need, which the next checkout of that machine claims"
"$SBUML" spare m1

step "sbuml checkout m1 m2 -c: a new machine from the snapshot carries on from the saved instant"
"$SBUML" checkout m1 m2 -c
sleep 3
console_tail m2 tick 6
step "sbuml exec m2: run a command in it through its agent (its files came along)"
"$SBUML" exec m2 -- cat /mnt/note /tmp/note

step "ckpt() from inside m2: 0 in m2, and the child number in each machine checked out of that snapshot"
"$SBUML" exec m2 -- sh -c 'setsid sh -c "echo ckpt returned \$(sbuml-guest ckpt -m from-inside) > /tmp/ckpt" </dev/null >/dev/null 2>&1 &'
until "$SBUML" exec m2 -- cat /tmp/ckpt 2>/dev/null | grep -q returned; do sleep 0.5; done
"$SBUML" exec m2 -- cat /tmp/ckpt
"$SBUML" checkout m2 m3 -c
until "$SBUML" exec m3 -- cat /tmp/ckpt 2>/dev/null | grep -q returned; do sleep 0.5; done
"$SBUML" exec m3 -- cat /tmp/ckpt
"$SBUML" halt m3

step "commit m2 after a few idle seconds: only what changed is stored"
"$SBUML" commit m2 -m "idle"
"$SBUML" log --graph
"$SBUML" du | tail -n 2
"$SBUML" fsck
