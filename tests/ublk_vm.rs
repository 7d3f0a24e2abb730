//! The ublk front end against the real driver: a qemu guest with Debian's 6.12 kernel
//! (its `ublk_drv` module; Debian 12's own 6.1 does not build ublk) runs
//! `tests/vm/ublk-test.sh`: fio with verification on the raw device, sub-block
//! overlapping writes and a discard read back, XFS made, filled, detached and checked
//! file by file after a second attach, `xfs_repair -n`, fsck; then XFS with fio writing
//! and verifying on it while mindcastle is killed with SIGKILL and started again 20
//! times: each start recovers the quiesced device (`UBLK_F_USER_RECOVERY`), then 5
//! hand-overs (`attach --hand-over`) under the same load: fio sees no error, the files
//! are intact, `xfs_repair -n` and fsck clean, no watchdog left after the detach. Last,
//! the reconnect timeout: a killed attach's device nobody recovers within 3 s is
//! removed by its watchdog, a read held on it fails, and the write flushed before the
//! kill is on the next attach's new device.
//!
//! Needs what `kernel_nbd_vm` needs plus fio and xfsprogs; skips loudly without them,
//! never under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::vm;

#[test]
fn attach_through_ublk_in_a_vm() {
    vm::run_guest_script(
        "the ublk VM test",
        "ublk-test.sh",
        &["fio", "mkfs.xfs", "xfs_repair", "blkdiscard"],
        Duration::from_secs(900),
        &[
            "ublk-create on /dev/ublkb",
            "fio-verify",
            "sub-block-and-discard",
            "xfs-detach",
            "reopen-checksums",
            "fsck-clean",
            "ublk-recover 20",
            "ublk-hand-over 5",
            "ublk-kills-and-hand-overs-under-load",
            "no-watchdog-left",
            "ublk-reconnect-timeout",
        ],
    );
}
