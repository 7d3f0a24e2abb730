#!/usr/bin/env bash
# Raw block I/O through an attached disk (root): attach a new disk, fill 512 MiB of it,
# then fio 4 KiB random reads and writes (libaio, direct, queue depth 32) on the block
# device the statechange script was given (/dev/nbdN or /dev/loopN). Add --fuse to
# force the FUSE + loop path. Usage: bench/attach-fio.sh [--fuse] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:$PATH"
FUSE=""; [ "${1:-}" = --fuse ] && { FUSE=--fuse; shift; }
SECS="${1:-8}"
DIR="${BENCH_DIR:-/tmp/mindcastle-attach-fio}"
rm -rf "$DIR" && mkdir -p "$DIR"
cargo build --release -q
cat > "$DIR/s.sh" <<EOS
#!/bin/sh
[ "\$1" = close ] && { kill -INT \$PID; exit 0; }
echo \$DEVICE > $DIR/dev
EOS
chmod +x "$DIR/s.sh"
target/release/mindcastle $FUSE --size 2G "$DIR/d.swap" "$DIR/s.sh" > "$DIR/log" 2>&1 &
pid=$!
trap 'kill -HUP $pid 2>/dev/null; wait $pid 2>/dev/null' EXIT
for _ in $(seq 200); do [ -s "$DIR/dev" ] && break; sleep 0.1; done
dev=$(cat "$DIR/dev")
head -c 536870912 /dev/urandom | dd of="$dev" bs=1M oflag=direct status=none
for rw in randread randwrite; do
  printf '%s on %s: ' "$rw" "$dev"
  fio --name=r --filename="$dev" --rw=$rw --bs=4k --iodepth=32 --ioengine=libaio --direct=1 \
      --size=512M --runtime="$SECS" --time_based=1 2>&1 | grep -E "(read|write): IOPS" | sed 's/^ *//'
done
