#!/usr/bin/env bash
# Engine benchmark: mindcastle import/export of a half-compressible image, space and
# write amplification; plus qemu-img converting the same-size raw image to qcow2 in the
# same run as a peer. Usage: bench/engine.sh [MiB] (default 1024).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${1:-1024}"
DIR="${BENCH_DIR:-/tmp/mindcastle-bench}"
cargo build --release --example bench_engine -q
BENCH_MIB="$MIB" target/release/examples/bench_engine "$DIR" | tee "$DIR.out"
if command -v qemu-img >/dev/null; then
  raw="$DIR/peer.raw"
  python3 - "$raw" "$MIB" <<'PY'
import os, sys
path, mib = sys.argv[1], int(sys.argv[2])
with open(path, "wb") as f:
    for i in range(mib // 4):
        r = os.urandom(2 << 20)
        out = bytearray()
        for k in range(0, len(r), 8):
            out += r[k:k+8] + b"\x5a" * 8
        f.write(out)
PY
  sync
  s=$(date +%s.%N); qemu-img convert -f raw -O qcow2 "$raw" "$DIR/peer.qcow2"; sync; e=$(date +%s.%N)
  peer=$(python3 -c "print($MIB*1048576/1e6/($e-$s))")
  s=$(date +%s.%N); qemu-img convert -f qcow2 -O raw "$DIR/peer.qcow2" "$DIR/peer.out"; e=$(date +%s.%N)
  peerx=$(python3 -c "print($MIB*1048576/1e6/($e-$s))")
  ours=$(awk '/^import:/{print $2}' "$DIR.out")
  oursx=$(awk '/^export/{print $3}' "$DIR.out")
  python3 - <<PY
print(f"peer qemu-img raw->qcow2: {float('$peer'):8.1f} MB/s; mindcastle import / peer = {float('$ours')/float('$peer'):.2f}")
print(f"peer qemu-img qcow2->raw: {float('$peerx'):8.1f} MB/s; mindcastle export / peer = {float('$oursx')/float('$peerx'):.2f}")
PY
  rm -f "$raw" "$DIR/peer.qcow2" "$DIR/peer.out"
fi
