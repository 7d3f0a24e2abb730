#!/bin/sh
# Runs inside the test VM (a Debian kernel with its nbd driver, busybox, mindcastle).
# Each check prints "MCVM ok NAME"; the end prints "MCVM-RESULT pass", or
# "MCVM-RESULT fail WHY" at the first failure.
cd /work || exit 1
fail() {
    echo "MCVM-RESULT fail $*"
    echo "--- events"; cat /work/events 2>/dev/null
    echo "--- attach log"; cat /work/attach.log 2>/dev/null
    echo "--- ext4"; cat /work/events-ext4 /work/check-ext4 /work/attach-ext4.log 2>/dev/null
    exit 1
}
# wait_ready WHAT PID [FLAGFILE]: until the statechange script says it is done.
wait_ready() {
    flag=${3:-/work/ready}
    n=0
    while [ ! -e "$flag" ]; do
        n=$((n + 1)); [ $n -gt 600 ] && fail "no ready after 300 s ($1)"
        kill -0 "$2" 2>/dev/null || fail "mindcastle exited before ready ($1)"
        sleep 0.5
    done
    rm -f "$flag"
}
wait_exit() {
    wait "$1"; rc=$?
    [ $rc -eq 0 ] || fail "mindcastle exited $rc ($2)"
}
# unload MOD: rmmod, retried for up to 10 s: a killed attach's watchdog (not the
# detach's own, checked below) exits a tick after the device is recovered, and a
# file's last reference can be dropped in a kernel worker after its process exits;
# until then rmmod fails with EAGAIN though nothing uses the module any more.
unload() {
    n=0
    until rmmod "$1" 2>/dev/null; do
        n=$((n + 1)); [ $n -gt 20 ] && { rmmod "$1"; fail "rmmod $1"; }
        sleep 0.5
    done
}
export MINDCASTLE_LOG=mindcastle=info
truncate -s 64M /work/expect.img

# 0. auto prefers ublk where its driver is there, takes a killed attach's ublk device
# back, and with the driver gone picks kernel nbd, saying why (the rest of this script).
printf '#!/bin/sh\necho "$1 $DEVICE" >> /work/auto-events\n[ "$1" = close ] && kill -INT "$PID"\ntouch /work/ready-auto\nexit 0\n' > /work/auto.sh
chmod +x /work/auto.sh
mindcastle attach --size 16M a.swap /work/auto.sh > auto.log 2>&1 &
pid=$!
wait_ready auto-ublk "$pid" /work/ready-auto
grep -q "^create /dev/ublkb" auto-events || fail "auto did not pick ublk: $(cat auto-events auto.log)"
grep -q "front end: ublk" auto.log || fail "auto did not log its choice: $(cat auto.log)"
udev=$(sed -n 's/^create //p' auto-events)
kill -KILL "$pid"
wait "$pid" 2>/dev/null
mindcastle attach a.swap /work/auto.sh >> auto.log 2>&1 &
pid=$!
wait_ready auto-recover "$pid" /work/ready-auto
tail -1 auto-events | grep -q "^recover $udev$" || fail "auto did not take $udev back: $(cat auto-events)"
kill -INT "$pid"
wait_exit "$pid" "auto ublk after SIGINT"
[ -e "$udev" ] && fail "$udev still there after detach"
# A clean detach ends its watchdog before it returns (it holds /dev/ublk-control open).
# shellcheck disable=SC2009  # busybox has no pgrep
ps | grep -q "[u]blk-watchdog .*--server-pid $pid " && fail "the detach left its watchdog: $(ps | grep ublk-watchdog)"
unload ublk_drv
echo "MCVM ok auto-picks-ublk-then-recovers-it"

