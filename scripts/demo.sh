#!/usr/bin/env bash
# The main job on a fresh machine (as root): build, create demo.swap if missing, attach
# it as a block device with examples/statechange.sh, which makes an XFS filesystem and
# mounts it at /tmp/mnt-UUID. Stays attached until Ctrl-C (or kill -HUP PID).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
exec target/release/mindcastle --size "${DEMO_SIZE:-10G}" demo.swap examples/statechange.sh
