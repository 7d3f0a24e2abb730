#!/usr/bin/env bash
# Bytes on disk after the peers workload, for mindcastle alone: a 1 GiB disk filled by
# nbdcopy of a half-compressible image, then 10 s of 1 MiB sequential writes, 10 s of
# random 4 KiB writes, and 10 s of random 4 KiB reads (idle for writes, so compaction
# runs). Prints MiB on disk and MiB the server wrote during the read job.
# Usage: bench/space.sh [BIN] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
M="${1:-}" ROUNDS="${2:-2}"
if [ -z "$M" ]; then cargo build --release -q --bin mindcastle; M=$PWD/target/release/mindcastle; fi
DIR="${BENCH_DIR:-/tmp/mindcastle-space}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
python3 bench/make-image.py "$DIR/image.raw" 1024
for round in $(seq "$ROUNDS"); do
  rm -rf "$DIR/d" && mkdir -p "$DIR/d"
  "$M" create --size 1024M "$DIR/d/d.swap" >/dev/null
  "$M" serve "$DIR/d/d.swap" --socket "$DIR/s.sock" >/dev/null 2>&1 & pid=$!
  for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && break; sleep 0.1; done
  U="nbd+unix:///?socket=$DIR/s.sock"
  nbdcopy --flush "$DIR/image.raw" "$U"
  f() { fio --name=j --ioengine=nbd --uri="$U" --size=1024M --buffer_compress_percentage=50 \
          --refill_buffers --runtime=10 --time_based=1 "$@" >/dev/null 2>&1; }
  f --rw=write --bs=1M --iodepth=8
  f --rw=randwrite --bs=4k --iodepth=32
  w0=$(awk '/^write_bytes/{print $2}' "/proc/$pid/io")
  f --rw=randread --bs=4k --iodepth=32
  w1=$(awk '/^write_bytes/{print $2}' "/proc/$pid/io")
  kill -INT "$pid"; wait "$pid" || true; pid=""
  disk=$(du -sm "$DIR/d" | cut -f1)
  echo "round $round: on disk $disk MiB ($(python3 -c "print(round($disk / 1024, 2))") of logical); written during the read job $(( (w1 - w0) >> 20 )) MiB"
done
