#!/usr/bin/env bash
# Fuzz smoke run (cargo-fuzz, libFuzzer) of every decoder that reads outside input: the
# NBD wire (crates/nbd-proto/fuzz), the `.swap` parser, the write-ahead log, ref versions,
# index node / root plaintexts and the LZ4 block decoder; and of sealing any block a
# client writes (LZ4's encoder, fuzz/record.rs). The machine's stable
# toolchain builds them with RUSTC_BOOTSTRAP=1 (cargo fuzz needs -Z flags).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] (default 20 for the NBD wire, half that
# for each of the others)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz.sh: cargo-fuzz is missing; install it with: cargo install cargo-fuzz --locked" >&2
  exit 1
fi
secs="${1:-20}"
run() {
  echo "fuzz: $1 $2 (${3}s)"
  (cd "$1" && RUSTC_BOOTSTRAP=1 cargo fuzz run "$2" -- -max_total_time="$3" 2>&1 | tail -5)
}
run crates/nbd-proto decode "$secs"
for t in swapfile wal index ref_version record; do
  run . "$t" "$(( (secs + 1) / 2 ))"
done
