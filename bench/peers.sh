#!/usr/bin/env bash
# Peers harness (the performance issue): the same fio jobs (nbd engine, Unix socket,
# half-compressible buffers) against `mindcastle serve`, `qemu-nbd -t` on qcow2, on
# qcow2 with LUKS, and `nbdkit file`, servers interleaved over ROUNDS in one run.
# Prints, per server and job, MB/s, IOPS and p50/p99 latency; per server its CPU
# seconds, peak RSS (VmHWM) and bytes on disk after all jobs; then mindcastle's ratio
# to each peer (medians over the rounds).
# Usage: bench/peers.sh [SIZE_MIB] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SIZE_MIB="${1:-1024}" SECS="${2:-15}" ROUNDS="${3:-2}"
DIR="${BENCH_DIR:-/tmp/mindcastle-peers}"
rm -rf "$DIR" && mkdir -p "$DIR"
cargo build --release -q --bin mindcastle --example bench_pipeline
M=$PWD/target/release/mindcastle
# The pipeline limit: LZ4 + seal + SHA-512 of the same kind of data, in process, all cores.
PIPELINE=$(target/release/examples/bench_pipeline 512 2>/dev/null | awk '{print $2}')
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

start() { # SERVER -> sets pid; data under $DIR/$1
  rm -rf "${DIR:?}/$1" "$DIR/s.sock" && mkdir -p "$DIR/$1"
  case $1 in
    mindcastle)
      "$M" create --size "${SIZE_MIB}M" "$DIR/$1/d.swap" >/dev/null
      "$M" serve "$DIR/$1/d.swap" --socket "$DIR/s.sock" >/dev/null 2>&1 & pid=$! ;;
    qcow2)
      qemu-img create -q -f qcow2 "$DIR/$1/d.qcow2" "${SIZE_MIB}M"
      qemu-nbd -t -f qcow2 --cache=writeback --aio=threads --shared=8 --socket="$DIR/s.sock" "$DIR/$1/d.qcow2" >/dev/null 2>&1 & pid=$! ;;
    luks)
      qemu-img create -q -f qcow2 --object secret,id=sec0,data=benchpass \
        -o encrypt.format=luks,encrypt.key-secret=sec0 "$DIR/$1/d.qcow2" "${SIZE_MIB}M"
      qemu-nbd -t --object secret,id=sec0,data=benchpass --cache=writeback --aio=threads --shared=8 \
        --image-opts "driver=qcow2,file.filename=$DIR/$1/d.qcow2,encrypt.format=luks,encrypt.key-secret=sec0" \
        --socket="$DIR/s.sock" >/dev/null 2>&1 & pid=$! ;;
    nbdkit)
      truncate -s "${SIZE_MIB}M" "$DIR/$1/d.raw"
      nbdkit -f -U "$DIR/s.sock" file "$DIR/$1/d.raw" >/dev/null 2>&1 & pid=$! ;;
  esac
  for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && return; sleep 0.1; done
  echo "$1 did not start" >&2; exit 1
}
stop() { # ROUND SERVER -> appends "ROUND SERVER server cpu_s hwm_mb disk_mb" to results
  local cpu hwm
  cpu=$(awk '{print ($14 + $15) / 100}' "/proc/$pid/stat")
  hwm=$(awk '/VmHWM/{print int($2 / 1024)}' "/proc/$pid/status")
  # In this shell (not a subshell), so the server has exited before the next starts.
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
  echo "$1 $2 server $cpu $hwm $(du -sm "$DIR/$2" | cut -f1)" >> "$DIR/results"
}
run_fio() { # fio args -> "MB/s IOPS p50_us p99_us"
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${SIZE_MIB}M" \
      --buffer_compress_percentage=50 --refill_buffers --runtime="$SECS" --time_based=1 \
      --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; d=j["read"] if j["read"]["io_bytes"]>0 else j["write"]; p=d["clat_ns"].get("percentile",{}); print("%.1f %.0f %.0f %.0f" % (d["bw_bytes"]/1e6, d["iops"], p.get("50.000000",0)/1e3, p.get("99.000000",0)/1e3))'
}
JOBS=(
  "seqwrite:--rw=write --bs=1M --iodepth=8"
  "seqread:--rw=read --bs=1M --iodepth=8"
  "randwrite:--rw=randwrite --bs=4k --iodepth=32"
  "randread:--rw=randread --bs=4k --iodepth=32"
)
SERVERS=(mindcastle qcow2 luks nbdkit)
: > "$DIR/results"
for round in $(seq "$ROUNDS"); do
  for srv in "${SERVERS[@]}"; do
    start "$srv"
    fio --name=fill --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${SIZE_MIB}M" \
        --rw=write --bs=1M --iodepth=8 --buffer_compress_percentage=50 --refill_buffers >/dev/null 2>&1
    for j in "${JOBS[@]}"; do
      name=${j%%:*}; args=${j#*:}
      # shellcheck disable=SC2086
      echo "$round $srv $name $(run_fio $args)" >> "$DIR/results"
    done
    stop "$round" "$srv"
  done
done
python3 - "$DIR/results" "$SIZE_MIB" "$PIPELINE" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, srv, job, *v = line.split()
    rows[(srv, job)].append([float(x) for x in v])
med = {k: [statistics.median(c) for c in zip(*v)] for k, v in rows.items()}
servers = ["mindcastle", "qcow2", "luks", "nbdkit"]
print(f"{sys.argv[2]} MiB, medians of the rounds (MB/s, IOPS, p50/p99 latency in us)")
for job in ["seqwrite", "seqread", "randwrite", "randread"]:
    cells = []
    for s in servers:
        mb, iops, p50, p99 = med[(s, job)]
        cells.append(f"{s}: {mb:.0f} MB/s {iops:.0f} IOPS p50 {p50:.0f} p99 {p99:.0f}")
    m = med[("mindcastle", job)]
    ratio = ", ".join(f"/{s} {m[0] / max(med[(s, job)][0], 1e-9):.2f}" for s in servers[1:])
    print(f"{job:<10} " + " | ".join(cells) + f" | mindcastle{ratio}")
pipe = float(sys.argv[3])
sw = med[("mindcastle", "seqwrite")][0]
print(f"pipeline limit (LZ4 + seal + SHA-512 in process, all cores): {pipe:.0f} MB/s; "
      f"mindcastle seq write is {sw / pipe:.2f} of it")
for s in servers:
    cpu, hwm, disk = med[(s, "server")]
    print(f"{s:<10} cpu {cpu:.1f} s, peak RSS {hwm:.0f} MB, on disk {disk:.0f} MB "
          f"({disk / float(sys.argv[2]):.2f} of logical)")
PY
