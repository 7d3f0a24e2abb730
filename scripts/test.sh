#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, integration, real
# clients). This is the README's second command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
# What the tests need and is missing is installed first (scripts/install-deps.sh
# --with-test-tools, as root or through sudo), so this works on a fresh machine after
# the README's first command; MINDCASTLE_NO_INSTALL=1 only reports what is missing.
tools=(shellcheck nbdinfo nbdcopy nbdsh nbdfuse qemu-img qemu-nbd fio mkfs.xfs mkfs.ext4
  losetup fusermount3 strace sha512sum python3 qemu-system-x86_64 cpio nginx s3s-fs
  azurite-blob gcp-storage-emulator)
missing_tools() {
  missing=()
  for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null || missing+=("$tool")
  done
  cargo fuzz --version >/dev/null 2>&1 || missing+=(cargo-fuzz)
}
missing_tools
if [ ${#missing[@]} -gt 0 ] && [ "${MINDCASTLE_NO_INSTALL:-0}" != 1 ]; then
  echo "test.sh: installing what the tests need (missing: ${missing[*]})" >&2
  if [ "$(id -u)" = 0 ]; then
    ./scripts/install-deps.sh --with-test-tools
  elif command -v sudo >/dev/null; then
    sudo --preserve-env=PATH,CARGO_HOME,RUSTUP_HOME ./scripts/install-deps.sh --with-test-tools
  fi
  missing_tools
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: missing ${missing[*]}: run scripts/install-deps.sh --with-test-tools (as root)" >&2
  exit 1
fi
# Disk is the first thing a build runs out of; say how much there was.
df -h . /tmp | sed 's/^/test.sh: /'
cargo fmt --all -- --check
shellcheck scripts/*.sh bench/*.sh bench/vm/*.sh examples/*.sh tests/vm/*.sh
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release -- --test-threads=2
./scripts/fuzz.sh 20
