#!/usr/bin/env bash
# Write amplification and bytes on disk after random writes at a fixed rate, for
# mindcastle alone: the peers workload (a 1 GiB disk filled by nbdcopy of a
# half-compressible image, 10 s of 1 MiB sequential writes, 10 s of sequential reads),
# then 10 s of random 4 KiB writes at RATE IOPS and 10 s of random reads (idle for
# writes, so compaction runs). Prints device bytes the server wrote over the last two
# jobs per logical byte of the random writes, MiB written during the read job, bytes
# on disk / logical and peak RSS. A fixed rate makes builds comparable: how much the
# random writes overwrite decides what the idle compaction copies afterwards.
# Usage: bench/write-amp.sh [BIN] [RATE_IOPS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
M="${1:-}" RATE="${2:-27000}" ROUNDS="${3:-2}"
if [ -z "$M" ]; then cargo build --release -q --bin mindcastle; M=$PWD/target/release/mindcastle; fi
DIR="${BENCH_DIR:-/tmp/mindcastle-write-amp}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
python3 bench/make-image.py "$DIR/image.raw" 1024
written() { awk '/^write_bytes/{print $2}' "/proc/$pid/io"; }
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
  f --rw=read --bs=1M --iodepth=8
  w0=$(written)
  f --rw=randwrite --bs=4k --iodepth=32 --rate_iops="$RATE"
  w1=$(written)
  f --rw=randread --bs=4k --iodepth=32
  w2=$(written)
  hwm=$(awk '/VmHWM/{print int($2 / 1024)}' "/proc/$pid/status")
  kill -INT "$pid"; wait "$pid" || true; pid=""
  disk=$(du -sm "$DIR/d" | cut -f1)
  python3 -c "print('round $round, $RATE IOPS: write amplification %.2f (%.2f by the end of the writes), %d MiB written during the read job, on disk %.3f of logical, peak RSS $hwm MiB' % (($w2 - $w0) / ($RATE * 10 * 4096), ($w1 - $w0) / ($RATE * 10 * 4096), ($w2 - $w1) >> 20, $disk / 1024))"
done
