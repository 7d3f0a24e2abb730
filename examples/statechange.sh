#!/bin/sh
# Statechange script for `mindcastle NAME.swap ./examples/statechange.sh`.
# mindcastle runs it with one argument, the event (create, open, recover, snapshot,
# close), and these variables set:
#   DEVICE  the block device (/dev/loopN or /dev/nbdN)
#   PID     the mindcastle process (send it signals: HUP = close, INT = exit, USR1 = snapshot)
#   UUID    the disk's uuid
#   SNAPSHOT_UUID  (snapshot only) the id of the snapshot just taken
set -eu
MNT="/tmp/mnt-$UUID"
case "$1" in
  create)
    # A new, empty disk: make an XFS filesystem, then mount it like any open.
    mkfs.xfs -q "$DEVICE"
    mkdir -p "$MNT"
    mount "$DEVICE" "$MNT"
    echo "statechange: new XFS filesystem mounted at $MNT (detach: Ctrl-C or kill -HUP $PID)"
    ;;
  open)
    mkdir -p "$MNT"
    mount "$DEVICE" "$MNT"
    echo "statechange: mounted at $MNT (detach: Ctrl-C or kill -HUP $PID)"
    ;;
  recover)
    # The same device, taken over from a killed mindcastle or handed over by an
    # upgrade: the filesystem stayed mounted, so there is nothing to do.
    echo "statechange: $DEVICE taken over by mindcastle $PID; still mounted at $MNT"
    ;;
  snapshot)
    echo "statechange: snapshot $SNAPSHOT_UUID taken"
    ;;
  close)
    # Unmount, then tell mindcastle to flush, checkpoint and exit.
    if mountpoint -q "$MNT"; then umount "$MNT"; fi
    rmdir "$MNT" 2>/dev/null || true
    kill -INT "$PID"
    ;;
esac
