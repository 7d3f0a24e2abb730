#!/usr/bin/env bash
# A recorded trace of a real program start, replayed with prefetch: the program is
# Python importing 126 standard-library modules and rendering a pydoc page, with its
# whole standard library (the host's /usr/lib/python3.X, .pyc files included) on a
# 2 GiB ext4 disk (with the host's /usr/share beside it) published to nginx on 127.0.0.1 and read through our latency proxy, the
# way a container or VM image starts an application from a published disk.
#   1. record: attach from the URL with --trace, mount read-only, run the program;
#   2. warm: the same cache (now holding what the program read), attached and mounted
#      again for each of 3 runs;
#   3. cold with prefetch: a new empty cache, attach --prefetch TRACE, mount, run;
#      3 times, each with its own new cache;
#   4. cold without prefetch, once.
# The time is the program's run, after the mount, with the kernel's page cache dropped
# first in every case; the table also gives attach start to program end. Target (remote issue): cold
# with prefetch <= 1.5x warm. bench/remote.sh has the worst case: a synthetic trace of
# back-to-back reads with no work between them.
# SERVER s3: the disk is pushed to s3s-fs (SigV4) and read as s3://bucket/pub through a
# proxy of the same latency.
# Usage: bench/remote-boot.sh [LATENCY_MS] [nginx|s3]    (as root: attach, mount, drop_caches)
# MC_BIN=PATH runs another build of mindcastle (an A/B: interleave runs of each).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/bin:/usr/sbin:$PATH"
LAT="${1:-20}" SERVER="${2:-nginx}"
case "$SERVER" in nginx | s3) ;; *) echo "SERVER is nginx or s3" >&2; exit 2 ;; esac
DIR="${BENCH_DIR:-/tmp/mindcastle-boot-bench}"
[ "$(id -u)" = 0 ] || { echo "bench/remote-boot.sh: needs root (attach, mount, drop_caches)" >&2; exit 1; }
PY=/usr/bin/python3
STDLIB=$($PY -c 'import sysconfig; print(sysconfig.get_paths()["stdlib"])')
rm -rf "$DIR" && mkdir -p "$DIR/www/pub" "$DIR/tree/usr/lib" "$DIR/mnt"
cargo build --release -q
cargo build --release -q --example fault_proxy
M=${MC_BIN:-$PWD/target/release/mindcastle}
PROXY=$PWD/target/release/examples/fault_proxy
pids=()
attach_pid=
cleanup() {
  local p
  [ -n "$attach_pid" ] && kill -HUP "$attach_pid" 2>/dev/null && wait "$attach_pid" 2>/dev/null
  mountpoint -q "$DIR/mnt" && umount "$DIR/mnt"
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
# shellcheck source=bench/web.sh
source bench/web.sh

echo "== $STDLIB and /usr/share on an ext4 image, a disk, pushed to nginx"
cp -a "$STDLIB" "$DIR/tree/usr/lib/"
# The rest of an image that the program does not read, as in a real one: here the
# host's /usr/share (a few hundred MiB of documentation, locales and data).
cp -a /usr/share "$DIR/tree/usr/"
cat > "$DIR/app.py" <<'APP'
import importlib, json, pydoc, sys
mods = """abc argparse ast asyncio base64 bdb binascii bisect bz2 calendar cmd code codecs
collections colorsys compileall concurrent.futures configparser contextlib copy csv ctypes
dataclasses datetime decimal difflib dis doctest email email.mime.multipart enum filecmp
fileinput fnmatch fractions ftplib functools getopt gettext glob gzip hashlib heapq hmac html
html.parser http.client http.cookiejar http.server imaplib inspect io ipaddress json logging
logging.handlers lzma mailbox mimetypes multiprocessing netrc numbers operator optparse pathlib
pdb pickle pickletools pkgutil platform plistlib poplib pprint profile pstats pydoc queue
quopri random re sched secrets selectors shelve shlex shutil signal smtplib socket socketserver
sqlite3 ssl statistics string struct subprocess sysconfig tarfile tempfile textwrap threading
timeit tokenize trace traceback types typing unittest unittest.mock urllib.parse
urllib.request uuid venv warnings wave weakref webbrowser wsgiref.simple_server xml.dom.minidom
xml.etree.ElementTree xml.sax xmlrpc.client xmlrpc.server zipapp zipfile zoneinfo""".split()
n = sum(1 for m in mods if importlib.import_module(m))
json.dumps(pydoc.render_doc(json, renderer=pydoc.plaintext))
assert sys.prefix.startswith(sys.argv[1]), sys.prefix  # the disk's library, not the host's
print(n)
APP
truncate -s 2G "$DIR/fs.img"
mkfs.ext4 -q -F -d "$DIR/tree" "$DIR/fs.img"
"$M" create --size 2G "$DIR/a.swap" >/dev/null
"$M" import "$DIR/a.swap" "$DIR/fs.img"
"$M" push "$DIR/a.swap" "$DIR/www/pub" >/dev/null
rm -f "$DIR/fs.img"
start_web
FALLBACK="http://127.0.0.1:$P/pub" STATS="$DIR/proxy.stats"
if [ "$SERVER" = s3 ]; then
  start_s3
  AWS_ENDPOINT_URL="$S3_DIRECT" "$M" push "$DIR/a.swap" s3://bucket/pub >/dev/null
  FALLBACK="s3://bucket/pub" STATS="$DIR/s3proxy.stats"
fi
write_mount_script
now() { date +%s.%N; }
stats() { cat "$STATS"; }

mkswap() { # NAME: a .swap for another host, with its own data folder and cache
  { grep -v '^swapdata=' "$DIR/a.swap"; echo "swapdata=$1-data"; echo "fallback=$FALLBACK"; echo "cache=$1-cache"; } > "$DIR/$1.swap"
  chmod 600 "$DIR/$1.swap"
}
attach() { # NAME [attach options]: attach and wait for the mount; sets T_ATTACH
  local name=$1; shift
  T_ATTACH=$(now)
  "$M" attach "$@" "$DIR/$name.swap" "$DIR/mount.sh" > "$DIR/$name.log" 2>&1 & attach_pid=$!
  for _ in $(seq 1200); do mountpoint -q "$DIR/mnt" && return; sleep 0.01; done
  cat "$DIR/$name.log" >&2; exit 1
}
detach() {
  kill -HUP "$attach_pid"; wait "$attach_pid" || true; attach_pid=
}
run_app() { # -> "seconds_of_the_run seconds_since_attach"
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0 t1 n
  t0=$(now)
  n=$(PYTHONHOME="$DIR/mnt/usr" PYTHONDONTWRITEBYTECODE=1 "$PY" -s "$DIR/app.py" "$DIR/mnt/usr")
  t1=$(now)
  [ "$n" = 126 ] || { echo "the program imported $n modules, not 126" >&2; exit 1; }
  python3 -c "print(round($t1 - $t0, 3), round($t1 - $T_ATTACH, 3))"
}
median() { sort -n | sed -n 2p; }

echo "== 1. record the program's reads (attach --trace)"
mkswap rec
attach rec --trace "$DIR/boot.trace"
run_app > /dev/null
detach
echo "   $(wc -l < "$DIR/boot.trace") reads, $(awk '{s += $2} END {printf "%.1f MiB", s / 2^20}' "$DIR/boot.trace")"

echo "== 2. warm: the recording's cache, attached again for each of 3 runs"
for _ in 1 2 3; do
  attach rec
  run_app
  detach
done > "$DIR/warm.txt"
read -r warm warm_total <<<"$(median < "$DIR/warm.txt")"

echo "== 3. cold with --prefetch, 3 new caches"
for i in 1 2 3; do
  mkswap "cold$i"
  s0=$(stats)
  attach "cold$i" --prefetch "$DIR/boot.trace"
  r=$(run_app)
  detach
  read -r r0 b0 _ <<<"$s0"; read -r r1 b1 _ <<<"$(stats)"
  echo "$r $((r1 - r0)) $((b1 - b0))"
done > "$DIR/cold.txt"
read -r cold cold_total cold_req cold_bytes <<<"$(median < "$DIR/cold.txt")"

echo "== 4. cold without prefetch"
mkswap nopf
attach nopf
read -r nopf nopf_total <<<"$(run_app)"
detach

cat <<TABLE

A recorded program start through a URL fallback ($SERVER), ${LAT} ms a request at the proxy, $(nproc) cores
(python3 importing 126 modules from its standard library on the disk; times of the run
after mounting, page cache dropped; median of 3)
| measure | program run, s | attach start to program end, s | ratio to warm |
|---|---|---|---|
| warm cache | $warm | $warm_total | 1.0 |
| cold, --prefetch of the recorded trace | $cold | $cold_total | $(python3 -c "print(round($cold/$warm,2), '(target <= 1.5);', round($cold_total/$warm_total,2), 'from attach')") |
| cold, no prefetch | $nopf | $nopf_total | $(python3 -c "print(round($nopf/$warm,2), ';', round($nopf_total/$warm_total,2), 'from attach')") |
| requests, MiB at the proxy for a cold run with prefetch | $cold_req, $(python3 -c "print(round($cold_bytes/2**20,1))") | | |
TABLE
echo "warm runs: $(tr '\n' ';' < "$DIR/warm.txt")  cold runs: $(tr '\n' ';' < "$DIR/cold.txt")"
