#!/usr/bin/env bash
# Sequential writes alone: fio's nbd engine (1 MiB, queue depth 8, half-compressible
# buffers) against `serve` on a fresh 1 GiB disk, for each build given, interleaved over
# ROUNDS. Prints MB/s, p50/p99/max completion latency, the server's peak RSS, and the
# share of the machine's CPU time that was busy, idle and waiting for I/O.
# Usage: [QD=8] bench/seqwrite.sh [SECONDS] [ROUNDS] [BIN...]   (default: this build;
# QD sets the queue depth)
# Profile one run with e.g. `perf record -e cpu-clock -a -g -- sleep 4` beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SECS="${1:-8}" ROUNDS="${2:-2}"
shift $(($# < 2 ? $# : 2))
if [ $# -eq 0 ]; then
  cargo build --release -q --bin mindcastle
  set -- "$PWD/target/release/mindcastle"
fi
DIR="${BENCH_DIR:-/tmp/mindcastle-seqwrite}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
cpu() { awk '/^cpu /{print $2+$3+$4+$7+$8, $5, $6}' /proc/stat; }

for round in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    d="$DIR/r$round-$(basename "$(dirname "$bin")")-$RANDOM"
    mkdir -p "$d"
    "$bin" create --size 1024M "$d/d.swap" >/dev/null
    "$bin" serve "$d/d.swap" --socket "$d/s.sock" 2>/dev/null & pid=$!
    for _ in $(seq 100); do [ -S "$d/s.sock" ] && break; sleep 0.1; done
    read -r b0 i0 w0 <<<"$(cpu)"
    fio --name=w --ioengine=nbd --uri="nbd+unix:///?socket=$d/s.sock" --size=1024M \
        --rw=write --bs=1M --iodepth="${QD:-8}" --runtime="$SECS" --time_based=1 \
        --buffer_compress_percentage=50 --refill_buffers=1 --output-format=json \
        2>/dev/null > "$d/fio.json"
    read -r b1 i1 w1 <<<"$(cpu)"
    hwm=$(awk '/VmHWM/{print int($2/1024)}' "/proc/$pid/status")
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    python3 - "$d/fio.json" "$round" "$bin" "$hwm" $((b1 - b0)) $((i1 - i0)) $((w1 - w0)) <<'PY'
import json, sys
t = open(sys.argv[1]).read()
w = json.loads(t[t.index("{"):])["jobs"][0]["write"]
c, p = w["clat_ns"], w["clat_ns"]["percentile"]
busy, idle, iowait = (int(x) for x in sys.argv[5:8])
total = max(busy + idle + iowait, 1)
print(f"round {sys.argv[2]} {sys.argv[3]}: {w['bw_bytes'] / 1e6:.0f} MB/s, "
      f"p50 {p['50.000000'] / 1e6:.1f} ms, p99 {p['99.000000'] / 1e6:.1f} ms, "
      f"max {c['max'] / 1e6:.0f} ms, peak RSS {sys.argv[4]} MiB, CPU busy "
      f"{100 * busy // total}% idle {100 * idle // total}% iowait {100 * iowait // total}%")
PY
    rm -rf "$d"
  done
done
