#!/usr/bin/env bash
# Whole-disk commands (fsck, push to a folder, pull from it, gc; convert on the
# original's fixture disk) of a disk made by
# random writes, against reading its data folder once (sha512sum of every chunk) in
# the same run: a SIZE_MIB import of a half-compressible image, then WRITES random
# 4 KiB writes (half noise, half zeros) through `serve` and nbdsh. With OTHER_BIN,
# that build's fsck is timed on the same disk too (an A/B).
# Usage: bench/whole-disk.sh [SIZE_MIB] [WRITES] [OTHER_BIN]   (default 128 4000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SIZE_MIB="${1:-128}" WRITES="${2:-4000}" OTHER="${3:-}"
DIR="${BENCH_DIR:-/tmp/mindcastle-whole-disk-bench}"
rm -rf "$DIR" && mkdir -p "$DIR"
cargo build --release -q
M=$PWD/target/release/mindcastle
"$M" create --size "${SIZE_MIB}M" "$DIR/d.swap" >/dev/null
python3 bench/make-image.py "$DIR/img" "$SIZE_MIB"
"$M" import "$DIR/d.swap" "$DIR/img" >/dev/null
"$M" serve "$DIR/d.swap" --socket "$DIR/s.sock" 2>/dev/null &
pid=$!
for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && break; sleep 0.1; done
nbdsh -u "nbd+unix:///?socket=$DIR/s.sock" -c "
import random, os
random.seed(7)
for i in range($WRITES):
    h.pwrite(os.urandom(2048) + bytes(2048), random.randrange(0, $SIZE_MIB * 256) * 4096)
h.flush()
"
kill -INT "$pid"; wait "$pid"
now() { date +%s.%N; }
secs() { python3 -c "print(round($2 - $1, 3))"; }
folder=$(du -sb "$DIR"/swapdata-* | cut -f1)
chunks=$(find "$DIR"/swapdata-* -name '*.lvl' | wc -l)
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); find "$DIR"/swapdata-* -name '*.lvl' -exec sha512sum {} + >/dev/null; t1=$(now)
sha=$(secs "$t0" "$t1")
row() { # NAME SECONDS
  echo "| $1 | $2 s | $(python3 -c "print(round($2 / $sha, 2))") |"
}
echo "Whole-disk commands, ${SIZE_MIB} MiB disk after $WRITES random 4 KiB writes ($chunks chunks, $folder bytes in the data folder), $(nproc) cores, $(date -u +%F)"
echo "| command | time | / sha512sum of the folder ($sha s) |"
echo "|---|---|---|"
t0=$(now); "$M" fsck "$DIR/d.swap" >/dev/null; t1=$(now); row fsck "$(secs "$t0" "$t1")"
t0=$(now); "$M" push "$DIR/d.swap" "$DIR/pub" --swap-out "$DIR/p.swap" >/dev/null; t1=$(now)
row "push to a folder" "$(secs "$t0" "$t1")"
t0=$(now); "$M" pull "$DIR/p.swap" >/dev/null; t1=$(now); row "pull from it" "$(secs "$t0" "$t1")"
t0=$(now); "$M" gc "$DIR/d.swap" >/dev/null; t1=$(now); row gc "$(secs "$t0" "$t1")"
if [ -n "$OTHER" ]; then
  t0=$(now); "$OTHER" fsck "$DIR/d.swap" >/dev/null; t1=$(now)
  row "fsck by $OTHER" "$(secs "$t0" "$t1")"
fi
# convert reads disks of the original's format, which random writes through this
# version cannot make: timed on the original's own 64 MiB disk (tests/fixtures/legacy-c)
# against sha512sum of that disk's folder.
cp -r tests/fixtures/legacy-c "$DIR/legacy" && chmod -R u+w "$DIR/legacy"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); find "$DIR"/legacy/swapdata-* -type f -exec sha512sum {} + >/dev/null; t1=$(now)
lsha=$(secs "$t0" "$t1")
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now); "$M" convert "$DIR/legacy/legacy.swap" "$DIR/converted.swap" >/dev/null; t1=$(now)
lconv=$(secs "$t0" "$t1")
echo "| convert of the original's 64 MiB disk ($(du -sb "$DIR"/legacy/swapdata-* | cut -f1) bytes) | $lconv s | $(python3 -c "print(round($lconv / $lsha, 2))") (of its folder's sha512sum, $lsha s) |"
