#!/usr/bin/env bash
# A/B of two mindcastle builds on one fio job, interleaved over rounds, with the
# server's CPU (utime+stime from /proc) over the job: on a machine whose speed swings
# between rounds, CPU per byte moves less than throughput does.
# Each round and side: a new disk, `serve` on a Unix socket, a fill with 1 MiB
# half-compressible writes, then the job. Prints MB/s, IOPS, MB moved, CPU ticks and
# ticks per GB.
# Usage: bench/ab-job.sh BIN_A BIN_B SIZE_MIB SECONDS ROUNDS FIO_ARGS...
#   e.g. bench/ab-job.sh /tmp/old/release/mindcastle target/release/mindcastle \
#          1024 6 4 --rw=read --bs=1M --iodepth=8
set -euo pipefail
export PATH="/usr/bin:$PATH"
A=$1 B=$2 SIZE_MIB=$3 RUNTIME=$4 ROUNDS=$5
shift 5
DIR="${BENCH_DIR:-/tmp/mindcastle-ab-job}"
rm -rf "$DIR" && mkdir -p "$DIR"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
URI="nbd+unix:///?socket=$DIR/s.sock"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
echo "round side MB/s IOPS MB cpu_ticks ticks_per_GB"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ "$side" = B ] && bin=$B
    rm -rf "$DIR/d" && mkdir -p "$DIR/d"
    "$bin" create --size "${SIZE_MIB}M" "$DIR/d/d.swap" >/dev/null
    "$bin" serve "$DIR/d/d.swap" --socket "$DIR/s.sock" >/dev/null 2>&1 & pid=$!
    for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && break; sleep 0.1; done
    fio --name=fill --ioengine=nbd --uri="$URI" --size="${SIZE_MIB}M" --rw=write --bs=1M \
        --iodepth=8 --buffer_compress_percentage=50 --refill_buffers=1 >/dev/null 2>&1
    c0=$(ticks "$pid")
    out=$(fio --name=j --ioengine=nbd --uri="$URI" --size="${SIZE_MIB}M" \
              --runtime="$RUNTIME" --time_based=1 --output-format=json "$@" 2>/dev/null |
      python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; r=j["read"]; w=j["write"]; d=r if r["io_bytes"]>0 else w; print("%.1f %.0f %.0f" % (d["bw_bytes"]/1e6, d["iops"], d["io_bytes"]/1e6))')
    c1=$(ticks "$pid")
    read -r mbps iops mb <<<"$out"
    echo "$round $side $mbps $iops $mb $((c1 - c0)) $(awk -v t=$((c1 - c0)) -v m="$mb" 'BEGIN { printf "%.1f", t / (m / 1000) }')"
    kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; rm -f "$DIR/s.sock"
  done
done
