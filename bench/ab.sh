#!/usr/bin/env bash
# A/B of two mindcastle builds, interleaved over several rounds in one run (so drift of
# the machine hits both alike): fio's nbd engine against `serve` on a Unix socket.
# Prints each round and the median per job, and B/A.
# Usage: bench/ab.sh BIN_A BIN_B [SIZE_MIB] [RUNTIME_S] [ROUNDS]
# e.g. build the old commit in a worktree with CARGO_TARGET_DIR=/tmp/old, then
#   bench/ab.sh /tmp/old/release/mindcastle target/release/mindcastle 512 8 3
set -euo pipefail
export PATH="/usr/bin:$PATH"
A=$1 B=$2 SIZE_MIB="${3:-512}" RUNTIME="${4:-8}" ROUNDS="${5:-3}"
DIR="${BENCH_DIR:-/tmp/mindcastle-ab}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

run_fio() {
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${SIZE_MIB}M" \
      --runtime="$RUNTIME" --time_based=1 --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; r=j["read"]; w=j["write"]; d=r if r["io_bytes"]>0 else w; print("%.1f %.0f" % (d["bw_bytes"]/1e6, d["iops"]))'
}
JOBS=(
  "seqwrite:--rw=write --bs=1M --iodepth=8"
  "seqread:--rw=read --bs=1M --iodepth=8"
  "randwrite:--rw=randwrite --bs=4k --iodepth=32"
  "randread:--rw=randread --bs=4k --iodepth=32"
)
: > "$DIR/results"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ "$side" = B ] && bin=$B
    rm -rf "$DIR/d" && mkdir -p "$DIR/d"
    "$bin" create --size "${SIZE_MIB}M" "$DIR/d/d.swap" >/dev/null
    "$bin" serve "$DIR/d/d.swap" --socket "$DIR/s.sock" >/dev/null 2>&1 & pid=$!
    for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && break; sleep 0.1; done
    fio --name=fill --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${SIZE_MIB}M" --rw=write --bs=1M --iodepth=8 >/dev/null 2>&1
    for j in "${JOBS[@]}"; do
      name=${j%%:*}; args=${j#*:}
      # shellcheck disable=SC2086
      r=$(run_fio $args)
      echo "$round $side $name $r" | tee -a "$DIR/results"
    done
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; rm -f "$DIR/s.sock"
  done
done
python3 - "$DIR/results" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
print(f"{'job':<10} | {'A median':>22} | {'B median':>22} | B/A")
for job in dict.fromkeys(r[2] for r in rows):
    m = {s: (st.median(float(r[3]) for r in rows if r[1] == s and r[2] == job),
             st.median(float(r[4]) for r in rows if r[1] == s and r[2] == job)) for s in "AB"}
    key = 0 if job.startswith("seq") else 1
    unit = "MB/s" if key == 0 else "IOPS"
    print(f"{job:<10} | {m['A'][key]:>17.1f} {unit} | {m['B'][key]:>17.1f} {unit} | {m['B'][key] / m['A'][key]:.2f}")
PY
