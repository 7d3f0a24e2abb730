#!/bin/sh
# tar-to-disk.sh TARBALL NAME.swap [SIZE]: turn a root tree tarball (for example
# `docker export CONTAINER > rootfs.tar`) into a new mindcastle disk, ready to publish.
# Needs root (mkfs, mount, losetup). No Docker engine is needed.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 TARBALL NAME.swap [SIZE]" >&2; exit 2; }
TARBALL=$(realpath "$1"); export TARBALL
SWAP=$2
SIZE=${3:-10G}
[ ! -e "$SWAP" ] || { echo "$SWAP exists; choose a new name" >&2; exit 2; }
HERE=$(dirname "$(realpath "$0")")
# The binary: $MINDCASTLE if set, else `mindcastle` on PATH, else the build beside this
# checkout (target/release or target/debug).
if [ -z "${MINDCASTLE:-}" ]; then
    for m in "$(command -v mindcastle || true)" "$HERE/../target/release/mindcastle" "$HERE/../target/debug/mindcastle"; do
        if [ -n "$m" ] && [ -x "$m" ]; then MINDCASTLE=$m; break; fi
    done
fi
[ -n "${MINDCASTLE:-}" ] || { echo "tar-to-disk: mindcastle not found: install it (cargo install --path .) or set MINDCASTLE=" >&2; exit 2; }
"$MINDCASTLE" attach --size "$SIZE" "$SWAP" "$HERE/statechange-tar.sh"
echo "tar-to-disk: $TARBALL is now $SWAP"
