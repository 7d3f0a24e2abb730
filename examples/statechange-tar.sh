#!/bin/sh
# Statechange script for the container broadcast flow (used by tar-to-disk.sh):
# on create, format the disk as XFS, unpack $TARBALL into it preserving owners and
# modes, then close; on open, mount read-write at /tmp/mnt-$UUID like statechange.sh.
# Variables from mindcastle: DEVICE, PID, UUID (see statechange.sh); from the caller:
# TARBALL (a tar file, e.g. the output of `docker export`).
set -eu
MNT="/tmp/mnt-$UUID"
case "$1" in
  create)
    mkfs.xfs -q "$DEVICE"
    mkdir -p "$MNT"
    mount "$DEVICE" "$MNT"
    # --numeric-owner keeps uids/gids as in the image, not as names on this host.
    tar --numeric-owner --same-permissions -xpf "${TARBALL:?set TARBALL}" -C "$MNT"
    sync
    umount "$MNT"
    rmdir "$MNT"
    # Done: flush, checkpoint and exit.
    kill -INT "$PID"
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
  snapshot) echo "statechange: snapshot $SNAPSHOT_UUID taken" ;;
  close)
    if mountpoint -q "$MNT"; then umount "$MNT"; fi
    rmdir "$MNT" 2>/dev/null || true
    kill -INT "$PID"
    ;;
esac
