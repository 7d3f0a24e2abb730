#!/usr/bin/env bash
# Runs the README's first command as written, in a fresh clone of this repository, as
# root without sudo: install, build, attach demo.swap with its XFS mounted; writes a
# file, detaches with SIGHUP (as the README says), runs the command again and finds the
# file. CI runs it; it needs root, loop devices and FUSE (or kernel nbd).
# Usage: scripts/readme-first-command.sh   (uses a 1 GiB demo disk)
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "readme-first-command.sh: needs root" >&2; exit 1; }
work=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -INT "$pid" || true; sleep 2; fi
  rm -rf "$work"
}
trap cleanup EXIT
git clone -q "$here" "$work/clone"
cd "$work/clone"
# The command exactly as the README has it (its first line in the first sh block).
first=$(awk '/^```sh$/{f=1; next} f{print; exit}' README.md | sed 's/[[:space:]]*#.*$//')
[ "$first" = "./scripts/install-deps.sh && ./scripts/demo.sh" ] ||
  { echo "readme-first-command.sh: the README's first command changed: $first" >&2; exit 1; }
# Hide sudo: the command must work as root without it.
mkdir -p "$work/bin"
export PATH="$work/nosudo:$PATH"
mkdir -p "$work/nosudo"
printf '#!/bin/sh\necho "sudo must not be needed as root" >&2\nexit 1\n' > "$work/nosudo/sudo"
chmod +x "$work/nosudo/sudo"
export DEMO_SIZE=1G CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/target}" MINDCASTLE_BIN_DIR="$work/bin"

attach() {
  bash -c "$first" > "$work/out" 2>&1 &
  pid=$!
  for _ in $(seq 600); do
    mnt=$(sed -n 's/.*mounted at \(\/tmp\/mnt-[^ ]*\).*/\1/p' "$work/out" | head -1)
    if [ -n "$mnt" ] && mountpoint -q "$mnt"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$work/out" >&2; echo "readme-first-command.sh: the command exited" >&2; exit 1; }
    sleep 1
  done
  cat "$work/out" >&2; echo "readme-first-command.sh: no mount after 600 s" >&2; exit 1
}
detach() {
  local mc
  mc=$(sed -n 's/.*kill -HUP \([0-9]*\).*/\1/p' "$work/out" | head -1)
  [ -n "$mc" ] || { cat "$work/out" >&2; echo "readme-first-command.sh: no PID printed" >&2; exit 1; }
  kill -HUP "$mc"
  wait "$pid" || { cat "$work/out" >&2; echo "readme-first-command.sh: exit code $?" >&2; exit 1; }
  pid=""
  ! mountpoint -q "$mnt" || { echo "readme-first-command.sh: still mounted" >&2; exit 1; }
}
attach
[ -x "$work/bin/mindcastle" ] || { echo "readme-first-command.sh: mindcastle not installed" >&2; exit 1; }
head -c 3000000 /dev/urandom > "$work/file"
cp "$work/file" "$mnt/file"
detach
attach
cmp "$work/file" "$mnt/file" || { echo "readme-first-command.sh: the file changed" >&2; exit 1; }
detach
echo "readme-first-command.sh: the README's first command works as written (attach, write, detach, reattach, read)"
