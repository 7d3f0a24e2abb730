#!/bin/sh
# shellcheck disable=SC2154  # pid and dev are set by attach_plain (guest-lib.sh)
# Runs inside the bench VM (see bench/frontends-vm.sh): fio on the raw block device of
# each front end, the disk in the guest's RAM: mindcastle on ublk, on kernel nbd
# (netlink), on FUSE + loop, and qemu-nbd -c of a qcow2 on the same kernel nbd driver.
# Jobs: 1 MiB sequential write then read at QD8 over 512 MiB, then 4 KiB random read
# and write at QD1 and QD32 for $SECS s each. Prints one "MCVM fio FRONTEND JOB
# bw_KiBps=N iops=N lat_us=N" line per job and "MCVM-RESULT pass".
# shellcheck disable=SC1091  # copied into the initramfs; sets fail, attach_plain
. /usr/local/bin/guest-lib.sh
SECS=${SECS:-10}
# job NAME FRONTEND DEVICE fio-args...: runs one job, prints its figures (fio terse v3:
# read bandwidth, IOPS, mean latency in fields 7, 8, 40; write in 48, 49, 81).
job() {
    name=$1 fe=$2 dev=$3
    shift 3
    fio --name="$name" --filename="$dev" --direct=1 --ioengine=libaio --minimal "$@" > "fio-$fe-$name.out" 2> fio.err ||
        fail "fio $name on $fe: $(cat fio.err)"
    awk -F';' -v fe="$fe" -v n="$name" '{
        if ($8 + 0 > 0) { bw = $7; iops = $8; lat = $40 } else { bw = $48; iops = $49; lat = $81 }
        printf "MCVM fio %s %s bw_KiBps=%d iops=%d lat_us=%.1f\n", fe, n, bw, iops, lat }' "fio-$fe-$name.out"
}
jobs() {
    fe=$1 dev=$2
    job seqwrite "$fe" "$dev" --rw=write --bs=1M --iodepth=8 --size=512M
    job seqread "$fe" "$dev" --rw=read --bs=1M --iodepth=8 --size=512M
    job randread-qd1 "$fe" "$dev" --rw=randread --bs=4k --iodepth=1 --size=512M --time_based --runtime="$SECS"
    job randread-qd32 "$fe" "$dev" --rw=randread --bs=4k --iodepth=32 --size=512M --time_based --runtime="$SECS"
    job randwrite-qd1 "$fe" "$dev" --rw=randwrite --bs=4k --iodepth=1 --size=512M --time_based --runtime="$SECS"
    job randwrite-qd32 "$fe" "$dev" --rw=randwrite --bs=4k --iodepth=32 --size=512M --time_based --runtime="$SECS"
}
attached() {
    fe=$1
    shift
    attach_plain "$fe" mindcastle --size 2G "$@"
    jobs "$fe" "$dev"
    kill -INT "$pid"
    wait "$pid" || fail "$fe exit status"
    # The guest's RAM holds every disk: free this one's for the next.
    rm -rf "$fe.swap" swapdata-*
}
attached ublk --frontend ublk
attached nbd --frontend nbd
attached fuse --frontend fuse
qemu-img create -q -f qcow2 q.qcow2 2G || fail "qemu-img"
# Default cache mode: the guest's /work is a RAM file system (no O_DIRECT), like
# mindcastle's data folder here.
qemu-nbd -c /dev/nbd3 -f qcow2 q.qcow2 > q.log 2>&1 || fail "qemu-nbd -c"
n=0
while [ ! -e /sys/block/nbd3/pid ]; do
    n=$((n + 1)); [ $n -gt 1200 ] && fail "qemu-nbd not up"; sleep 0.1
done
jobs qemu-nbd /dev/nbd3
qemu-nbd -d /dev/nbd3 > /dev/null 2>&1
echo "MCVM-RESULT pass"
