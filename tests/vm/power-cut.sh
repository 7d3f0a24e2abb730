#!/bin/sh
# Power-cut test, inside the VM (see tests/power_cut_vm.rs). The data disk /dev/vda holds
# an ext4 filesystem made by the host. Mode from the kernel command line:
#   mcmode=write  attach /data/p.swap (auto: ublk on this kernel) and write 256 KiB pieces, each
#                 with an fsync (a FLUSH to mindcastle); print "MCVM ack I" after each
#                 one returns, until the host cuts the power (kills qemu).
#   mcmode=check  mount /data again (ext4 replays its journal), fsck the disk, print
#                 "MCVM piece I SHA256" for pieces 0..mcmax, then reattach once.
cd /work || exit 1
arg() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
fail() { echo "MCVM-RESULT fail $*"; cat /work/*.log 2>/dev/null; exit 1; }
mode=$(arg mcmode)
mkdir -p /data && mount -t ext4 /dev/vda /data || fail "mount /dev/vda"
cat > /work/pc-state.sh <<'EOS'
#!/bin/sh
echo "$1 $DEVICE" >> /work/pc-events
[ "$1" = close ] && kill -INT "$PID"
exit 0
EOS
chmod +x /work/pc-state.sh
wait_event() {
    n=0
    while ! grep -q "^$1 " /work/pc-events 2>/dev/null; do
        n=$((n + 1)); [ $n -gt 1200 ] && fail "no $1 event"
        kill -0 "$2" 2>/dev/null || fail "mindcastle exited before $1"
        sleep 0.1
    done
}
case "$mode" in
write)
    # Its log goes to the console, so the host sees checkpoints and log rotations.
    MINDCASTLE_LOG=mindcastle::lsm::engine=debug NO_COLOR=1 \
        mindcastle attach --size 256M /data/p.swap /work/pc-state.sh 2>&1 | sed 's/^/MCLOG /' &
    sleep 1
    pid=$(pidof mindcastle)
    pid=$!
    wait_event create "$pid"
    dev=$(sed -n 's/^create \(.*\)/\1/p' /work/pc-events)
    echo "MCVM writing on $dev"
    i=0
    while [ $i -lt 1024 ]; do
        dd if=/work/pattern of="$dev" bs=256K skip=$((i % 32)) seek=$i count=1 \
            conv=fsync,notrunc 2>/dev/null || fail "write $i"
        echo "MCVM ack $i"
        i=$((i + 1))
    done
    echo "MCVM wrote everything before the power cut"
    sleep 600
    ;;
check)
    max=$(arg mcmax)
    mindcastle fsck /data/p.swap > fsck.log 2>&1 || fail "fsck after the power cut"
    echo "MCVM fsck clean"
    mindcastle export /data/p.swap /tmp/out.img > export.log 2>&1 || fail "export"
    i=0
    while [ $i -le "$max" ]; do
        echo "MCVM piece $i $(dd if=/tmp/out.img bs=256K skip=$i count=1 2>/dev/null | sha256sum | cut -d' ' -f1)"
        i=$((i + 1))
    done
    rm -f /tmp/out.img
    mindcastle attach /data/p.swap /work/pc-state.sh > attach.log 2>&1 &
    pid=$!
    wait_event open "$pid"
    kill -INT "$pid"
    wait "$pid" || fail "reattach exit status"
    echo "MCVM reattached"
    echo "MCVM-RESULT pass"
    ;;
*) fail "no mcmode on the kernel command line" ;;
esac
