#!/usr/bin/env bash
# The whole test suite: formatting, lints, then every test (unit, integration, real
# clients). This is the README's second command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:$PATH"
cargo fmt --all -- --check
command -v shellcheck >/dev/null || { echo "shellcheck missing: run scripts/install-deps.sh" >&2; exit 1; }
shellcheck scripts/*.sh bench/*.sh bench/vm/*.sh examples/*.sh tests/vm/*.sh
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace --release -- --test-threads=2
./scripts/fuzz.sh 20
