#!/usr/bin/env bash
# What this machine gives for writing new data through the page cache, the ceiling of
# any server that writes new files (a log-structured store writes every chunk to a new
# file; qemu-nbd's fio jobs overwrite pages its fill already cached):
#   fresh:  a new file into page-cache pages the guest has not used lately (on a VM
#           that returns free pages to its host, each new page is a host fault);
#   reused: a new file right after deleting one of the same size (its pages reused);
#   direct: O_DIRECT, no page cache at all (the disk itself).
# No fsync in the first two (the copy into memory is what is measured); the dirty
# limit (20% of RAM) is far above SIZE_MIB on the machines this runs on.
# Usage: bench/page-cache.sh [SIZE_MIB] [ROUNDS] [DIR]
set -euo pipefail
SIZE_MIB="${1:-1024}" ROUNDS="${2:-2}" DIR="${3:-${BENCH_DIR:-/tmp/mindcastle-page-cache}}"
mkdir -p "$DIR"
cleanup() { rm -f "$DIR/a" "$DIR/b"; }
trap cleanup EXIT
rate() { # dd's last line -> MB/s
  dd "$@" 2>&1 | awk '/copied/ { printf "%.0f", $(NF-1) * ($NF == "GB/s" ? 1000 : 1) }'
}
echo "round fresh_MBps reused_MBps direct_MBps"
for round in $(seq "$ROUNDS"); do
  cleanup
  # Long enough for a guest's free page reporting to hand freed pages back.
  sleep 15
  fresh=$(rate if=/dev/zero of="$DIR/a" bs=1M count="$SIZE_MIB")
  rm -f "$DIR/a"
  reused=$(rate if=/dev/zero of="$DIR/b" bs=1M count="$SIZE_MIB")
  rm -f "$DIR/b"
  direct=$(rate if=/dev/zero of="$DIR/a" bs=1M count="$SIZE_MIB" oflag=direct)
  echo "$round $fresh $reused $direct"
done
