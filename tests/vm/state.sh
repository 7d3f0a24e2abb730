#!/bin/sh
# Statechange script of the VM test: on create, write known bytes through the device
# (and the same bytes into expect.img); on open, compare the device with expect.img;
# on close, leave as the contract says (SIGINT to mindcastle).
echo "state.sh $1 DEVICE=$DEVICE PID=$PID UUID=$UUID" >> /work/events
case "$DEVICE" in
/dev/nbd*|/dev/loop*) ;;
*) echo "not a block device: $DEVICE" >> /work/events; exit 1 ;;
esac
case "$1" in
create)
    for t in "$DEVICE" /work/expect.img; do
        dd if=/work/pattern of="$t" bs=1M seek=3 conv=notrunc,fsync 2>/dev/null || exit 1
        # Overlapping writes smaller than a block, at odd offsets.
        dd if=/work/pattern of="$t" bs=1 skip=100 seek=4097 count=1000 conv=notrunc,fsync 2>/dev/null || exit 1
        dd if=/work/pattern of="$t" bs=1 skip=7 seek=4500 count=3000 conv=notrunc,fsync 2>/dev/null || exit 1
        dd if=/work/pattern of="$t" bs=512 seek=63 count=9 conv=notrunc,fsync 2>/dev/null || exit 1
    done
    ;;
open)
    cmp "$DEVICE" /work/expect.img >> /work/events 2>&1 || exit 1
    ;;
recover)
    # The device was never gone; what used it (a reader, a mount) still does.
    ;;
close)
    kill -INT "$PID"
    exit 0
    ;;
esac
touch /work/ready
exit 0