# 1. create: the script writes through /dev/nbdN; read back while attached; SIGHUP.
mindcastle attach --size 64M -t /work/trace disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready create "$pid"
grep -q "kernel nbd driver" attach.log || fail "attach did not log the kernel nbd path"
grep "front end: kernel nbd" attach.log | grep -q "ublk: no ublk driver" || fail "auto did not say why ublk was passed over: $(cat attach.log)"
grep -q "is /dev/nbd0 (kernel nbd, uuid" attach.log || fail "attach did not tell the user the path"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | head -1)
echo "MCVM ok create on $dev"
echo 3 > /proc/sys/vm/drop_caches
cmp "$dev" expect.img || fail "read back while attached differs"
echo "MCVM ok read-back"
kill -HUP "$pid"
wait_exit "$pid" "after SIGHUP"
# --trace: one "offset length nanos" line per read the device served.
[ "$(awk 'NF != 3' trace | wc -l)" = 0 ] && [ "$(wc -l < trace)" -gt 10 ] || fail "read trace"
n=${dev#/dev/nbd}
[ -e "/sys/block/nbd$n/pid" ] && fail "nbd$n still running after exit"
echo "MCVM ok sighup-close"

# 2. open: the script compares; discard and rewrite some, then Ctrl-C (close runs first).
mindcastle attach disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready open "$pid"
dev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
n=${dev#/dev/nbd}
echo "MCVM ok open-compare on $dev"
blkdiscard -o 4194304 -l 1048576 "$dev" || fail "blkdiscard"
dd if=/dev/zero of=expect.img bs=1M seek=4 count=1 conv=notrunc 2>/dev/null
dd if=/work/pattern of="$dev" bs=4096 skip=5 seek=2000 count=7 conv=notrunc,fsync 2>/dev/null
dd if=/work/pattern of=expect.img bs=4096 skip=5 seek=2000 count=7 conv=notrunc 2>/dev/null

# 3. A second disk on the next free device while the first is attached: ext4 made and
#    filled on create; SIGHUP runs close (unmount, then SIGINT).
mindcastle attach --size 128M fs.swap /work/state-ext4.sh >> attach-ext4.log 2>&1 &
fpid=$!
wait_ready ext4-create "$fpid" /work/ready-ext4
fdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events-ext4 | tail -1)
[ "$fdev" != "$dev" ] || fail "two attaches got the same device $dev"
kill -HUP "$fpid"
wait_exit "$fpid" "ext4 after SIGHUP"
grep -q "state-ext4.sh close" events-ext4 || fail "ext4 close did not run"
grep -q " /tmp/mnt-" /proc/mounts && fail "a mount is left after close"
echo "MCVM ok ext4-create on $fdev"

kill -INT "$pid"
wait_exit "$pid" "after SIGINT"
grep -q "state.sh close" events || fail "close did not run on SIGINT"
[ -e "/sys/block/nbd$n/pid" ] && fail "nbd$n still running after SIGINT"
echo "MCVM ok sigint-exit"

# 4. ext4 again: the files and their checksums are there; Ctrl-C unmounts first.
mindcastle attach fs.swap /work/state-ext4.sh >> attach-ext4.log 2>&1 &
fpid=$!
wait_ready ext4-open "$fpid" /work/ready-ext4
kill -INT "$fpid"
wait_exit "$fpid" "ext4 after SIGINT"
grep -q " /tmp/mnt-" /proc/mounts && fail "a mount is left after SIGINT"
mindcastle fsck fs.swap > fsck-ext4.log 2>&1 || fail "fsck of the ext4 disk"
echo "MCVM ok ext4-open-checksums"

# 5. A script failing on open: non-zero exit with the reason, and the device released.
printf '#!/bin/sh\nexit 3\n' > /work/fail.sh && chmod +x /work/fail.sh
mindcastle attach disk.swap /work/fail.sh > fail.log 2>&1 && fail "a failing open script exited 0"
grep -q "failed on open" fail.log || fail "no reason given for the failing script"
[ -e "/sys/block/nbd0/pid" ] && fail "nbd0 still running after a failed open"
echo "MCVM ok failing-open-script"

# 5b. Through the ioctls (--frontend nbd-ioctl) a SIGKILL releases the device by
#     itself, and the next attach opens the disk with everything synced.
mindcastle attach --frontend nbd-ioctl disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready kill-open "$pid"
kdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
kill -KILL "$pid"
wait "$pid"
n=0
while [ -e "/sys/block/${kdev#/dev/}/pid" ]; do
    n=$((n + 1)); [ $n -gt 100 ] && fail "$kdev still running 10 s after SIGKILL"
    sleep 0.1
done
mindcastle attach disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready reopen-after-kill "$pid"
kill -INT "$pid"
wait_exit "$pid" "after SIGKILL and reattach"
echo "MCVM ok sigkill-releases-device"

# 5c. Through netlink (the default) a SIGKILL leaves the device waiting: a read
#     started while no process serves it completes once the next attach of the disk
#     takes the same device over and runs `recover`; a write acknowledged before the
#     kill is there.
mindcastle attach disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready netlink-open "$pid"
kdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
grep -Eq "control=\"?netlink" attach.log || fail "the default attach did not use netlink"
case "$(cat "/sys/block/${kdev#/dev/}/backend")" in
"mindcastle-$(sed -n 's/^uuid=//p' disk.swap)-"????????????) ;;
*) fail "backend of $kdev is $(cat "/sys/block/${kdev#/dev/}/backend")" ;;
esac
dd if=/work/pattern of="$kdev" bs=4096 skip=40 seek=3000 count=16 oflag=direct 2>/dev/null || fail "direct write"
dd if=/work/pattern of=expect.img bs=4096 skip=40 seek=3000 count=16 conv=notrunc 2>/dev/null
kill -KILL "$pid"
wait "$pid"
sleep 1
[ -e "/sys/block/${kdev#/dev/}/pid" ] || fail "$kdev was released after SIGKILL"
dd if="$kdev" of=held.img bs=4096 skip=3000 count=16 iflag=direct 2>held.err &
reader=$!
sleep 1
kill -0 "$reader" 2>/dev/null || fail "a read with no server did not wait: $(cat held.err)"
mindcastle attach disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready recover "$pid"
grep -q "state.sh recover DEVICE=$kdev " events || fail "no recover event on $kdev: $(tail -2 events)"
grep -q "taken over from a killed attach" attach.log || fail "the take-over was not told"
wait "$reader" || fail "the held read failed: $(cat held.err)"
dd if=/work/pattern of=want.img bs=4096 skip=40 count=16 2>/dev/null
cmp held.img want.img || fail "the held read returned other bytes"
cmp "$kdev" expect.img || fail "the device after the take-over differs"
kill -INT "$pid"
wait_exit "$pid" "after recover"
[ -e "/sys/block/${kdev#/dev/}/pid" ] && fail "$kdev still configured after SIGINT"
echo "MCVM ok netlink-recover on $kdev"

# 5c2. A copy of the disk (same uuid, a data folder of its own) never takes the
#      disk's device: with the disk's attach killed, the copy's attach gets a device of
#      its own (event open), and the disk's next attach takes its device back.
mkdir -p /work/copy && cp disk.swap /work/copy/ && cp -r /work/swapdata-* /work/copy/
mindcastle attach disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready copy-source "$pid"
kdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
kill -KILL "$pid"
wait "$pid"
(cd /work/copy && exec mindcastle attach disk.swap /work/state.sh) >> attach.log 2>&1 &
cpid=$!
wait_ready copy-open "$cpid"
cdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
[ "$cdev" != "$kdev" ] || fail "the copy took the disk's device $kdev"
tail -1 events | grep -q "state.sh open" || fail "the copy did not open: $(tail -1 events)"
mindcastle attach disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready copy-source-back "$pid"
grep -q "state.sh recover DEVICE=$kdev " events || fail "the disk did not take $kdev back"
kill -INT "$cpid"
wait_exit "$cpid" "copy after SIGINT"
kill -INT "$pid"
wait_exit "$pid" "disk after the copy"
echo "MCVM ok copy-never-takes-the-device"

# 5d. Past the reconnect timeout the device fails I/O (EIO); the next attach takes it
#     over and everything flushed is there.
mindcastle attach --reconnect-timeout 2s disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready timeout-open "$pid"
kdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
kill -KILL "$pid"
wait "$pid"
sleep 4
dd if="$kdev" of=/dev/null bs=4096 count=1 skip=77 iflag=direct 2>timeout.err && fail "a read past the reconnect timeout succeeded"
grep -qi "error" timeout.err || fail "no I/O error past the timeout: $(cat timeout.err)"
mindcastle attach --recover disk.swap /work/state.sh >> attach.log 2>&1 &
pid=$!
wait_ready recover-after-timeout "$pid"
cmp "$kdev" expect.img || fail "the device after a late take-over differs"
kill -INT "$pid"
wait_exit "$pid" "after a late recover"
mindcastle attach --recover disk.swap /work/state.sh > norecover.log 2>&1 && fail "--recover with no device exited 0"
grep -q "no ublk or kernel nbd device of disk" norecover.log || fail "--recover with no device: $(cat norecover.log)"
echo "MCVM ok past-the-timeout"

# 5e. Four disks take the four nbd devices; through netlink the kernel adds a fifth
#     device for a fifth disk, and the ioctls (which only take free devices) find none
#     for a sixth and say so.
printf '#!/bin/sh\necho "$1 $DEVICE" >> /work/multi-events\n[ "$1" = close ] && kill -INT "$PID"\ntouch /work/ready-multi\nexit 0\n' > /work/multi.sh
chmod +x /work/multi.sh
pids=
for k in 1 2 3 4 5; do
    mindcastle attach --size 16M "m$k.swap" /work/multi.sh > "multi$k.log" 2>&1 &
    p=$!
    pids="$pids $p"
    wait_ready "multi-$k" "$p" /work/ready-multi
done
got=$(sed -n 's/^create //p' /work/multi-events | tr '\n' ' ')
for d in /dev/nbd0 /dev/nbd1 /dev/nbd2 /dev/nbd3 /dev/nbd4; do
    case "$got" in *"$d "*) ;; *) fail "$d not used by the five: $got" ;; esac
