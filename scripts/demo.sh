#!/usr/bin/env bash
# The main job on a fresh machine: build, put `mindcastle` on PATH (/usr/local/bin),
# create demo.swap if missing, attach it as a block device with examples/statechange.sh,
# which makes an XFS filesystem and mounts it at /tmp/mnt-UUID. Stays attached until
# Ctrl-C (or kill -HUP PID). Builds as the calling user; attaching needs root, taken
# with sudo when the caller is not root.
set -euo pipefail
cd "$(dirname "$0")/.."
AS_ROOT=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "demo.sh: attaching needs root, and there is no sudo here" >&2; exit 1; }
  AS_ROOT=(sudo)
fi
cargo build --release -q
built="${CARGO_TARGET_DIR:-target}/release/mindcastle"
bin_dir=${MINDCASTLE_BIN_DIR:-/usr/local/bin}
"${AS_ROOT[@]}" install -m 0755 "$built" "$bin_dir/mindcastle"
echo "demo.sh: installed $bin_dir/mindcastle"
exec "${AS_ROOT[@]}" "$built" --size "${DEMO_SIZE:-10G}" demo.swap examples/statechange.sh
