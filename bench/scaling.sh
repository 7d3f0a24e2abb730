#!/usr/bin/env bash
# How the write pipeline scales with cores, in one run: the in-process pipeline
# (`examples/bench_pipeline`: LZ4, AES-256-GCM-SIV and SHA-512, one thread per core it
# may use) and `serve`'s sequential write (fio's nbd engine, 1 MiB at queue depth 8,
# half-compressible buffers, on a fresh 1 GiB disk) with the process pinned by taskset
# to 1 core and then to CORES (default: every core), ROUNDS times interleaved; medians
# and the ratios CORES / 1. fio itself is not pinned (it shares the cores it finds),
# unless PIN_FIO=1: then fio is pinned to the same cores as the server, so the whole
# system (client and server) gets 1 core, then CORES.
# Usage: [PIN_FIO=1] bench/scaling.sh [SECONDS] [ROUNDS] [CORES]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SECS="${1:-8}" ROUNDS="${2:-3}"
N=$(nproc)
CORES="${3:-$N}"
ALL="0-$((CORES - 1))"
cargo build --release -q --bin mindcastle --example bench_pipeline
BIN="$PWD/target/release/mindcastle"
PIPE="$PWD/target/release/examples/bench_pipeline"
DIR="${BENCH_DIR:-/tmp/mindcastle-scaling}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

seqwrite() { # CPUS -> MB/s
  local d="$DIR/w-$RANDOM"
  mkdir -p "$d"
  "$BIN" create --size 1024M "$d/d.swap" >/dev/null
  taskset -c "$1" "$BIN" serve "$d/d.swap" --socket "$d/s.sock" 2>/dev/null & pid=$!
  for _ in $(seq 100); do [ -S "$d/s.sock" ] && break; sleep 0.1; done
  local pin=()
  if [ "${PIN_FIO:-0}" = 1 ]; then pin=(taskset -c "$1"); fi
  "${pin[@]}" fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$d/s.sock" --size=1024M \
      --rw=write --bs=1M --iodepth=8 --runtime="$SECS" --time_based=1 \
      --buffer_compress_percentage=50 --refill_buffers=1 --output-format=json \
      2>/dev/null > "$d/fio.json"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
  python3 -c 'import json,sys; t=open(sys.argv[1]).read(); print(round(json.loads(t[t.index("{"):])["jobs"][0]["write"]["bw_bytes"]/1e6))' "$d/fio.json"
  rm -rf "$d"
}
pipeline() { # CPUS -> MB/s
  taskset -c "$1" "$PIPE" 1024 2>/dev/null | awk '{print int($2)}'
}

: > "$DIR/results"
for round in $(seq "$ROUNDS"); do
  for cpus in 0 "$ALL"; do
    p=$(pipeline "$cpus")
    w=$(seqwrite "$cpus")
    echo "round $round cpus $cpus: pipeline $p MB/s, serve seq write $w MB/s"
    echo "$cpus $p $w" >> "$DIR/results"
  done
done
python3 - "$DIR/results" "$ALL" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def med(cpus, col):
    return statistics.median(float(r[col]) for r in rows if r[0] == cpus)
one_p, all_p = med("0", 1), med(sys.argv[2], 1)
one_w, all_w = med("0", 2), med(sys.argv[2], 2)
print(f"pipeline: 1 core {one_p:.0f} MB/s, cores {sys.argv[2]} {all_p:.0f} MB/s, ratio {all_p / one_p:.2f}")
print(f"serve seq write: 1 core {one_w:.0f} MB/s, cores {sys.argv[2]} {all_w:.0f} MB/s, ratio {all_w / one_w:.2f}")
PY
