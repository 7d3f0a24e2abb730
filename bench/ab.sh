#!/usr/bin/env bash
# A/B of two mindcastle builds, interleaved over several rounds in one run (so drift of
# the machine hits both alike): fio's nbd engine against `serve` on a Unix socket.
# Prints each round and the median per job, and B/A of throughput and of the server's
# CPU (utime+stime from /proc) per GB moved: on a machine whose speed swings between
# rounds, CPU per byte moves less than throughput does.
# Usage: bench/ab.sh BIN_A BIN_B [SIZE_MIB] [RUNTIME_S] [ROUNDS] [FIO_ARGS...]
# With FIO_ARGS, that one job (named "job") instead of the four below. FILL_ARGS adds
# fio arguments to the fill (e.g. "--buffer_compress_percentage=50 --refill_buffers=1"
# for half-compressible data to read back; the fill is incompressible otherwise).
# e.g. build the old commit in a worktree with CARGO_TARGET_DIR=/tmp/old, then
#   bench/ab.sh /tmp/old/release/mindcastle target/release/mindcastle 512 8 3
#   bench/ab.sh /tmp/old/release/mindcastle target/release/mindcastle 1024 6 4 \
#     --rw=read --bs=1M --iodepth=8
set -euo pipefail
export PATH="/usr/bin:$PATH"
A=$1 B=$2 SIZE_MIB="${3:-512}" RUNTIME="${4:-8}" ROUNDS="${5:-3}"
shift $(($# < 5 ? $# : 5))
DIR="${BENCH_DIR:-/tmp/mindcastle-ab}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
# shellcheck source=bench/ab-lib.sh
source "$(dirname "$0")/ab-lib.sh"

# MB/s, IOPS and MB moved of one job.
run_fio() {
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${SIZE_MIB}M" \
      --runtime="$RUNTIME" --time_based=1 --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; r=j["read"]; w=j["write"]; d=r if r["io_bytes"]>0 else w; print("%.1f %.0f %.0f" % (d["bw_bytes"]/1e6, d["iops"], d["io_bytes"]/1e6))'
}
if [ $# -gt 0 ]; then
  JOBS=("job:$*")
else
  JOBS=(
    "seqwrite:--rw=write --bs=1M --iodepth=8"
    "seqread:--rw=read --bs=1M --iodepth=8"
    "randwrite:--rw=randwrite --bs=4k --iodepth=32"
    "randread:--rw=randread --bs=4k --iodepth=32"
  )
fi
: > "$DIR/results"
echo "round side job MB/s IOPS MB cpu_ticks"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ "$side" = B ] && bin=$B
    serve_fresh "$bin" "$SIZE_MIB"
    # shellcheck disable=SC2086 # FILL_ARGS is a list of arguments
    fio --name=fill --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${SIZE_MIB}M" --rw=write --bs=1M --iodepth=8 ${FILL_ARGS:-} >/dev/null 2>&1
    for j in "${JOBS[@]}"; do
      name=${j%%:*}; args=${j#*:}
      c0=$(ticks "$pid")
      # shellcheck disable=SC2086
      r=$(run_fio $args)
      c1=$(ticks "$pid")
      echo "$round $side $name $r $((c1 - c0))" | tee -a "$DIR/results"
    done
    stop_served
  done
done
python3 - "$DIR/results" <<'PY'
import sys, statistics as st
rows = [l.split() for l in open(sys.argv[1])]
print(f"{'job':<10} | {'A median':>22} | {'B median':>22} | B/A | CPU/GB A | CPU/GB B | B/A")
for job in dict.fromkeys(r[2] for r in rows):
    def med(s, i):
        return st.median(float(r[i]) for r in rows if r[1] == s and r[2] == job)
    def cpu(s):
        return st.median(float(r[6]) / max(float(r[5]), 1.0) * 1000 for r in rows if r[1] == s and r[2] == job)
    key = 4 if "randr" in job or "randw" in job else 3
    unit = "IOPS" if key == 4 else "MB/s"
    a, b = med("A", key), med("B", key)
    ca, cb = cpu("A"), cpu("B")
    print(f"{job:<10} | {a:>17.1f} {unit} | {b:>17.1f} {unit} | {b / a:.2f} | {ca:8.1f} | {cb:8.1f} | {cb / ca:.2f}")
PY
