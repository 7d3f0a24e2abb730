#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, integration, real
# clients). This is the README's second command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
# Installs nothing: a missing tool stops the run here, named, with the command that
# installs it.
missing=()
for tool in shellcheck nbdinfo nbdcopy nbdsh nbdfuse qemu-img qemu-nbd fio mkfs.xfs mkfs.ext4 \
    losetup fusermount3 strace sha512sum python3 qemu-system-x86_64 cpio nginx s3s-fs azurite-blob gcp-storage-emulator; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test.sh: missing ${missing[*]}: run scripts/install-deps.sh --with-test-tools (as root)" >&2
  exit 1
fi
cargo fuzz --version >/dev/null 2>&1 ||
  { echo "test.sh: cargo-fuzz is missing: scripts/install-deps.sh --with-test-tools (or cargo install cargo-fuzz --locked)" >&2; exit 1; }
# Disk is the first thing a build runs out of; say how much there was.
df -h . /tmp | sed 's/^/test.sh: /'
cargo fmt --all -- --check
shellcheck scripts/*.sh bench/*.sh bench/vm/*.sh examples/*.sh tests/vm/*.sh
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release -- --test-threads=2
./scripts/fuzz.sh 20
