#!/usr/bin/env bash
# History benchmark, all in one run on this machine:
#  1. snapshot, clone and reset on thin 1 TiB and 10 GiB disks holding DATA_MIB, and
#     diff with DIFF_MIB changed on a DIFF_GIB disk (examples/bench_history.rs);
#  2. diff with 1% of a 10 GiB disk changed, against `qemu-img compare` of the same two
#     states as qcow2 files (what people use today to find what changed);
#  3. random 4 KiB read IOPS (fio's nbd engine on `serve`) of a disk with no snapshots
#     and of the same disk with SNAPS kept snapshots.
# Usage: bench/history.sh [DATA_MIB] [DIFF_GIB] [DIFF_MIB] [SNAPS] [FIO_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:$PATH"
DATA_MIB="${1:-1024}" DIFF_GIB="${2:-2048}" DIFF_MIB="${3:-1024}" SNAPS="${4:-1000}" SECS="${5:-10}"
DIR="${BENCH_DIR:-/tmp/mindcastle-history-bench}"
rm -rf "$DIR" && mkdir -p "$DIR"
cargo build --release -q --example bench_history
M=$PWD/target/release/mindcastle
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT
now() { date +%s.%N; }
since() { python3 -c "import sys; print('%.0f' % ((float(sys.argv[2]) - float(sys.argv[1])) * 1000))" "$1" "$(now)"; }

echo "== 1. snapshot, clone, reset, diff (library calls, medians of 5)"
target/release/examples/bench_history "$DIR/lib" "$DATA_MIB" "$DIFF_GIB" "$DIFF_MIB"

echo "== 2. diff with 1% of 10 GiB changed vs qemu-img compare of qcow2"
python3 - "$DIR" <<'EOF'
import os, sys
d = sys.argv[1]
size, base_mib, chg_mib = 10 << 30, 2048, 102
rnd = os.urandom(1 << 20)
with open(f"{d}/a.raw", "wb") as f:
    f.truncate(size)
    for i in range(base_mib):                       # 2 GiB of data spread over the disk
        f.seek(i * (size // base_mib)); f.write(rnd[i % 7:] + rnd[:i % 7])
os.system(f"cp --sparse=always {d}/a.raw {d}/b.raw")
with open(f"{d}/b.raw", "r+b") as f:                # 1% of the disk rewritten
    for i in range(chg_mib):
        f.seek(i * (size // chg_mib) + 4096); f.write(os.urandom(1 << 20))
EOF
$M create --size 10G "$DIR/d.swap" >/dev/null
$M import "$DIR/d.swap" "$DIR/a.raw"
$M snapshot --name a "$DIR/d.swap" >/dev/null
$M import "$DIR/d.swap" "$DIR/b.raw"
$M snapshot --name b "$DIR/d.swap" >/dev/null
qemu-img convert -O qcow2 "$DIR/a.raw" "$DIR/a.qcow2"
qemu-img convert -O qcow2 "$DIR/b.raw" "$DIR/b.qcow2"
sync
t=$(now); $M diff --json "$DIR/d.swap" a b > "$DIR/diff.json"; mc=$(since "$t")
t=$(now); qemu-img compare -q "$DIR/a.qcow2" "$DIR/b.qcow2" || true; q=$(since "$t")
# qemu-img compare stops at the first difference; how long it takes to read through a
# whole state is what telling every change costs it: time it on two identical copies.
cp "$DIR/b.qcow2" "$DIR/b2.qcow2"
t=$(now); qemu-img compare -q "$DIR/b.qcow2" "$DIR/b2.qcow2"; qfull=$(since "$t")
bytes=$(python3 -c "import json; print(json.load(open('$DIR/diff.json'))['bytes'])")
echo "mindcastle diff (the whole command, every range listed, ${bytes} bytes differ): ${mc} ms"
echo "qemu-img compare: ${q} ms to the first difference, ${qfull} ms to read through two identical states"
echo "ratio qemu-img full read / mindcastle diff: $(python3 -c "print('%.1f' % ($qfull / max($mc, 1)))")"
rm -f "$DIR"/*.raw "$DIR"/*.qcow2

echo "== 3. random read IOPS with 0 and ${SNAPS} snapshots (two copies of one disk, runs interleaved)"
rm -rf "$DIR/r" "$DIR/s" && mkdir -p "$DIR/r"
$M create --size 1G "$DIR/r/r.swap" >/dev/null
head -c 1G /dev/urandom > "$DIR/fill.raw"
$M import "$DIR/r/r.swap" "$DIR/fill.raw" && rm "$DIR/fill.raw"
cp -a "$DIR/r" "$DIR/s"
t=$(now)
for _ in $(seq "$SNAPS"); do $M snapshot "$DIR/s/r.swap" >/dev/null; done
echo "took ${SNAPS} snapshots in $(since "$t") ms (one command each, process start included)"
iops() {
  $M serve "$1" --socket "$DIR/r.sock" >/dev/null 2>&1 & pid=$!
  for _ in $(seq 100); do [ -S "$DIR/r.sock" ] && break; sleep 0.1; done
  fio --name=j --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/r.sock" --size=1G --rw=randread \
      --bs=4k --iodepth=32 --runtime="$SECS" --time_based=1 --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); print("%.0f" % json.loads(t[t.index("{"):])["jobs"][0]["read"]["iops"])'
  kill -INT "$pid"; wait "$pid" || true; pid=""
}
a1=$(iops "$DIR/r/r.swap"); b1=$(iops "$DIR/s/r.swap"); a2=$(iops "$DIR/r/r.swap"); b2=$(iops "$DIR/s/r.swap")
echo "random read IOPS, no snapshots: ${a1} ${a2}; ${SNAPS} snapshots: ${b1} ${b2}; ratio $(python3 -c "print('%.3f' % (($b1 + $b2) / ($a1 + $a2)))")"
