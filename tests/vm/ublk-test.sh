#!/bin/sh
# Runs inside the test VM (Debian's 6.12 kernel with ublk_drv): attach through ublk.
# fio with verification on the raw device, sub-block overlapping writes and a discard
# read back, XFS made and filled, a clean detach (the device goes), a second attach
# with every file's sha256 equal, fsck, then 20 kills with SIGKILL under fio on XFS,
# each recovered by the next attach, and 5 hand-overs under the same load; then the
# reconnect timeout (the device removed, I/O errors, the flushed write kept). Prints
# "MCVM ok ..." per step and "MCVM-RESULT pass".
cd /work || exit 1
mkdir -p /run /var/lock
fail() {
    echo "MCVM-RESULT fail $*"
    echo "--- attach log"; tail -40 /work/ublk.log 2>/dev/null
    echo "--- fio"; tail -30 /work/fio.out 2>/dev/null
    echo "--- ublksrvd"; ls -la /run/ublksrvd; head -c 600 /run/ublksrvd/*.json; echo
    echo "--- dmesg"; dmesg | tail -20
    exit 1
}
cat > /work/ublk-state.sh <<'EOS'
#!/bin/sh
echo "ublk-state.sh $1 DEVICE=$DEVICE" >> /work/ublk-events
case "$1" in
create|open|recover) touch /work/ready ;;
close) kill -INT "$PID" ;;
esac
EOS
chmod +x /work/ublk-state.sh
wait_ready() {
    n=0
    while [ ! -e /work/ready ]; do
        n=$((n + 1)); [ $n -gt 600 ] && fail "no ready after 300 s ($1)"
        kill -0 "$2" 2>/dev/null || fail "mindcastle exited before ready ($1)"
        sleep 0.5
    done
    rm -f /work/ready
}
export MINDCASTLE_LOG=mindcastle=info
mindcastle attach --frontend ublk --size 1G -t /work/utrace u.swap /work/ublk-state.sh >> ublk.log 2>&1 &
pid=$!
wait_ready create "$pid"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' ublk-events | tail -1)
case "$dev" in /dev/ublkb*) ;; *) fail "ublk gave $dev" ;; esac
grep -q "is $dev (ublk, uuid" ublk.log || fail "attach did not tell the user the front end"
# Debian's 6.12 has user copy: request bytes move by pread/pwrite on the char device.
grep -q "user_copy=true" ublk.log || fail "no user copy on 6.12: $(grep 'front end' ublk.log)"
echo "MCVM ok ublk-create on $dev"

fio --name=v --filename="$dev" --size=256M --bsrange=4k-1m --rw=randwrite --iodepth=32 \
    --ioengine=libaio --direct=1 --verify=crc32c --verify_fatal=1 --do_verify=1 \
    --output=fio.out > /dev/null 2>&1 || fail "fio verify exited $?"
grep -q "err= 0" fio.out || fail "fio reported an error"
echo "MCVM ok fio-verify"

# Overlapping writes smaller than a block, at odd offsets, through the page cache.
truncate -s 8M expect.img
dd if="$dev" of=expect.img bs=1M count=8 2>/dev/null || fail "reading the head"
for t in "$dev" expect.img; do
    dd if=/work/pattern of="$t" bs=1 skip=100 seek=4097 count=1000 conv=notrunc,fsync 2>/dev/null || fail "dd 1"
    dd if=/work/pattern of="$t" bs=1 skip=7 seek=4500 count=3000 conv=notrunc,fsync 2>/dev/null || fail "dd 2"
    dd if=/work/pattern of="$t" bs=512 seek=63 count=9 conv=notrunc,fsync 2>/dev/null || fail "dd 3"
done
blkdiscard -o 4194304 -l 1048576 "$dev" || fail "blkdiscard"
dd if=/dev/zero of=expect.img bs=1M seek=4 count=1 conv=notrunc 2>/dev/null
echo 3 > /proc/sys/vm/drop_caches
dd if="$dev" of=head.img bs=1M count=8 iflag=direct 2>/dev/null || fail "reading back"
cmp head.img expect.img || fail "sub-block writes or the discard read back wrong"
echo "MCVM ok sub-block-and-discard"

mkfs.xfs -q -f "$dev" || fail "mkfs.xfs"
mkdir -p /mnt/u && mount -t xfs "$dev" /mnt/u || fail "mount"
mkdir -p /mnt/u/tree
i=0
while [ $i -lt 40 ]; do head -c $((i * 4099 + 1)) /work/pattern > "/mnt/u/tree/f$i"; i=$((i + 1)); done
(cd /mnt/u && find tree -type f | sort | xargs sha256sum) > sums || fail "sums"
umount /mnt/u || fail "umount"
kill -INT "$pid"
wait "$pid" || fail "mindcastle exited $? after SIGINT"
[ -e "$dev" ] && fail "$dev still there after detach"
# --trace: one "offset length nanos" line per read the device served.
[ "$(awk 'NF != 3' utrace | wc -l)" = 0 ] && [ "$(wc -l < utrace)" -gt 10 ] || fail "read trace: $(head -3 utrace)"
echo "MCVM ok xfs-detach"

mindcastle attach --frontend ublk u.swap /work/ublk-state.sh >> ublk.log 2>&1 &
pid=$!
wait_ready open "$pid"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' ublk-events | tail -1)
mount -t xfs "$dev" /mnt/u || fail "mount on reopen"
(cd /mnt/u && sha256sum -c /work/sums) > check.log 2>&1 || fail "checksums: $(cat check.log)"
umount /mnt/u || fail "umount on reopen"
xfs_repair -n "$dev" > repair.log 2>&1 || fail "xfs_repair -n: $(tail -5 repair.log)"
kill -INT "$pid"
wait "$pid" || fail "mindcastle exited $? at the end"
echo "MCVM ok reopen-checksums"
mindcastle fsck u.swap > fsck.log 2>&1 || fail "fsck: $(cat fsck.log)"
mindcastle attach --frontend ublk --recover u.swap /work/ublk-state.sh > rec.log 2>&1 && fail "--recover with no device exited 0"
grep -q "no ublk device of disk" rec.log || fail "--recover with no device: $(cat rec.log)"
echo "MCVM ok fsck-clean"

# Kills under load: XFS mounted, fio writing and verifying on it, mindcastle killed
# with SIGKILL and started again CYCLES times; the quiesced device is recovered
# (event recover), fio sees no error, the tree is intact.
mindcastle attach --frontend ublk u.swap /work/ublk-state.sh >> ublk.log 2>&1 &
pid=$!
wait_ready kill-open "$pid"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' ublk-events | tail -1)
mount -t xfs "$dev" /mnt/u || fail "mount before the kills"
# fio runs one after another until told to stop, so every kill lands in one.
rm -f /work/stop-fio
sh /work/fio-loop.sh /mnt/u k &
fiopid=$!
i=0
while [ $i -lt "${CYCLES:-20}" ]; do
    i=$((i + 1))
    sleep 2
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    sleep 1
    MINDCASTLE_LOG=mindcastle=debug mindcastle attach --frontend ublk u.swap /work/ublk-state.sh >> ublk.log 2>&1 &
    pid=$!
    wait_ready "recover $i" "$pid"
    tail -1 ublk-events | grep -q "recover DEVICE=$dev" || fail "cycle $i: $(tail -1 ublk-events)"
    echo "MCVM ok ublk-recover $i ($(wc -l < /work/fio-k-results 2>/dev/null || echo 0) fio runs done)"
done
# Hand-overs under the same load: the new attach (no --frontend: it gets what the
# running one has) asks the running one to stop, flush and exit; it recovers the device.
h=0
while [ $h -lt "${HANDOVERS:-5}" ]; do
    h=$((h + 1))
    sleep 2
    mindcastle attach --hand-over u.swap /work/ublk-state.sh >> ublk.log 2>&1 &
    new=$!
    wait_ready "hand-over $h" "$new"
    wait "$pid" || fail "hand-over $h: the old attach exited $?"
    kill -0 "$new" 2>/dev/null || fail "hand-over $h: the new attach is gone"
    pid=$new
    tail -1 ublk-events | grep -q "recover DEVICE=$dev" || fail "hand-over $h: $(tail -1 ublk-events)"
    echo "MCVM ok ublk-hand-over $h ($(wc -l < /work/fio-k-results 2>/dev/null || echo 0) fio runs done)"
done
grep -q "handed $dev over to the new attach" ublk.log || fail "the old attach did not say it handed over"
touch /work/stop-fio
wait "$fiopid"
[ -s /work/fio-k-results ] || fail "no fio run finished under the kills"
awk '$2 != 0 {bad = 1} END {exit bad}' /work/fio-k-results || fail "a fio run failed: $(cat /work/fio-k-results)"
grep -l "err= *[1-9]" /work/fio-k-*.out && fail "fio under kills reported an error"
(cd /mnt/u && sha256sum -c /work/sums) > check.log 2>&1 || fail "checksums after the kills: $(cat check.log)"
umount /mnt/u || fail "umount after the kills"
xfs_repair -n "$dev" > repair.log 2>&1 || fail "xfs_repair -n after the kills: $(tail -5 repair.log)"
kill -INT "$pid"
wait "$pid" || fail "mindcastle exited $? after the kills"
[ -e "$dev" ] && fail "$dev still there after the last detach"
mindcastle fsck u.swap > fsck.log 2>&1 || fail "fsck after the kills: $(cat fsck.log)"
echo "MCVM ok ublk-kills-and-hand-overs-under-load ($(wc -l < /work/fio-k-results) fio runs, all exit 0)"
sleep 1
# shellcheck disable=SC2009  # busybox has no pgrep
left=$(ps | grep -c "[u]blk-watchdog")
# shellcheck disable=SC2009
[ "$left" = 0 ] || fail "watchdogs left after the last detach: $(ps | grep ublk-watchdog)"
echo "MCVM ok no-watchdog-left"

# The reconnect timeout: a flushed write, a kill, a read waiting on the device; nobody
# recovers it within 3 s, so the watchdog removes it, the read fails, and the next
# attach makes a new device that has the write.
mindcastle attach --frontend ublk --reconnect-timeout 3s u.swap /work/ublk-state.sh >> ublk.log 2>&1 &
pid=$!
wait_ready timeout-open "$pid"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' ublk-events | tail -1)
dd if=/work/pattern of="$dev" bs=4096 seek=1000 count=16 oflag=direct conv=fsync 2>/dev/null || fail "the write before the kill"
dd if=/work/pattern of=want.img bs=4096 count=16 2>/dev/null
kill -KILL "$pid"
wait "$pid" 2>/dev/null
dd if="$dev" of=/dev/null bs=4096 skip=5000 count=1 iflag=direct 2>/dev/null &
reader=$!
n=0
while [ -e "$dev" ]; do
    n=$((n + 1)); [ $n -gt 60 ] && fail "$dev still there 30 s after a kill with a 3 s timeout"
    sleep 0.5
done
wait "$reader" && fail "a read held past the timeout succeeded"
grep -q "not recovered within 3s; removed" ublk.log || fail "the watchdog did not say why: $(tail -5 ublk.log)"
mindcastle attach --frontend ublk u.swap /work/ublk-state.sh >> ublk.log 2>&1 &
pid=$!
wait_ready after-timeout "$pid"
tail -1 ublk-events | grep -q "open DEVICE=" || fail "after the timeout: $(tail -1 ublk-events)"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' ublk-events | tail -1)
dd if="$dev" of=got.img bs=4096 skip=1000 count=16 iflag=direct 2>/dev/null || fail "reading after the timeout"
cmp got.img want.img || fail "the write flushed before the kill is not there after the timeout"
kill -INT "$pid"
wait "$pid" || fail "mindcastle exited $? after the timeout test"
mindcastle fsck u.swap > fsck.log 2>&1 || fail "fsck after the timeout: $(cat fsck.log)"
echo "MCVM ok ublk-reconnect-timeout"
echo "MCVM-RESULT pass"
