#!/bin/sh
# Runs inside the test VM (see bench/attach-vm.sh): the same flow on mindcastle's kernel
# nbd path and on qemu-nbd -c with qcow2, both on /dev/nbdN in this guest, both storing
# into the guest's RAM: create + mkfs.ext4 + mount of a 10 GiB disk, then writing
# $MIB MiB of files (8 MiB each, random bytes, fsync per file). Prints "MCVM bench ..."
# lines and "MCVM-RESULT pass".
cd /work || exit 1
mkdir -p /var/lock /run
MIB=${MIB:-256}
fail() { echo "MCVM-RESULT fail $*"; cat /work/*.log 2>/dev/null; exit 1; }
now() { awk '{print $1}' /proc/uptime; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", b - a}'; }
rate() { awk -v m="$MIB" -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", m / (b - a)}'; }
fill() {
    i=0
    while [ $i -lt $((MIB / 8)) ]; do
        dd if=/work/pattern of="$1/f$i" bs=1M conv=fsync 2>/dev/null || fail "writing $1/f$i"
        i=$((i + 1))
    done
    sync
}
cat > /work/bench-state.sh <<'EOS'
#!/bin/sh
case "$1" in
create) mkfs.ext4 -q -F "$DEVICE" && mkdir -p /mnt/mc && mount "$DEVICE" /mnt/mc && touch /work/ready ;;
close) umount /mnt/mc; kill -INT "$PID" ;;
esac
EOS
chmod +x /work/bench-state.sh

# mindcastle, kernel nbd path
t0=$(now)
mindcastle attach --frontend nbd --size 10G mc.swap /work/bench-state.sh > mc.log 2>&1 &
pid=$!
n=0
while [ ! -e /work/ready ]; do
    n=$((n + 1)); [ $n -gt 1200 ] && fail "mindcastle not ready"
    kill -0 $pid 2>/dev/null || fail "mindcastle exited"
    sleep 0.1
done
t1=$(now)
fill /mnt/mc
t2=$(now)
kill -HUP $pid
wait $pid || fail "mindcastle exit status"
echo "MCVM bench mindcastle setup_s=$(elapsed "$t0" "$t1") write_MBps=$(rate "$t1" "$t2")"

# qemu-nbd + qcow2 on the kernel nbd driver
t0=$(now)
qemu-img create -q -f qcow2 q.qcow2 10G || fail "qemu-img"
qemu-nbd -c /dev/nbd3 -f qcow2 q.qcow2 > q.log 2>&1 || fail "qemu-nbd -c"
n=0
while [ ! -e /sys/block/nbd3/pid ]; do
    n=$((n + 1)); [ $n -gt 1200 ] && fail "qemu-nbd not up"; sleep 0.1
done
mkfs.ext4 -q -F /dev/nbd3 && mkdir -p /mnt/q && mount /dev/nbd3 /mnt/q || fail "mkfs/mount on qemu-nbd"
t1=$(now)
fill /mnt/q
t2=$(now)
umount /mnt/q
qemu-nbd -d /dev/nbd3 > /dev/null 2>&1
echo "MCVM bench qemu-nbd setup_s=$(elapsed "$t0" "$t1") write_MBps=$(rate "$t1" "$t2")"
echo "MCVM-RESULT pass"
