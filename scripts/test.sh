#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, integration, real
# clients). This is the README's second command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release -- --test-threads=2
./scripts/fuzz.sh 20
