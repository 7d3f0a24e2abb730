# shellcheck shell=bash
# Shared by the interleaved A/B scripts (`ab.sh`, `nbdcopy-ab.sh`): a fresh disk of
# SIZE_MIB served by one build on "$DIR/s.sock". Source it; it uses and sets `pid`.

# serve_fresh BIN SIZE_MIB: creates "$DIR/d/d.swap" and serves it; waits for the socket.
serve_fresh() {
  rm -rf "$DIR/d" && mkdir -p "$DIR/d"
  "$1" create --size "${2}M" "$DIR/d/d.swap" >/dev/null
  "$1" serve "$DIR/d/d.swap" --socket "$DIR/s.sock" >/dev/null 2>&1 & pid=$!
  for _ in $(seq 100); do [ -S "$DIR/s.sock" ] && break; sleep 0.1; done
}

# stop_served: SIGTERM (a clean close), then waits for it.
stop_served() {
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true; pid=""; rm -f "$DIR/s.sock"
}

# CPU ticks (user + system) of process $1 so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
