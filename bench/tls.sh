#!/usr/bin/env bash
# What TLS costs (issue 24): the same jobs against `mindcastle serve` and `qemu-nbd` on
# qcow2, each over TCP on 127.0.0.1 in plaintext and with TLS (x509, certificates made
# here with openssl), servers and modes interleaved over ROUNDS in one run. Jobs:
# nbdcopy of a half-compressible image in (with --flush) and out, MB/s; fio (nbd
# engine, libnbd, so nbds:// URIs) random 4 KiB reads and writes at queue depth 32,
# IOPS. Prints medians, then each server's TLS/plaintext ratio per job: TLS should
# cost mindcastle no more than it costs qemu-nbd.
# Usage: bench/tls.sh [SIZE_MIB] [SECONDS] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
SIZE_MIB="${1:-512}" SECS="${2:-10}" ROUNDS="${3:-2}"
DIR="${BENCH_DIR:-/tmp/mindcastle-tls}"
rm -rf "$DIR" && mkdir -p "$DIR/pki" "$DIR/server" "$DIR/client"
cargo build --release -q --bin mindcastle
M=$PWD/target/release/mindcastle
PORT="${BENCH_PORT:-10899}"
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi; }
trap cleanup EXIT

( # A CA and a server certificate for 127.0.0.1; clients trust the CA.
  cd "$DIR/pki"
  ec=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
  openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca-cert.pem -days 2 -subj /CN=bench-ca 2>/dev/null
  openssl req "${ec[@]}" -keyout server-key.pem -out server.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > server.ext
  openssl x509 -req -in server.csr -CA ca-cert.pem -CAkey ca-key.pem -CAcreateserial \
    -days 2 -extfile server.ext -out server-cert.pem 2>/dev/null
  cp ca-cert.pem server-cert.pem server-key.pem "$DIR/server/"
  cp ca-cert.pem "$DIR/client/"
)

start() { # SERVER MODE -> sets pid
  rm -rf "${DIR:?}/$1" && mkdir -p "$DIR/$1"
  case $1-$2 in
    mindcastle-plain)
      "$M" create --size "${SIZE_MIB}M" "$DIR/$1/d.swap" >/dev/null
      "$M" serve "$DIR/$1/d.swap" --listen "127.0.0.1:$PORT" >/dev/null 2>&1 & pid=$! ;;
    mindcastle-tls)
      "$M" create --size "${SIZE_MIB}M" "$DIR/$1/d.swap" >/dev/null
      "$M" serve "$DIR/$1/d.swap" --listen "127.0.0.1:$PORT" --tls-certificates "$DIR/server" >/dev/null 2>&1 & pid=$! ;;
    qcow2-plain)
      qemu-img create -q -f qcow2 "$DIR/$1/d.qcow2" "${SIZE_MIB}M"
      qemu-nbd -t -f qcow2 --cache=writeback --aio=threads --shared=8 -b 127.0.0.1 -p "$PORT" \
        "$DIR/$1/d.qcow2" >/dev/null 2>&1 & pid=$! ;;
    qcow2-tls)
      qemu-img create -q -f qcow2 "$DIR/$1/d.qcow2" "${SIZE_MIB}M"
      qemu-nbd -t -f qcow2 --cache=writeback --aio=threads --shared=8 -b 127.0.0.1 -p "$PORT" \
        --object "tls-creds-x509,id=tls0,endpoint=server,verify-peer=off,dir=$DIR/server" \
        --tls-creds tls0 "$DIR/$1/d.qcow2" >/dev/null 2>&1 & pid=$! ;;
  esac
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return; fi
    sleep 0.1
  done
  echo "$1 $2 did not start" >&2; exit 1
}
stop() {
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""
}
uri() { # MODE [fio] -- fio's nbd engine may not read files named in a URI
  # (libnbd's uri_allow_local_file is off there), so it cannot be given the CA: it
  # encrypts without checking the server's certificate (a benchmark on loopback only).
  if [ "$1" = tls ] && [ "${2:-}" = fio ]; then echo "nbds://127.0.0.1:$PORT/?tls-verify-peer=false"
  elif [ "$1" = tls ]; then echo "nbds://127.0.0.1:$PORT/?tls-certificates=$DIR/client"
  else echo "nbd://127.0.0.1:$PORT/"; fi
}
timed_mbs() { # command... -> MB/s of SIZE_MIB
  local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N)
  python3 -c "print(round($SIZE_MIB * 1048576 / 1e6 / ($t1 - $t0), 1))"
}
fio_iops() { # URI fio-args...
  local u=$1; shift
  fio --name=j --ioengine=nbd --uri="$u" --size="${SIZE_MIB}M" --buffer_compress_percentage=50 \
      --refill_buffers --runtime="$SECS" --time_based=1 --output-format=json "$@" 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); j=json.loads(t[t.index("{"):])["jobs"][0]; d=j["read"] if j["read"]["io_bytes"]>0 else j["write"]; print("%.0f" % d["iops"])'
}
python3 bench/make-image.py "$DIR/image.raw" "$SIZE_MIB"
: > "$DIR/results"
for round in $(seq "$ROUNDS"); do
  for srv in mindcastle qcow2; do
    for mode in plain tls; do
      start "$srv" "$mode"
      u=$(uri "$mode") f=$(uri "$mode" fio)
      {
        echo "$round $srv $mode copyin $(timed_mbs nbdcopy --flush "$DIR/image.raw" "$u")"
        echo "$round $srv $mode copyout $(timed_mbs nbdcopy "$u" null:)"
        echo "$round $srv $mode randwrite4k $(fio_iops "$f" --rw=randwrite --bs=4k --iodepth=32)"
        echo "$round $srv $mode randread4k $(fio_iops "$f" --rw=randread --bs=4k --iodepth=32)"
      } >> "$DIR/results"
      stop
    done
  done
done
python3 - "$DIR/results" "$SIZE_MIB" <<'PY'
import sys, statistics, collections
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    r, srv, mode, job, v = line.split()
    rows[(srv, mode, job)].append(float(v))
med = {k: statistics.median(v) for k, v in rows.items()}
print(f"{sys.argv[2]} MiB over TCP on 127.0.0.1, medians of the rounds "
      "(copyin/copyout MB/s by nbdcopy; random 4 KiB IOPS by fio at queue depth 32)")
for job in ["copyin", "copyout", "randwrite4k", "randread4k"]:
    cells, ratios = [], {}
    for srv in ["mindcastle", "qcow2"]:
        p, t = med[(srv, "plain", job)], med[(srv, "tls", job)]
        ratios[srv] = t / max(p, 1e-9)
        cells.append(f"{srv}: plain {p:.0f} tls {t:.0f} (tls/plain {ratios[srv]:.2f})")
    verdict = "ok" if ratios["mindcastle"] >= ratios["qcow2"] - 0.02 else "costs more"
    print(f"{job:<11} " + " | ".join(cells) + f" | mindcastle's TLS cost vs qemu-nbd's: {verdict}")
PY
