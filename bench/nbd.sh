#!/usr/bin/env bash
# NBD benchmark: fio's nbd engine against `mindcastle serve`, `qemu-nbd` on a qcow2 file
# and `nbdkit memory`, all on Unix sockets in the same run. Prints MB/s or IOPS per job
# and mindcastle's ratio to each peer. Usage: bench/nbd.sh [SIZE_MIB] [RUNTIME_S]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:$PATH"
SIZE_MIB="${1:-1024}"
RUNTIME="${2:-15}"
DIR="${BENCH_DIR:-/tmp/mindcastle-nbd-bench}"
rm -rf "$DIR" && mkdir -p "$DIR"
cargo build --release -q
M=$PWD/target/release/mindcastle

start_mindcastle() {
  rm -rf "$DIR/mc" && mkdir -p "$DIR/mc"
  $M create --size "${SIZE_MIB}M" "$DIR/mc/d.swap" >/dev/null
  $M serve "$DIR/mc/d.swap" --socket "$DIR/mc.sock" >/dev/null 2>&1 & echo $! > "$DIR/mc.pid"
}
start_qemu() {
  rm -f "$DIR/q.qcow2" && qemu-img create -q -f qcow2 "$DIR/q.qcow2" "${SIZE_MIB}M"
  qemu-nbd -t -f qcow2 --cache=writeback --aio=threads --shared=8 --socket="$DIR/q.sock" "$DIR/q.qcow2" >/dev/null 2>&1 & echo $! > "$DIR/q.pid"
}
start_nbdkit() {
  nbdkit -f -U "$DIR/k.sock" memory "${SIZE_MIB}M" >/dev/null 2>&1 & echo $! > "$DIR/k.pid"
}
cleanup() {
  local p
  for p in mc q k; do
    if [ -f "$DIR/$p.pid" ]; then kill "$(cat "$DIR/$p.pid")" 2>/dev/null || true; fi
  done
}
trap cleanup EXIT
wait_sock() { for _ in $(seq 100); do [ -S "$1" ] && return; sleep 0.1; done; echo "no socket $1" >&2; exit 1; }
stop() { kill -TERM "$(cat "$DIR/$1.pid")" 2>/dev/null || true; wait "$(cat "$DIR/$1.pid")" 2>/dev/null || true; rm -f "$DIR/$1.sock"; }

# job name, fio args; prints "bw_MBps iops"
run_fio() {
  local sock=$1; shift
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --size="${SIZE_MIB}M" \
      --runtime="$RUNTIME" --time_based=1 --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; r=j["read"]; w=j["write"]; d=r if r["io_bytes"]>0 else w; print("%.1f %.0f" % (d["bw_bytes"]/1e6, d["iops"]))'
}

JOBS=(
  "seqwrite:--rw=write --bs=1M --iodepth=8"
  "seqread:--rw=read --bs=1M --iodepth=8"
  "randwrite:--rw=randwrite --bs=4k --iodepth=32"
  "randread:--rw=randread --bs=4k --iodepth=32"
)
declare -A R
for peer in mindcastle qemu nbdkit; do
  case $peer in
    mindcastle) start_mindcastle; s=mc;;
    qemu) start_qemu; s=q;;
    nbdkit) start_nbdkit; s=k;;
  esac
  wait_sock "$DIR/$s.sock"
  # Fill the device first so reads read data (sequential write of the whole size).
  fio --name=fill --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/$s.sock" --size="${SIZE_MIB}M" --rw=write --bs=1M --iodepth=8 >/dev/null 2>&1
  for j in "${JOBS[@]}"; do
    name=${j%%:*}; args=${j#*:}
    # shellcheck disable=SC2086
    R[$peer,$name]=$(run_fio "$DIR/$s.sock" $args)
  done
  stop "$s"
done

printf "%-10s | %-22s | %-22s | %-22s | %s\n" job mindcastle qemu-nbd+qcow2 "nbdkit memory" "ratio mc/qemu, mc/nbdkit"
for j in "${JOBS[@]}"; do
  name=${j%%:*}
  read -r mb mi <<<"${R[mindcastle,$name]}"; read -r qb qi <<<"${R[qemu,$name]}"; read -r kb ki <<<"${R[nbdkit,$name]}"
  python3 - "$name" "$mb" "$mi" "$qb" "$qi" "$kb" "$ki" <<'PY'
import sys
n, mb, mi, qb, qi, kb, ki = sys.argv[1], *map(float, sys.argv[2:])
print(f"{n:<10} | {mb:7.1f} MB/s {mi:7.0f} IOPS | {qb:7.1f} MB/s {qi:7.0f} IOPS | {kb:7.1f} MB/s {ki:7.0f} IOPS | {mb/qb:.2f}, {mb/kb:.2f}")
PY
done
