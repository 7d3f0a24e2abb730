#!/usr/bin/env bash
# Fuzz smoke run of the NBD wire decoders (cargo-fuzz, libFuzzer). The machine's stable
# toolchain builds it with RUSTC_BOOTSTRAP=1 (cargo fuzz needs -Z flags).
# Usage: scripts/fuzz.sh [SECONDS] (default 20)
set -euo pipefail
cd "$(dirname "$0")/../crates/nbd-proto"
if ! cargo fuzz --version >/dev/null 2>&1; then
  if [ "${CI:-}" = true ]; then echo "cargo-fuzz missing under CI=true" >&2; exit 1; fi
  echo "SKIPPING fuzz smoke: cargo-fuzz not installed (cargo install cargo-fuzz)" >&2
  exit 0
fi
RUSTC_BOOTSTRAP=1 cargo fuzz run decode -- -max_total_time="${1:-20}" 2>&1 | tail -3
