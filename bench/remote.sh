#!/usr/bin/env bash
# Remote reads through a proxy that adds latency (20 ms a request by default), from
# nginx on 127.0.0.1, in one run, against qemu's curl driver and `nbdkit curl` reading
# the same raw image through the same proxy. Prints a table: first-read round trips,
# cold sequential read (MB/s, GET requests, bytes fetched / bytes read), a boot trace
# replayed cold with --prefetch against warm, and random 4 KiB reads cold and warm.
# SERVER s3: our reads go to s3s-fs (SigV4, the disk pushed to s3://bucket/pub) behind
# a proxy of the same latency; the peers still read the raw image from nginx, since
# s3s-fs hashes a whole object for every GET (0.57 s for 4 KiB of a 200 MB object here),
# which would make a 1 GiB image unreadable in ranges.
# Usage: bench/remote.sh [SIZE_MIB] [LATENCY_MS] [nginx|s3]    (root not needed)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SIZE_MIB="${1:-1024}" LAT="${2:-20}" SERVER="${3:-nginx}"
case "$SERVER" in nginx | s3) ;; *) echo "SERVER is nginx or s3" >&2; exit 2 ;; esac
DIR="${BENCH_DIR:-/tmp/mindcastle-remote-bench}"
rm -rf "$DIR" && mkdir -p "$DIR/www/pub"
cargo build --release -q
cargo build --release -q --example fault_proxy
M=$PWD/target/release/mindcastle
PROXY=$PWD/target/release/examples/fault_proxy
pids=()
cleanup() { local p; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
# shellcheck source=bench/web.sh
source bench/web.sh
now() { date +%s.%N; }
STATS="$DIR/proxy.stats"         # counters of the proxy our reads go through
stats() { cat "$STATS"; }        # requests bytes injected
peer_stats() { cat "$DIR/proxy.stats"; }

echo "== preparing a ${SIZE_MIB} MiB half-compressible image, disk and nginx"
python3 bench/make-image.py "$DIR/www/img.raw" "$SIZE_MIB"
"$M" create --size "${SIZE_MIB}M" "$DIR/a.swap" >/dev/null
"$M" import "$DIR/a.swap" "$DIR/www/img.raw"
"$M" push "$DIR/a.swap" "$DIR/www/pub" >/dev/null
start_web
URL="http://127.0.0.1:$P"
FALLBACK="$URL/pub"
if [ "$SERVER" = s3 ]; then
  start_s3
  AWS_ENDPOINT_URL="$S3_DIRECT" "$M" push "$DIR/a.swap" s3://bucket/pub >/dev/null
  FALLBACK="s3://bucket/pub" STATS="$DIR/s3proxy.stats"
fi

mkswap() { # NAME [extra lines]
  local name=$1; shift
  { cat "$DIR/a.swap"; echo "swapdata=$name-data"; echo "fallback=$FALLBACK"; printf '%s\n' "$@"; } > "$DIR/$name.swap"
  chmod 600 "$DIR/$name.swap"
}
serve() { # NAME -> socket; extra args after
  local name=$1; shift
  "$M" serve "$DIR/$name.swap" --socket "$DIR/$name.sock" "$@" 2>/dev/null & pids+=($!)
  for _ in $(seq 100); do [ -S "$DIR/$name.sock" ] && return; sleep 0.1; done
  echo "no socket for $name" >&2; exit 1
}
delta() { # BEFORE AFTER -> "requests bytes"
  read -r r0 b0 _ <<<"$1"; read -r r1 b1 _ <<<"$2"; echo "$((r1 - r0)) $((b1 - b0))"
}
BYTES=$((SIZE_MIB << 20))

echo "== first read: opening (serve start to socket ready), then the first 4 KiB read; 3 times"
first_read() { # N -> "open_ms read_ms open_requests read_requests"
  local name="first$1"
  mkswap "$name" "cache=$name-cache"
  local s0 t0 t1 s1 rd
  s0=$(stats); t0=$(now)
  "$M" serve "$DIR/$name.swap" --socket "$DIR/$name.sock" 2>/dev/null & pids+=($!)
  for _ in $(seq 5000); do [ -S "$DIR/$name.sock" ] && break; sleep 0.001; done
  t1=$(now); sleep 0.1; s1=$(stats)  # the proxy writes its counters every 50 ms
  # The read timed inside the client, so nbdsh's own start-up is not counted.
  rd=$(/usr/bin/nbdsh -u "nbd+unix:///?socket=$DIR/$name.sock" -c '
import time
t = time.monotonic(); h.pread(4096, 1 << 20); print(round((time.monotonic() - t) * 1000, 1))')
  sleep 0.1
  read -r oreq _ <<<"$(delta "$s0" "$s1")"; read -r rreq _ <<<"$(delta "$s1" "$(stats)")"
  echo "$(python3 -c "print(round(($t1-$t0)*1000))") $rd $oreq $rreq"
}
for i in 1 2 3; do first_read "$i"; done > "$DIR/first.txt"
# The median run by its total.
read -r open_ms read_ms open_req read_req <<<"$(awk '{print $1 + $2, $0}' "$DIR/first.txt" | sort -n | sed -n 2p | cut -d' ' -f2-)"
first_rt=$(python3 -c "print(round(($open_ms + $read_ms)/$LAT, 1))")

echo "== cold sequential read of the whole disk"
mkswap seq "cache=seq-cache"   # the remote set-up users run: a cache (and with it read-ahead)
s0=$(stats); t0=$(now)
"$M" export "$DIR/seq.swap" /dev/null
t1=$(now); read -r seq_req seq_bytes <<<"$(delta "$s0" "$(stats)")"
seq_mbs=$(python3 -c "print(round($BYTES/1e6/($t1-$t0),1))")
s0=$(peer_stats); t0=$(now)
qemu-img convert -f raw -O raw "json:{\"file.driver\":\"http\",\"file.url\":\"$URL/img.raw\"}" "$DIR/q.raw"
t1=$(now); rm -f "$DIR/q.raw"; read -r q_req q_bytes <<<"$(delta "$s0" "$(peer_stats)")"
q_mbs=$(python3 -c "print(round($BYTES/1e6/($t1-$t0),1))")
K_SOCK="$DIR/k.sock"
nbdkit -U "$K_SOCK" curl "url=$URL/img.raw" 2>/dev/null & pids+=($!)
for _ in $(seq 100); do [ -S "$K_SOCK" ] && break; sleep 0.1; done
s0=$(peer_stats); t0=$(now)
nbdcopy "nbd+unix:///?socket=$K_SOCK" null:
t1=$(now); read -r k_req k_bytes <<<"$(delta "$s0" "$(peer_stats)")"
k_mbs=$(python3 -c "print(round($BYTES/1e6/($t1-$t0),1))")

echo "== a boot trace: 1500 scattered 64 KiB reads, cold with --prefetch and warm"
python3 - "$DIR/boot.trace" "$BYTES" <<'PY'
import random, sys
r = random.Random(7); size = int(sys.argv[2])
with open(sys.argv[1], "w") as f:
    for i in range(1500):
        f.write(f"{r.randrange(0, size // 65536) * 65536} 65536 {i}\n")
PY
replay() { # socket -> seconds, timed inside the client (Python's start not counted)
  /usr/bin/python3 - "$1" "$DIR/boot.trace" <<'PY'
import nbd, sys, time
h = nbd.NBD(); h.connect_uri(f"nbd+unix:///?socket={sys.argv[1]}")
t = time.monotonic()
for line in open(sys.argv[2]):
    off, n, _ = line.split(); h.pread(int(n), int(off))
print(round(time.monotonic() - t, 3))
h.shutdown()
PY
}
mkswap boot "cache=boot-cache"
serve boot --prefetch "$DIR/boot.trace"
boot_cold=$(replay "$DIR/boot.sock")
boot_warm=$(replay "$DIR/boot.sock")
# The prefetch alone, into another cold cache: what it planned and how long it took.
mkswap pfonly "cache=pfonly-cache"
s0=$(stats); t0=$(now)
pf_json=$("$M" prefetch --json --trace "$DIR/boot.trace" "$DIR/pfonly.swap")
t1=$(now); sleep 0.1; read -r pf_req pf_bytes <<<"$(delta "$s0" "$(stats)")"
pf_s=$(python3 -c "print(round($t1-$t0,2))")
pf_plan=$(python3 -c "import json,sys; p=json.loads(sys.argv[1]); print(p['requests'], 'fetches planned over', p['chunks'], 'chunks,', round(p['stored_bytes']/2**20,1), 'MiB')" "$pf_json")
mkswap nopf "cache=nopf-cache"
serve nopf
boot_nopf=$(replay "$DIR/nopf.sock")

echo "== random 4 KiB reads (fio nbd, qd32, 10 s), cold then warm cache"
mkswap rand "cache=rand-cache"
serve rand
fio_iops() {
  fio --name=r --ioengine=nbd --uri="nbd+unix:///?socket=$DIR/rand.sock" --size="${SIZE_MIB}M" \
      --rw=randread --bs=4k --iodepth=32 --runtime=10 --time_based=1 --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); print(round(json.loads(t[t.index("{"):])["jobs"][0]["read"]["iops"]))'
}
rand_cold=$(fio_iops)
"$M" prefetch --trace <(echo "0 $BYTES 0") "$DIR/rand.swap" >/dev/null 2>&1 || true
rand_warm=$(fio_iops)

cat <<TABLE

Remote reads from $SERVER, ${SIZE_MIB} MiB disk, ${LAT} ms per request at the proxy, $(nproc) cores$( [ "$SERVER" = s3 ] && echo " (peers from nginx)")
| measure | mindcastle | peer | ratio / target |
|---|---|---|---|
| first read after starting serve (with cache=): open + read time, in round trips, requests | ${open_ms} + ${read_ms} ms = $first_rt RTT; $open_req + $read_req requests | | target <= 3 RTT |
| cold sequential read, MB/s | $seq_mbs | qemu-img curl $q_mbs; nbdkit curl $k_mbs | $(python3 -c "print(round($seq_mbs/$q_mbs,2), round($seq_mbs/$k_mbs,2))") (target >= 1.0) |
| GET requests for it | $seq_req | qemu $q_req; nbdkit $k_req | target <= $((SIZE_MIB + 4)) |
| bytes fetched / bytes read | $(python3 -c "print(round($seq_bytes/$BYTES,3))") | qemu $(python3 -c "print(round($q_bytes/$BYTES,3))"); nbdkit $(python3 -c "print(round($k_bytes/$BYTES,3))") | target <= 1.3 |
| boot trace (1500 x 64 KiB, timed in the client): cold with --prefetch / warm, s | $boot_cold / $boot_warm | cold without prefetch $boot_nopf | $(python3 -c "print(round($boot_cold/max($boot_warm,0.001),2))") (target <= 1.5) |
| \`prefetch\` of that trace alone (process start included) | $pf_s s: $pf_plan; $pf_req requests, $(python3 -c "print(round($pf_bytes/2**20,1))") MiB at the proxy | | |
| random 4 KiB reads, IOPS: cold / warm cache | $rand_cold / $rand_warm | | |
TABLE
