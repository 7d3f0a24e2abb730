#!/bin/sh
# Statechange script of the VM test's filesystem disk, like examples/statechange.sh
# with ext4: make and fill the filesystem on create, check it on open, unmount on close.
echo "state-ext4.sh $1 DEVICE=$DEVICE PID=$PID" >> /work/events-ext4
mnt=/tmp/mnt-$UUID
case "$1" in
create)
    mkfs.ext4 -q -F "$DEVICE" || exit 1
    mkdir -p "$mnt" && mount -t ext4 "$DEVICE" "$mnt" || exit 1
    mkdir -p "$mnt/a/b"
    cp /work/pattern "$mnt/a/pattern"
    i=0
    while [ $i -lt 50 ]; do
        head -c $((i * 777 + 1)) /work/pattern > "$mnt/a/b/f$i"; i=$((i + 1))
    done
    (cd "$mnt" && find a -type f | sort | xargs sha256sum) > /work/sums || exit 1
    sync
    ;;
open)
    mkdir -p "$mnt" && mount -t ext4 "$DEVICE" "$mnt" || exit 1
    (cd "$mnt" && sha256sum -c /work/sums) > /work/check-ext4 2>&1 || exit 1
    ;;
close)
    umount "$mnt" || exit 1
    kill -INT "$PID"
    exit 0
    ;;
esac
touch /work/ready-ext4
exit 0
