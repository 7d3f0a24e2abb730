#!/usr/bin/env bash
# A/B of two mindcastle builds on `nbdcopy --flush` of an image into a new disk (the
# first fill: every chunk a new file), interleaved over rounds. Prints MB/s, the
# server's CPU ticks (utime+stime over the copy and its close) and the files in the
# data folder. The image defaults to bench/make-image.py's half-compressible one.
# With MODE=out, each round then copies the disk out to `null:` three times (as
# peers.sh does once; three for a longer measure) and prints those copies' MB/s and
# server CPU ticks instead.
# Usage: [MODE=in|out] bench/nbdcopy-ab.sh BIN_A BIN_B [SIZE_MIB] [ROUNDS]
set -euo pipefail
export PATH="/usr/bin:$PATH"
A=$1 B=$2 SIZE_MIB="${3:-1024}" ROUNDS="${4:-4}" MODE="${MODE:-in}"
DIR="${BENCH_DIR:-/tmp/mindcastle-nbdcopy-ab}"
rm -rf "$DIR" && mkdir -p "$DIR"
IMG="$DIR/image.raw"
python3 "$(dirname "$0")/make-image.py" "$IMG" "$SIZE_MIB"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
# shellcheck source=bench/ab-lib.sh
source "$(dirname "$0")/ab-lib.sh"
echo "round side MB/s cpu_ticks files"
for round in $(seq "$ROUNDS"); do
  for side in A B; do
    bin=$A; [ "$side" = B ] && bin=$B
    serve_fresh "$bin" "$SIZE_MIB"
    t0=$(date +%s.%N)
    nbdcopy --flush "$IMG" "nbd+unix:///?socket=$DIR/s.sock"
    t1=$(date +%s.%N)
    ticks=$(ticks "$pid")
    if [ "$MODE" = out ]; then
      t0=$(date +%s.%N)
      for _ in 1 2 3; do nbdcopy "nbd+unix:///?socket=$DIR/s.sock" null:; done
      t1=$(date +%s.%N)
      ticks=$(( $(ticks "$pid") - ticks ))
    fi
    stop_served
    files=$(find "$DIR"/d/swapdata-*/ -maxdepth 1 -type f | wc -l)
    copies=1; [ "$MODE" = out ] && copies=3
    mbs=$(python3 -c "print(round($copies * $SIZE_MIB * 1048576 / 1e6 / ($t1 - $t0), 1))")
    echo "$round $side $mbs $ticks $files"
  done
done
