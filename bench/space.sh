#!/usr/bin/env bash
# Bytes on disk and write amplification after the peers workload, for mindcastle alone:
# a 1 GiB disk filled by nbdcopy of a half-compressible image, then 10 s each of 1 MiB
# sequential writes and reads, random 4 KiB writes (at RATE_IOPS when given: how much
# they overwrite decides what the idle compaction copies afterwards, so a fixed rate
# makes builds and days comparable), and random 4 KiB reads (idle for writes, so
# compaction runs). Prints bytes on disk / logical, device bytes the server wrote over
# the last two jobs per logical byte of the random writes (as bench/peers.sh counts
# it), MiB written during the read job, and peak RSS. With SERVE_LOG=PATH, the server's
# debug log of each round goes to PATH.ROUND (each bottom-level merge's "data chunks the
# merge names" line: live, chunk and dead bytes, chunks chosen to rewrite).
# Usage: [SERVE_LOG=PATH] bench/space.sh [BIN] [ROUNDS] [RATE_IOPS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
M="${1:-}" ROUNDS="${2:-2}" RATE="${3:-}"
if [ -z "$M" ]; then cargo build --release -q --bin mindcastle; M=$PWD/target/release/mindcastle; fi
DIR="${BENCH_DIR:-/tmp/mindcastle-space}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
python3 bench/make-image.py "$DIR/image.raw" 1024
written() { awk '/^write_bytes/{print $2}' "/proc/$pid/io"; }
rate=()
if [ -n "$RATE" ]; then rate=(--rate_iops="$RATE"); fi
for round in $(seq "$ROUNDS"); do
  rm -rf "$DIR/d" && mkdir -p "$DIR/d"
  "$M" create --size 1024M "$DIR/d/d.swap" >/dev/null
  if [ -n "${SERVE_LOG:-}" ]; then
    MINDCASTLE_LOG=mindcastle=debug "$M" serve "$DIR/d/d.swap" --socket "$DIR/s.sock" \
      >/dev/null 2>"$SERVE_LOG.$round" & pid=$!
  else
    "$M" serve "$DIR/d/d.swap" --socket "$DIR/s.sock" >/dev/null 2>&1 & pid=$!
  fi
  for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && break; sleep 0.1; done
  U="nbd+unix:///?socket=$DIR/s.sock"
  nbdcopy --flush "$DIR/image.raw" "$U"
  f() { fio --name=j --ioengine=nbd --uri="$U" --size=1024M --buffer_compress_percentage=50 \
          --refill_buffers --runtime=10 --time_based=1 "$@" 2>/dev/null; }
  f --rw=write --bs=1M --iodepth=8 >/dev/null
  f --rw=read --bs=1M --iodepth=8 >/dev/null
  w0=$(written)
  logical=$(f --rw=randwrite --bs=4k --iodepth=32 "${rate[@]}" --output-format=json |
    python3 -c 'import json,sys; t=sys.stdin.read(); print(json.loads(t[t.index("{"):])["jobs"][0]["write"]["io_bytes"])')
  w1=$(written)
  f --rw=randread --bs=4k --iodepth=32 >/dev/null
  w2=$(written)
  hwm=$(awk '/VmHWM/{print int($2 / 1024)}' "/proc/$pid/status")
  kill -INT "$pid"; wait "$pid" || true; pid=""
  disk=$(du -sm "$DIR/d" | cut -f1)
  python3 -c "print('round $round: on disk $disk MiB (%.3f of logical); random writes %d MB, write amplification %.2f (%.2f by the end of the writes); written during the read job %d MiB; peak RSS $hwm MiB' % ($disk / 1024, $logical / 1e6, ($w2 - $w0) / max($logical, 1), ($w1 - $w0) / max($logical, 1), ($w2 - $w1) >> 20))"
done
