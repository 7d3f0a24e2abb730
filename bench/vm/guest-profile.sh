#!/bin/sh
# shellcheck disable=SC2154  # pid and dev are set by attach_plain (guest-lib.sh)
# Runs inside the profile VM (see bench/profile-vm.sh): fio 4 KiB random reads at QD32
# on the raw device of mindcastle on ublk and on kernel nbd, with `perf record -e
# cpu-clock -a -g` around each, and perf's report of the symbols where the guest spent
# its samples; then QD1 random reads (IOPS and mean latency, not profiled). With a
# second build, an A/B of the two on ublk. Prints "MCVM perf FRONTEND ..." lines and
# "MCVM-RESULT pass".
# shellcheck disable=SC1091  # copied into the initramfs; sets fail, attach_plain
. /usr/local/bin/guest-lib.sh
SECS=${SECS:-10}
# profiled NAME BINARY attach-args...
profiled() {
    fe=$1 bin=$2
    shift 2
    attach_plain "$fe" "$bin" --size 1G "$@"
    fio --name=fill --filename="$dev" --direct=1 --ioengine=libaio --rw=write --bs=1M \
        --iodepth=8 --size=256M > /dev/null 2>&1 || fail "fill on $fe"
    perf record -q -e cpu-clock -a -g -o "perf-$fe.data" -- \
        fio --name=r --filename="$dev" --direct=1 --ioengine=libaio --rw=randread --bs=4k \
        --iodepth=32 --size=256M --time_based --runtime="$SECS" --minimal > "fio-$fe.out" 2> perf.err ||
        fail "perf/fio on $fe: $(cat perf.err)"
    awk -F';' -v fe="$fe" '{ printf "MCVM perf %s randread-qd32 iops=%d\n", fe, $8 }' "fio-$fe.out"
    fio --name=r1 --filename="$dev" --direct=1 --ioengine=libaio --rw=randread --bs=4k \
        --iodepth=1 --size=256M --time_based --runtime="$SECS" --minimal > "fio1-$fe.out" 2>&1 ||
        fail "fio qd1 on $fe"
    awk -F';' -v fe="$fe" '{ printf "MCVM perf %s randread-qd1 iops=%d lat_us=%.1f\n", fe, $8, $40 }' "fio1-$fe.out"
    perf report -i "perf-$fe.data" --no-children --sort comm,dso,sym --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -40 | sed "s/^/MCVM perf $fe /"
    perf report -i "perf-$fe.data" --no-children --sort comm --stdio 2>/dev/null |
        grep -E '^ +[0-9.]+%' | head -10 | sed "s/^/MCVM perf $fe comm /"
    kill -INT "$pid"
    wait "$pid" || fail "$fe exit status"
    rm -rf "$fe.swap" swapdata-* "perf-$fe.data"
}
# With a second build (bench/profile-vm.sh SECONDS OTHER_BIN) as /usr/local/bin/other:
# two rounds of this build and the other on ublk, then nbd, interleaved.
if [ -x /usr/local/bin/other ]; then
    for round in 1 2; do
        profiled "ublk-this-$round" mindcastle --frontend ublk
        profiled "ublk-other-$round" /usr/local/bin/other --frontend ublk
        profiled "nbd-$round" mindcastle --frontend nbd
    done
else
    profiled ublk mindcastle --frontend ublk
    profiled nbd mindcastle --frontend nbd
fi
echo "MCVM-RESULT pass"
