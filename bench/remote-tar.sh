#!/usr/bin/env bash
# Bytes fetched for reading every file of a mounted filesystem through a URL fallback:
# an ext4 image holding TREE_MIB of files (4 KiB to 8 MiB, half-compressible) is
# imported into a 1 GiB disk and pushed into nginx's web root on 127.0.0.1; a second
# `.swap` (fallback= through our latency proxy, cache=) is attached on FUSE + loop,
# mounted read-only, and `tar` reads every file. Prints bytes fetched at the proxy per
# byte of file data, GET requests and the time. Target (remote issue): <= 1.3.
# Usage: bench/remote-tar.sh [TREE_MIB] [LATENCY_MS]    (as root: attach needs FUSE + loop)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
TREE_MIB="${1:-600}" LAT="${2:-20}"
DIR="${BENCH_DIR:-/tmp/mindcastle-tar-bench}"
[ "$(id -u)" = 0 ] || { echo "bench/remote-tar.sh: attach needs root (FUSE + loop)" >&2; exit 1; }
rm -rf "$DIR" && mkdir -p "$DIR/www/pub" "$DIR/tree" "$DIR/mnt"
cargo build --release -q
cargo build --release -q --example fault_proxy
M=$PWD/target/release/mindcastle
PROXY=$PWD/target/release/examples/fault_proxy
pids=()
cleanup() {
  local p
  mountpoint -q "$DIR/mnt" && umount "$DIR/mnt"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
# shellcheck source=bench/web.sh
source bench/web.sh

echo "== a tree of ${TREE_MIB} MiB of files in an ext4 image, a disk, nginx"
python3 - "$DIR/tree" "$TREE_MIB" <<'PY'
import os, random, sys
root, left = sys.argv[1], int(sys.argv[2]) << 20
r = random.Random(11)
i = 0
while left > 0:
    # Sizes spread from 4 KiB to 8 MiB (log-uniform), as in a system image.
    n = min(left, int(4096 * 2 ** r.uniform(0, 11)))
    d = os.path.join(root, f"d{i % 37}")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i}"), "wb") as f:
        blocks, tail = divmod(n, 4096)
        for _ in range(blocks):
            f.write(os.urandom(2048) + bytes(2048))
        f.write(os.urandom(tail))
    left -= n
    i += 1
PY
FILE_BYTES=$(find "$DIR/tree" -type f -printf '%s\n' | awk '{s+=$1} END {print s}')
FILES=$(find "$DIR/tree" -type f | wc -l)
truncate -s 1G "$DIR/fs.img"
mkfs.ext4 -q -F -d "$DIR/tree" "$DIR/fs.img"
"$M" create --size 1G "$DIR/a.swap" >/dev/null
"$M" import "$DIR/a.swap" "$DIR/fs.img"
"$M" push "$DIR/a.swap" "$DIR/www/pub" >/dev/null
rm -f "$DIR/fs.img"
start_web
{ grep -v '^swapdata=' "$DIR/a.swap"; echo "swapdata=b-data"; echo "fallback=http://127.0.0.1:$P/pub"; echo "cache=b-cache"; } > "$DIR/b.swap"
chmod 600 "$DIR/b.swap"
write_mount_script

echo "== attach from the URL, mount read-only, tar every file"
read -r r0 b0 _ < "$DIR/proxy.stats"
"$M" "$DIR/b.swap" "$DIR/mount.sh" > "$DIR/attach.log" 2>&1 & attach=$!
for _ in $(seq 600); do mountpoint -q "$DIR/mnt" && break; sleep 0.05; done
mountpoint -q "$DIR/mnt" || { cat "$DIR/attach.log" >&2; exit 1; }
t0=$(date +%s.%N)
tar_bytes=$(cd "$DIR/mnt" && tar cf - . | wc -c)
t1=$(date +%s.%N)
sleep 0.1
read -r r1 b1 _ < "$DIR/proxy.stats"
kill -HUP "$attach"; wait "$attach" || true
python3 - "$FILE_BYTES" "$FILES" "$((b1 - b0))" "$((r1 - r0))" "$t0" "$t1" "$tar_bytes" "$LAT" <<'PY'
import sys
data, files, fetched, gets, t0, t1, tar, lat = sys.argv[1:]
data, fetched, gets = int(data), int(fetched), int(gets)
secs = float(t1) - float(t0)
print(f"\nReading every file of a mounted ext4 through a URL fallback ({lat} ms a request):")
print("| measure | value | target |")
print("|---|---|---|")
print(f"| files, bytes of file data | {files}, {data} ({data / 2**20:.0f} MiB) | |")
print(f"| bytes fetched (at the proxy, attach and mount included) | {fetched} | |")
print(f"| bytes fetched / bytes of file data | {fetched / data:.3f} | <= 1.3 |")
print(f"| GET requests | {gets} | |")
print(f"| tar of every file: time, MB/s of file data | {secs:.2f} s, {data / 1e6 / secs:.0f} MB/s | |")
print(f"| tar stream bytes (sanity) | {int(tar)} | |")
PY
