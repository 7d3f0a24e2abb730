#!/usr/bin/env bash
# Installs the system packages mindcastle and its tests use (Debian 12; run as root, or
# as a user with sudo). apt's own messages are shown: a conflict names its packages.
# With --with-test-tools it also installs the tools the test suite builds or fetches
# from other registries (cargo-fuzz and s3s-fs from crates.io, Azurite from npm,
# gcp-storage-emulator from PyPI); .ci/run passes it, the README's first command (the
# demo) does not need them.
#
# A machine that already carries a newer QEMU from bookworm-backports (qemu-utils
# 10.x) cannot take bookworm's qemu-system-x86 7.2 beside it; there the backports
# suite is enabled and the QEMU packages come from it, matching what is installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
here="$(cd "$(dirname "$0")" && pwd)"
TEST_TOOLS=false
[ "${1:-}" = --with-test-tools ] && TEST_TOOLS=true
SUDO=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps.sh: run as root (no sudo here)" >&2; exit 1; }
  SUDO=(sudo)
fi

# package -> the tests or tools that need it (printed when it cannot be installed)
declare -A NEEDED_BY=(
  [libnbd-bin]="tests/nbd_clients.rs (nbdinfo, nbdcopy), tests/attach.rs"
  [python3-libnbd]="tests/nbd_clients.rs, tests/nbd_hostile.rs (nbdsh)"
  [nbdfuse]="tests/nbd_clients.rs (nbdfuse + loop)"
  [nbdkit]="bench/ (peer server)"
  [qemu-utils]="tests/nbd_clients.rs (qemu-img), bench/ (qemu-nbd)"
  [fio]="tests/nbd_clients.rs (fio nbd engine), bench/"
  [fuse3]="tests/attach.rs (FUSE + loop attach)"
  [xfsprogs]="tests/attach.rs (mkfs.xfs), examples/statechange.sh"
  [e2fsprogs]="tests/attach.rs (mkfs.ext4)"
  [strace]="tests/fsync.rs (fsync order)"
  [qemu-system-x86]="tests/kernel_nbd_vm.rs, tests/power_cut_vm.rs"
  [busybox-static]="tests/kernel_nbd_vm.rs (guest initramfs)"
  [cpio]="tests/kernel_nbd_vm.rs (guest initramfs)"
  [kmod]="tests/vm/fetch-kernel.sh (depmod: the guest kernel's module dependencies)"
  [zstd]="tests/vm/fetch-kernel.sh (the guest kernel's modules)"
  [shellcheck]="scripts/test.sh (lint of every shell script)"
  [qemu-block-extra]="bench/remote.sh (qemu's curl driver as the peer)"
  [python3-azure]="tests/remote.rs (makes the Azurite container)"
  [nginx-light]="tests/remote.rs (a pushed folder served over http, WebDAV push)"
  [python3-venv]="scripts/install-deps.sh (a venv for the GCS emulator of tests/remote.rs)"
  [openssl]="tests/nbd_tls.rs (makes the test's certificates)"
  [libssl-dev]="the build (serve --tls-psk uses OpenSSL, linked through pkg-config)"
  [libclang-dev]="the build (libublk generates its kernel bindings with bindgen)"
)
PKGS=(ca-certificates coreutils util-linux strace build-essential pkg-config libssl-dev libclang-dev
  libnbd-bin python3-libnbd nbdfuse nbdkit qemu-utils fio
  fuse3 xfsprogs e2fsprogs shellcheck nginx-light python3-azure
  busybox-static cpio binutils xz-utils zstd kmod openssl)
QEMU_SYS=(qemu-system-x86 qemu-block-extra)

apt_install() { "${SUDO[@]}" apt-get install -y -q --no-install-recommends "$@"; }

"${SUDO[@]}" apt-get update -q
qemu_version=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
QEMU_TARGET=()
if [[ "$qemu_version" == *bpo12* ]]; then
  echo "install-deps.sh: qemu-utils $qemu_version comes from bookworm-backports; taking qemu-system-x86 from there too"
  src=/etc/apt/sources.list.d/mindcastle-backports.sources
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' |
      "${SUDO[@]}" tee "$src" >/dev/null
    "${SUDO[@]}" apt-get update -q
  fi
  QEMU_TARGET=(-t bookworm-backports)
fi

failed=()
if ! apt_install "${PKGS[@]}"; then
  # Find which ones fail, one at a time, so the message names them.
  for p in "${PKGS[@]}"; do apt_install "$p" >/dev/null 2>&1 || failed+=("$p"); done
fi
apt_install "${QEMU_TARGET[@]}" "${QEMU_SYS[@]}" || failed+=("${QEMU_SYS[@]}")
if [ ${#failed[@]} -gt 0 ]; then
  echo >&2
  echo "install-deps.sh: could not install: ${failed[*]}" >&2
  for p in "${failed[@]}"; do
    echo "  $p is needed by ${NEEDED_BY[$p]:-the build}" >&2
  done
  echo "  (apt-get -s install PACKAGE shows why)" >&2
  exit 1
fi

# The kernel nbd test boots Debian's kernel (unpacked, not installed) under qemu.
"${SUDO[@]}" "$here/../tests/vm/fetch-kernel.sh"
command -v cargo >/dev/null || { echo "install-deps.sh: install Rust first (rustup)" >&2; exit 1; }
# Cargo tools the tests use, for the user who runs them (here when that is root, else
# the commands to run): cargo-fuzz for the fuzz smoke run, s3s-fs as the S3 server of
# tests/remote.rs (0.14.1: later releases need a newer rustc).
cargo_tool() {
  local check=$1; shift
  if ! sh -c "$check" >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
      cargo install --locked "$@"
    else
      echo "install-deps.sh: also run: cargo install --locked $*" >&2
    fi
  fi
}
if $TEST_TOOLS; then
  cargo_tool "cargo fuzz --version" cargo-fuzz
  cargo_tool "command -v s3s-fs" s3s-fs@0.14.1 --features binary
  # Azurite (npm), the Azure blob emulator of tests/remote.rs (run with telemetry off).
  if ! command -v azurite-blob >/dev/null; then
    command -v npm >/dev/null || { echo "install-deps.sh: npm is needed for azurite (tests/remote.rs)" >&2; exit 1; }
    "${SUDO[@]}" npm install -g --no-fund --no-audit azurite
  fi
  # gcp-storage-emulator (PyPI), the GCS server of tests/remote.rs, in its own venv.
  if ! command -v gcp-storage-emulator >/dev/null; then
    "${SUDO[@]}" python3 -m venv /opt/mindcastle-gcs-emulator
    "${SUDO[@]}" /opt/mindcastle-gcs-emulator/bin/pip install --quiet gcp-storage-emulator==2026.7.19
    "${SUDO[@]}" ln -sf /opt/mindcastle-gcs-emulator/bin/gcp-storage-emulator /usr/local/bin/
  fi
fi
echo "install-deps.sh: done"
