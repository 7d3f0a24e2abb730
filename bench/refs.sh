#!/usr/bin/env bash
# Refs at a remote, measured through s3s-fs on 127.0.0.1 behind the latency proxy
# (examples/fault_proxy.rs, LAT ms a request): requests and bytes of a first push
# --ref of a SIZE_MIB disk and of a 1 MiB change to it, requests to resolve the ref
# when a follower opens, the time from a push completing to `serve --follow` offering
# the version, and `gc --keep 10` of a remote holding 100 versions (of a 64 MiB disk).
# Usage: bench/refs.sh [SIZE_MIB] [LATENCY_MS] [POLL]   (default 1024 20 1s)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SIZE_MIB="${1:-1024}" LAT="${2:-20}" POLL="${3:-1s}"
DIR="${BENCH_DIR:-/tmp/mindcastle-refs-bench}"
rm -rf "$DIR" && mkdir -p "$DIR/www"
cargo build --release -q
cargo build --release -q --example fault_proxy
M=$PWD/target/release/mindcastle
PROXY=$PWD/target/release/examples/fault_proxy
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# shellcheck source=bench/web.sh
source bench/web.sh
now() { date +%s.%N; }
stats() { cat "$DIR/s3proxy.stats"; }
delta() { # BEFORE AFTER -> "requests bytes"
  read -r r0 b0 _ <<<"$1"; read -r r1 b1 _ <<<"$2"; echo "$((r1 - r0)) $((b1 - b0))"
}
settle() { sleep 0.15; } # the proxy writes its counters every 50 ms
ms() { python3 -c "print(round(($2 - $1) * 1000))"; }
start_s3
URL=s3://bucket/pub

echo "== a ${SIZE_MIB} MiB half-compressible disk, first push --ref main"
python3 bench/make-image.py "$DIR/img.raw" "$SIZE_MIB"
"$M" create --size "${SIZE_MIB}M" "$DIR/a.swap" >/dev/null
"$M" import "$DIR/a.swap" "$DIR/img.raw"
s0=$(stats); t0=$(now)
"$M" push --json --ref main --swap-out "$DIR/f.swap" "$DIR/a.swap" "$URL" > "$DIR/push1.json"
t1=$(now); settle
read -r p1req _ <<<"$(delta "$s0" "$(stats)")"
p1bytes=$(python3 -c "import json; print(json.load(open('$DIR/push1.json'))['bytes'])")
p1chunks=$(python3 -c "import json; print(json.load(open('$DIR/push1.json'))['chunks'])")

echo "== a 1 MiB change, push --ref main"
head -c 1048576 /dev/urandom > "$DIR/change"
dd if="$DIR/change" of="$DIR/img.raw" bs=1M seek=$((SIZE_MIB / 2)) conv=notrunc status=none
"$M" import "$DIR/a.swap" "$DIR/img.raw" >/dev/null
s0=$(stats); t0=$(now)
"$M" push --json --ref main "$DIR/a.swap" "$URL" > "$DIR/push2.json"
t2=$(now); settle
read -r p2req _ <<<"$(delta "$s0" "$(stats)")"
p2copied=$(python3 -c "import json; print(json.load(open('$DIR/push2.json'))['copied'])")
p2bytes=$(python3 -c "import json; print(json.load(open('$DIR/push2.json'))['bytes'])")
p2ms=$(ms "$t0" "$t2")

echo "== resolving the ref: update of a follower one version behind, then at the newest"
s0=$(stats)
"$M" update --json "$DIR/f.swap" > "$DIR/update1.json"
settle; read -r up1req _ <<<"$(delta "$s0" "$(stats)")"
s0=$(stats)
"$M" update --json "$DIR/f.swap" > "$DIR/update2.json"
settle; read -r up2req _ <<<"$(delta "$s0" "$(stats)")"

echo "== serve --follow --poll $POLL: push to offered, 5 times"
"$M" serve "$DIR/f.swap" --read-only --follow --poll "$POLL" --socket "$DIR/f.sock" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do [ -S "$DIR/f.sock" ] && break; sleep 0.1; done
: > "$DIR/follow.txt"
for i in 1 2 3 4 5; do
  head -c 4096 /dev/urandom | dd of="$DIR/img.raw" bs=4096 seek=$((i * 7)) conv=notrunc status=none
  "$M" import "$DIR/a.swap" "$DIR/img.raw" >/dev/null
  "$M" push --json --ref main "$DIR/a.swap" "$URL" > "$DIR/pushf.json"
  t0=$(now)
  seq=$(python3 -c "import json; print(json.load(open('$DIR/pushf.json'))['ref']['seq'])")
  for _ in $(seq 2000); do
    nbdinfo --list "nbd+unix:///?socket=$DIR/f.sock" 2>/dev/null | grep -q "main@$seq" && break
    sleep 0.01
  done
  t1=$(now)
  ms "$t0" "$t1" >> "$DIR/follow.txt"
done
follow=$(sort -n "$DIR/follow.txt" | tr '\n' ' ')

echo "== 100 versions of a 64 MiB disk, then gc --keep 10 --grace 0s"
python3 bench/make-image.py "$DIR/small.raw" 64
"$M" create --size 64M "$DIR/g.swap" >/dev/null
"$M" import "$DIR/g.swap" "$DIR/small.raw" >/dev/null
for i in $(seq 100); do
  head -c 65536 /dev/urandom | dd of="$DIR/small.raw" bs=65536 seek=$((i % 1000)) conv=notrunc status=none
  "$M" import "$DIR/g.swap" "$DIR/small.raw" >/dev/null
  "$M" push --ref small "$DIR/g.swap" s3://bucket/gc >/dev/null
done
s0=$(stats); t0=$(now)
"$M" gc --json --keep 10 --grace 0s --key-from "$DIR/g.swap" s3://bucket/gc > "$DIR/gc.json"
t1=$(now); settle
read -r gcreq _ <<<"$(delta "$s0" "$(stats)")"
gcms=$(ms "$t0" "$t1")

python3 - "$DIR" <<PY
import json, sys
d = sys.argv[1]
gc = json.load(open(f"{d}/gc.json"))
u1 = json.load(open(f"{d}/update1.json")); u2 = json.load(open(f"{d}/update2.json"))
print(f"""
Refs at s3s-fs through a ${LAT} ms proxy, ${SIZE_MIB} MiB disk, $(nproc) cores, $(date -u +%F)
| what | figure |
|---|---|
| first push --ref: chunks, bytes, requests | ${p1chunks} chunks, ${p1bytes} bytes, ${p1req} requests |
| push --ref of a 1 MiB change: chunks copied, bytes, requests, time | ${p2copied} chunks, ${p2bytes} bytes, ${p2req} requests, ${p2ms} ms |
| update one version behind: requests ({u1['outcome']}) | ${up1req} |
| update at the newest: requests ({u2['outcome']}) | ${up2req} |
| push done to main@N offered (poll ${POLL}), ms, 5 runs | ${follow}|
| gc --keep 10 of 100 versions: requests, time | ${gcreq} requests, ${gcms} ms |
| gc: versions deleted, chunks deleted, bytes freed, chunks live | {gc['versions_deleted']}, {gc['garbage_chunks']}, {gc['garbage_bytes']}, {gc['live_chunks']} |
""")
PY
