#!/usr/bin/env bash
# Peers harness (the performance issue): the same fio jobs (nbd engine, Unix socket,
# half-compressible buffers) against `mindcastle serve`, `qemu-nbd -t` on qcow2, on
# qcow2 with LUKS, and `nbdkit file`, servers interleaved over ROUNDS in one run.
# Per server: nbdcopy of a half-compressible image in (with --flush) and out, MB/s;
# per fio job MB/s, IOPS and p50/p99 latency; device bytes written per logical byte of
# the random writes; CPU seconds, peak RSS (VmHWM) and bytes on disk after all jobs;
# then mindcastle's ratio to each peer (medians over the rounds).
# Usage: bench/peers.sh [SIZE_MIB] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SIZE_MIB="${1:-1024}" SECS="${2:-15}" ROUNDS="${3:-2}"
DIR="${BENCH_DIR:-/tmp/mindcastle-peers}"
rm -rf "$DIR" && mkdir -p "$DIR"
cargo build --release -q --bin mindcastle --example bench_pipeline
M=$PWD/target/release/mindcastle
# The pipeline limit: LZ4 + seal + SHA-512 of the same kind of data, in process, all
# cores; measured at the start of every round (the machine's speed drifts over a run),
# the median taken.
pipeline() { target/release/examples/bench_pipeline 512 2>/dev/null | awk '{print $2}'; }
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
run_fio() { # fio args -> "MB/s IOPS p50_us p99_us logical_bytes"
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${SIZE_MIB}M" \
      --buffer_compress_percentage=50 --refill_buffers --runtime="$SECS" --time_based=1 \
      --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; d=j["read"] if j["read"]["io_bytes"]>0 else j["write"]; p=d["clat_ns"].get("percentile",{}); print("%.1f %.0f %.0f %.0f %d" % (d["bw_bytes"]/1e6, d["iops"], p.get("50.000000",0)/1e3, p.get("99.000000",0)/1e3, d["io_bytes"]))'
}
JOBS=(
  "seqwrite:--rw=write --bs=1M --iodepth=8"
  "seqread:--rw=read --bs=1M --iodepth=8"
  "randwrite:--rw=randwrite --bs=4k --iodepth=32"
  "randread:--rw=randread --bs=4k --iodepth=32"
)
SERVERS=(mindcastle qcow2 luks nbdkit)
# The image nbdcopy copies in: half-compressible (random 2 KiB, then 2 KiB of zeroes).
python3 bench/make-image.py "$DIR/image.raw" "$SIZE_MIB"
written() { awk '/^write_bytes/{print $2}' "/proc/$pid/io"; }
timed_mbs() { # command... -> MB/s of SIZE_MIB
  local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
  python3 -c "print(round($SIZE_MIB * 1048576 / 1e6 / ($t1 - $t0), 1))"
}
: > "$DIR/results"
for round in $(seq "$ROUNDS"); do
  echo "$round pipeline limit $(pipeline) 0 0 0 0" >> "$DIR/results"
  for srv in "${SERVERS[@]}"; do
    start "$srv"
    URI="nbd+unix:///?socket=$DIR/s.sock"
    # nbdcopy in (the fill), with a flush at the end, then out.
    echo "$round $srv nbdcopyin $(timed_mbs nbdcopy --flush "$DIR/image.raw" "$URI") 0 0 0 0" >> "$DIR/results"
    echo "$round $srv nbdcopyout $(timed_mbs nbdcopy "$URI" null:) 0 0 0 0" >> "$DIR/results"
    for j in "${JOBS[@]}"; do
      name=${j%%:*}; args=${j#*:}
      before=$(written)
      # shellcheck disable=SC2086
      out=$(run_fio $args)
      echo "$round $srv $name $out" >> "$DIR/results"
      if [ "$name" = randwrite ]; then
        # Device bytes the server wrote (counted as it dirtied pages: its log, its
        # chunks, its merges) per logical byte of the random 4 KiB writes, through the
        # read job after it (merges go on in the background).
        wa_from=$before wa_logical=${out##* }
      fi
      if [ "$name" = randread ]; then
        echo "$round $srv writeamp $(python3 -c "print(round(($(written) - $wa_from) / max($wa_logical, 1), 2))") 0 0 0 0" >> "$DIR/results"
      fi
    done
    stop "$round" "$srv"
  done
done
python3 - "$DIR/results" "$SIZE_MIB" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, srv, job, *v = line.split()
    rows[(srv, job)].append([float(x) for x in v])
med = {k: [statistics.median(c) for c in zip(*v)] for k, v in rows.items()}
servers = ["mindcastle", "qcow2", "luks", "nbdkit"]
print(f"{sys.argv[2]} MiB, medians of the rounds (MB/s, IOPS, p50/p99 latency in us)")
for job in ["nbdcopyin", "nbdcopyout"]:
    m = med[("mindcastle", job)][0]
    cells = " | ".join(f"{s}: {med[(s, job)][0]:.0f} MB/s" for s in servers)
    ratio = ", ".join(f"/{s} {m / max(med[(s, job)][0], 1e-9):.2f}" for s in servers[1:])
    print(f"{job:<10} {cells} | mindcastle{ratio}")
for job in ["seqwrite", "seqread", "randwrite", "randread"]:
    cells = []
    for s in servers:
        mb, iops, p50, p99, _ = med[(s, job)]
        cells.append(f"{s}: {mb:.0f} MB/s {iops:.0f} IOPS p50 {p50:.0f} p99 {p99:.0f}")
    m = med[("mindcastle", job)]
    ratio = ", ".join(f"/{s} {m[0] / max(med[(s, job)][0], 1e-9):.2f}" for s in servers[1:])
    print(f"{job:<10} " + " | ".join(cells) + f" | mindcastle{ratio}")
pipe = med[("pipeline", "limit")][0]
rounds = ", ".join(f"{v[0]:.0f}" for v in rows[("pipeline", "limit")])
sw = med[("mindcastle", "seqwrite")][0]
ci = med[("mindcastle", "nbdcopyin")][0]
print(f"pipeline limit (LZ4 + seal + SHA-512 in process, all cores): {pipe:.0f} MB/s "
      f"(rounds {rounds}); "
      f"mindcastle seq write is {sw / pipe:.2f} of it, nbdcopy in {ci / pipe:.2f}")
# Peers overwrite in place, and pages still dirty are not counted again: only ours.
print("mindcastle device bytes written / logical bytes, random 4 KiB writes (and the "
      f"read job after them): {med[('mindcastle', 'writeamp')][0]:.2f}")
for s in servers:
    cpu, hwm, disk = med[(s, "server")]
    print(f"{s:<10} cpu {cpu:.1f} s, peak RSS {hwm:.0f} MiB, on disk {disk:.0f} MiB "
          f"({disk / float(sys.argv[2]):.2f} of logical)")
PY
