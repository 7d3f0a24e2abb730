#!/usr/bin/env bash
# `mindcastle import` of a half-compressible raw image into a fresh disk, against
# `qemu-img convert` of the same image to qcow2 and to qcow2 with LUKS (a 10 ms key-slot
# derivation, not its default 2 s), interleaved over ROUNDS; each timed to the end of
# its own flush (mindcastle's import ends with one, the peers are timed through `sync`).
# Prints MB/s, CPU share and peak RSS per run, then the medians and each build's ratio
# to the peers.
# Usage: bench/import.sh [MiB] [ROUNDS] [BIN...]   (default: 1024 MiB, 3 rounds, this build)
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${1:-1024}" ROUNDS="${2:-3}"
shift $(($# < 2 ? $# : 2))
if [ $# -eq 0 ]; then
  cargo build --release -q --bin mindcastle
  set -- "$PWD/target/release/mindcastle"
fi
DIR="${BENCH_DIR:-/tmp/mindcastle-import}"
rm -rf "$DIR" && mkdir -p "$DIR"
python3 bench/make-image.py "$DIR/image.raw" "$MIB"
sync
OUT="$DIR/results"
: >"$OUT"

# run NAME COMMAND...: times COMMAND then `sync`; appends "NAME MB/s CPU% RSS-KiB".
run() {
  local name=$1 t
  shift
  /usr/bin/time -o "$DIR/time" -f "%e %P %M" "$@" >/dev/null 2>&1
  t=$(tail -1 "$DIR/time")
  local s0 s1
  s0=$(date +%s.%N)
  sync
  s1=$(date +%s.%N)
  python3 - "$name" "$MIB" "$t" "$s0" "$s1" >>"$OUT" <<'PY'
import sys
name, mib, t, s0, s1 = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), float(sys.argv[4]), float(sys.argv[5])
secs = float(t[0]) + (s1 - s0)
print(name, f"{mib * 1048576 / 1e6 / secs:.0f}", t[1].rstrip("%"), t[2])
PY
  tail -1 "$OUT"
}

for _ in $(seq "$ROUNDS"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    rm -rf "$DIR/d"* && mkdir -p "$DIR/d"
    "$bin" create --size "${MIB}M" "$DIR/d/d.swap" >/dev/null
    sync
    run "mindcastle-$i" "$bin" import "$DIR/d/d.swap" "$DIR/image.raw"
  done
  rm -rf "$DIR/d"*
  run qcow2 qemu-img convert -f raw -O qcow2 "$DIR/image.raw" "$DIR/d.qcow2"
  rm -f "$DIR/d.qcow2"
  run luks qemu-img convert -f raw -O qcow2 --object secret,id=sec0,data=benchpass \
    -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 "$DIR/image.raw" "$DIR/d.qcow2"
  rm -f "$DIR/d.qcow2"
done

python3 - "$OUT" "$@" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med = {}
for name in dict.fromkeys(r[0] for r in rows):
    rs = [r for r in rows if r[0] == name]
    med[name] = statistics.median(float(r[1]) for r in rs)
    cpu = statistics.median(float(r[2]) for r in rs)
    rss = max(int(r[3]) for r in rs) // 1024
    label = sys.argv[1 + int(name.split("-")[1])] if name.startswith("mindcastle-") else name
    print(f"{label}: median {med[name]:.0f} MB/s, CPU {cpu:.0f}%, peak RSS {rss} MiB")
for name, v in med.items():
    if name.startswith("mindcastle-"):
        print(f"{name}: {v / med['qcow2']:.2f} of qcow2, {v / med['luks']:.2f} of qcow2+LUKS")
PY