done
mindcastle attach --frontend nbd-ioctl --size 16M m6.swap /work/multi.sh > multi6.log 2>&1 && fail "a sixth disk through the ioctls exited 0"
grep -q "no free /dev/nbdN" multi6.log || fail "the sixth did not say why: $(cat multi6.log)"
for p in $pids; do kill -INT "$p"; done
for p in $pids; do wait_exit "$p" "multi after SIGINT"; done
echo "MCVM ok fifth-disk-gets-a-new-device"

# 6. --fuse forces FUSE + loop even where the nbd driver is there.
mindcastle attach --fuse disk.swap /work/state.sh > fuse.log 2>&1 &
pid=$!
wait_ready fuse-open "$pid"
fdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
case "$fdev" in /dev/loop*) ;; *) fail "--fuse gave $fdev" ;; esac
kill -INT "$pid"
wait_exit "$pid" "--fuse after SIGINT"
echo "MCVM ok fuse-forced on $fdev"

# 6b. With the nbd driver gone, auto falls back to FUSE + loop and says so.
unload nbd
mindcastle attach disk.swap /work/state.sh > fallback.log 2>&1 &
pid=$!
wait_ready fallback-open "$pid"
fdev=$(sed -n 's/.*DEVICE=\([^ ]*\).*/\1/p' events | tail -1)
case "$fdev" in /dev/loop*) ;; *) fail "the fallback gave $fdev" ;; esac
grep "front end: FUSE + loop" fallback.log | grep -q "kernel nbd: no kernel nbd driver" || fail "the fallback was not logged: $(cat fallback.log)"
kill -INT "$pid"
wait_exit "$pid" "fallback after SIGINT"
echo "MCVM ok falls-back-to-fuse"

# 7. What reached the chunks: fsck clean, export equals what was written.
mindcastle fsck disk.swap > fsck.log 2>&1 || fail "fsck"
mindcastle export disk.swap out.img > export.log 2>&1 || fail "export"
cmp out.img expect.img || fail "exported image differs"
echo "MCVM ok fsck-export"
echo "MCVM-RESULT pass"
