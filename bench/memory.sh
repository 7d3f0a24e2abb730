#!/usr/bin/env bash
# Peak memory of `mindcastle serve` on large disks: for each disk size, the jobs of
# bench/peers.sh spread over the whole disk (1 MiB writes at random offsets, 4 KiB
# random writes and reads, 1 MiB reads), with the server's VmHWM after each job, so
# the job that drives it shows. The 64-connection case is a test:
# tests/nbd_clients.rs::sixty_four_deep_connections_stay_within_the_memory_budget.
# Usage: bench/memory.sh [SIZES_MIB...]   (default: 4096 102400; chunks stay sparse)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SIZES=("$@"); [ ${#SIZES[@]} -gt 0 ] || SIZES=(4096 102400)
SECS="${SECS:-10}"
DIR="${BENCH_DIR:-/tmp/mindcastle-memory}"
cargo build --release -q --bin mindcastle
M=$PWD/target/release/mindcastle
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; rm -rf "$DIR"; }
trap cleanup EXIT
hwm() { awk '/VmHWM/{print int($2 / 1024)}' "/proc/$pid/status"; }
echo "| disk | 1 GiB of 1 MiB writes at random offsets | random 4 KiB writes ${SECS} s | random 4 KiB reads ${SECS} s | 1 MiB reads ${SECS} s | budget |"
echo "|---|---|---|---|---|---|"
for size in "${SIZES[@]}"; do
  rm -rf "$DIR" && mkdir -p "$DIR"
  "$M" create --size "${size}M" "$DIR/d.swap" >/dev/null
  "$M" serve "$DIR/d.swap" --socket "$DIR/s.sock" >/dev/null 2>&1 & pid=$!
  for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && break; sleep 0.1; done
  f() { fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/s.sock" --size="${size}M" \
          --buffer_compress_percentage=50 --refill_buffers "$@" >/dev/null 2>&1; }
  row="| ${size} MiB"
  f --rw=randwrite --bs=1M --iodepth=8 --io_size=1G; row="$row | $(hwm) MiB"
  f --rw=randwrite --bs=4k --iodepth=32 --runtime="$SECS" --time_based=1; row="$row | $(hwm) MiB"
  f --rw=randread --bs=4k --iodepth=32 --runtime="$SECS" --time_based=1; row="$row | $(hwm) MiB"
  f --rw=read --bs=1M --iodepth=8 --runtime="$SECS" --time_based=1; row="$row | $(hwm) MiB"
  echo "$row | 128 MiB |"
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
done
