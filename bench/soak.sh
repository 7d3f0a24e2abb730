#!/usr/bin/env bash
# Soak: runs the whole-CLI model (tests/cli_model.rs) with new seeds until DURATION
# seconds have passed, STEPS steps a run, and sums what the runs did. A failing seed
# stops the soak and is printed with the command that replays it.
# Usage: bench/soak.sh [DURATION_S] [STEPS]      e.g. bench/soak.sh 14400 2000
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:$PATH"
DURATION="${1:-3600}" STEPS="${2:-1000}"
cargo test --release --test cli_model --no-run >/dev/null 2>&1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
start=$(date +%s)
seed=$(( $(date +%s) % 1000000 ))
runs=0 steps=0 kills=0 snaps=0 clones=0 pushes=0 bytes=0
while [ $(( $(date +%s) - start )) -lt "$DURATION" ]; do
  seed=$((seed + 1))
  if ! MINDCASTLE_MODEL_SEED=$seed MINDCASTLE_MODEL_STEPS=$STEPS \
      cargo test --release --test cli_model -- --nocapture >"$log" 2>&1; then
    grep -E 'panicked|differs|step [0-9]+:' "$log" | tail -20
    grep -A 30 'panicked' "$log" | head -40
    cp "$log" "/tmp/soak-failed-$seed.log"
    echo "soak: the whole log is in /tmp/soak-failed-$seed.log"
    echo "soak: seed $seed FAILED; replay: MINDCASTLE_MODEL_SEED=$seed MINDCASTLE_MODEL_STEPS=$STEPS cargo test --release --test cli_model -- --nocapture"
    exit 1
  fi
  # "cli model: N steps, K kill -9, S snapshots, C clones, P pushes, ... B bytes compared, 0 lost"
  line=$(grep -E '^cli model: [0-9]+ steps' "$log")
  fields='s/^cli model: ([0-9]+) steps, ([0-9]+) kill -9, ([0-9]+) snapshots, ([0-9]+) clones, ([0-9]+) pushes, .* ([0-9]+) bytes compared, 0 lost$/\1 \2 \3 \4 \5 \6/p'
  parsed=$(echo "$line" | sed -nE "$fields")
  if [ -z "$parsed" ]; then
    echo "soak: the model's summary line changed shape: $line" >&2
    exit 1
  fi
  read -r s k sn c p b <<<"$parsed"
  runs=$((runs + 1)) steps=$((steps + s)) kills=$((kills + k)) snaps=$((snaps + sn))
  clones=$((clones + c)) pushes=$((pushes + p)) bytes=$((bytes + b))
  echo "soak: run $runs (seed $seed): $line"
done
echo "soak: $runs runs, $steps steps, $kills kill -9, $snaps snapshots, $clones clones, $pushes pushes, $bytes bytes compared, 0 lost, $(( $(date +%s) - start )) s"
