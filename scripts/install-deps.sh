#!/usr/bin/env bash
# Installs the system packages mindcastle and its tests use (Debian; run as root).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  ca-certificates coreutils util-linux strace build-essential pkg-config \
  libnbd-bin python3-libnbd nbdfuse nbdkit qemu-utils fio \
  fuse3 xfsprogs e2fsprogs \
  qemu-system-x86 busybox-static cpio binutils xz-utils >/dev/null
# The kernel nbd test boots Debian's kernel (unpacked, not installed) under qemu.
$SUDO "$(dirname "$0")/../tests/vm/fetch-kernel.sh"
command -v cargo >/dev/null || { echo "install Rust first: https://rustup.rs" >&2; exit 1; }
