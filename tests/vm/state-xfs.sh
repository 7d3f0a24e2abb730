#!/bin/sh
# Statechange script of the VM recovery test: XFS made and filled with a tree on
# create, mounted on open, left alone on recover (the mount outlived the killed
# process), unmounted on close.
echo "state-xfs.sh $1 DEVICE=$DEVICE PID=$PID" >> /work/events-xfs
mnt=/mnt/xfs
case "$1" in
create)
    mkfs.xfs -q -f "$DEVICE" || exit 1
    mkdir -p "$mnt" && mount -t xfs "$DEVICE" "$mnt" || exit 1
    mkdir -p "$mnt/tree/b"
    i=0
    while [ $i -lt 40 ]; do
        head -c $((i * 4099 + 1)) /work/pattern > "$mnt/tree/b/f$i"; i=$((i + 1))
    done
    cp /work/pattern "$mnt/tree/pattern"
    (cd "$mnt" && find tree -type f | sort | xargs sha256sum) > /work/sums-xfs || exit 1
    sync
    ;;
open)
    mkdir -p "$mnt" && mount -t xfs "$DEVICE" "$mnt" || exit 1
    ;;
recover)
    grep -q " $mnt xfs " /proc/mounts || exit 1
    ;;
close)
    grep -q " $mnt xfs " /proc/mounts && { umount "$mnt" || exit 1; }
    kill -INT "$PID"
    exit 0
    ;;
esac
touch /work/ready-xfs
exit 0
