#!/bin/sh
# Runs inside the test VM: XFS on a mindcastle disk attached through kernel nbd
# (netlink), fio writing with verification on the mount, while mindcastle is killed
# with SIGKILL and started again CYCLES times (1-3 s later). fio must see no I/O error
# and no verify mismatch, the tree written before the kills must be intact,
# `xfs_repair -n` clean, mindcastle's fsck clean. Prints "MCVM ok ..." per step and
# "MCVM-RESULT pass" at the end. Then HANDOVERS (5) hand-overs under the same load.
cd /work || exit 1
CYCLES=${CYCLES:-20}
fail() {
    echo "MCVM-RESULT fail $*"
    echo "--- events"; cat /work/events-xfs 2>/dev/null
    echo "--- fio"; cat /work/fio-v-*.out 2>/dev/null | tail -40
    echo "--- attach log"; tail -60 /work/attach.log 2>/dev/null
    echo "--- dmesg"; dmesg | tail -30
    exit 1
}
wait_ready() {
    n=0
    while [ ! -e /work/ready-xfs ]; do
        n=$((n + 1)); [ $n -gt 600 ] && fail "no ready after 300 s ($1)"
        kill -0 "$2" 2>/dev/null || fail "mindcastle exited before ready ($1)"
        sleep 0.5
    done
    rm -f /work/ready-xfs
}
# A random byte (busybox ash has $RANDOM, POSIX sh does not).
rnd() { od -An -N1 -tu1 /dev/urandom | tr -d ' '; }
export MINDCASTLE_LOG=mindcastle=info
mindcastle attach --frontend nbd --size 1G x.swap /work/state-xfs.sh >> attach.log 2>&1 &
pid=$!
wait_ready create "$pid"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events-xfs | head -1)
echo "MCVM ok xfs-create on $dev"

# fio jobs one after another until told to stop; each one's exit code is kept.
rm -f /work/stop-fio
sh /work/fio-loop.sh /mnt/xfs v &
runner=$!
sleep 2
i=0
while [ $i -lt "$CYCLES" ]; do
    i=$((i + 1))
    sleep $((1 + $(rnd) % 2))
    kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    sleep $((1 + $(rnd) % 3))
    mindcastle attach x.swap /work/state-xfs.sh >> attach.log 2>&1 &
    pid=$!
    wait_ready "recover $i" "$pid"
    tail -1 events-xfs | grep -q "recover DEVICE=$dev " || fail "cycle $i: $(tail -1 events-xfs)"
    echo "MCVM ok cycle $i ($(wc -l < /work/fio-v-results 2>/dev/null || echo 0) fio runs done)"
done
# Hand-overs under the same load: each new attach takes the connections from the
# running one, which exits 0; the device never goes away.
h=0
while [ $h -lt "${HANDOVERS:-5}" ]; do
    h=$((h + 1))
    sleep 1
    mindcastle attach --hand-over x.swap /work/state-xfs.sh >> attach.log 2>&1 &
    new=$!
    wait_ready "hand-over $h" "$new"
    wait "$pid" || fail "hand-over $h: the old attach exited $?"
    kill -0 "$new" 2>/dev/null || fail "hand-over $h: the new attach is gone"
    pid=$new
    tail -1 events-xfs | grep -q "recover DEVICE=$dev " || fail "hand-over $h: $(tail -1 events-xfs)"
    echo "MCVM ok hand-over $h ($(wc -l < /work/fio-v-results 2>/dev/null || echo 0) fio runs done)"
done
grep -q "handed $dev over to the new attach" attach.log || fail "the old attach did not say it handed over"
touch /work/stop-fio
wait "$runner"
[ -s /work/fio-v-results ] || fail "no fio run finished"
awk '$2 != 0 {bad = 1} END {exit bad}' /work/fio-v-results || fail "a fio run failed: $(cat /work/fio-v-results)"
grep -l "err= *[1-9]" /work/fio-v-*.out && fail "fio reported an error"
grep -il "verify: bad" /work/fio-v-*.out && fail "fio reported a verify mismatch"
echo "MCVM ok fio-under-kills ($(wc -l < /work/fio-v-results) runs, all exit 0)"

(cd /mnt/xfs && sha256sum -c /work/sums-xfs) > check.log 2>&1 || fail "tree checksums: $(cat check.log)"
umount /mnt/xfs || fail "umount"
xfs_repair -n "$dev" > repair.log 2>&1 || fail "xfs_repair -n: $(tail -20 repair.log)"
echo "MCVM ok xfs-repair-clean"
kill -INT "$pid"
wait "$pid" || fail "mindcastle exited $? after SIGINT"
mindcastle fsck x.swap > fsck.log 2>&1 || fail "fsck: $(cat fsck.log)"
echo "MCVM ok fsck-clean"
# The tree again, after a clean detach and a fresh attach.
mindcastle attach x.swap /work/state-xfs.sh >> attach.log 2>&1 &
pid=$!
wait_ready reopen "$pid"
(cd /mnt/xfs && sha256sum -c /work/sums-xfs) > check.log 2>&1 || fail "tree after reopen: $(cat check.log)"
kill -INT "$pid"
wait "$pid" || fail "mindcastle exited $? at the end"
echo "MCVM ok reopen-checksums"
echo "MCVM-RESULT pass"
