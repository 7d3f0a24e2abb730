#!/usr/bin/env bash
# Attach benchmark (root): time to create + format (XFS) + mount a 10 GiB disk, and fio
# writing 1 GiB of files through the mounted filesystem (1 MiB writes, fsync at end);
# mindcastle attach against qemu-nbd + qcow2 + nbdfuse + loop, in the same run.
# Usage: bench/attach.sh [SIZE_GIB] [WRITE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:$PATH"
GIB="${1:-10}"; WMIB="${2:-1024}"
DIR="${BENCH_DIR:-/tmp/mindcastle-attach-bench}"
rm -rf "$DIR" && mkdir -p "$DIR"
cargo build --release -q
M=$PWD/target/release/mindcastle
now() { date +%s.%N; }
fio_write() {
  fio --name=w --directory="$1" --rw=write --bs=1M --size="${WMIB}M" --ioengine=psync --end_fsync=1 \
      --output-format=json 2>/dev/null | python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; print("%.1f" % (j["write"]["bw_bytes"]/1e6))'
}

# mindcastle
t0=$(now)
$M --size "${GIB}G" "$DIR/mc.swap" examples/statechange.sh >"$DIR/mc.log" 2>&1 & pid=$!
for _ in $(seq 600); do [ -f "$DIR/mc.swap" ] && break; sleep 0.05; done
uuid=$(sed -n 's/^uuid=//p' "$DIR/mc.swap")
for _ in $(seq 1200); do mountpoint -q "/tmp/mnt-$uuid" 2>/dev/null && break; sleep 0.05; done
t1=$(now)
mc_bw=$(fio_write "/tmp/mnt-$uuid")
kill -HUP $pid; wait $pid
mc_up=$(python3 -c "print($t1-$t0)")

# peer: qemu-nbd + qcow2 + nbdfuse + loop
t0=$(now)
qemu-img create -q -f qcow2 "$DIR/q.qcow2" "${GIB}G"
qemu-nbd -t -f qcow2 --cache=writeback --socket="$DIR/q.sock" "$DIR/q.qcow2" & qpid=$!
for _ in $(seq 100); do [ -S "$DIR/q.sock" ] && break; sleep 0.05; done
mkdir -p "$DIR/fuse" "$DIR/mnt"
nbdfuse "$DIR/fuse/disk" "nbd+unix:///?socket=$DIR/q.sock" & fpid=$!
for _ in $(seq 100); do [ -f "$DIR/fuse/disk" ] && break; sleep 0.05; done
dev=$(losetup -f --show "$DIR/fuse/disk")
mkfs.xfs -q "$dev"; mount "$dev" "$DIR/mnt"
t1=$(now)
q_bw=$(fio_write "$DIR/mnt")
umount "$DIR/mnt"; losetup -d "$dev"; fusermount3 -u "$DIR/fuse"; wait $fpid || true; kill $qpid; wait $qpid 2>/dev/null || true
q_up=$(python3 -c "print($t1-$t0)")

python3 - <<PY
mc_up, q_up, mc_bw, q_bw = $mc_up, $q_up, $mc_bw, $q_bw
print(f"create+format+mount ${GIB} GiB: mindcastle {mc_up:.2f} s, qemu-nbd+nbdfuse+loop {q_up:.2f} s, ratio {mc_up/q_up:.2f}")
print(f"fio write ${WMIB} MiB of files:  mindcastle {mc_bw:.1f} MB/s, qemu-nbd+nbdfuse+loop {q_bw:.1f} MB/s, ratio {mc_bw/q_bw:.2f}")
PY
rm -rf "$DIR"
