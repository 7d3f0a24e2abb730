//! The ublk front end against the real driver: a qemu guest with Debian's 6.12 kernel
//! (its `ublk_drv` module; Debian 12's own 6.1 does not build ublk) runs
//! `tests/vm/ublk-test.sh`: fio with verification on the raw device, sub-block
//! overlapping writes and a discard read back, XFS made, filled, detached and checked
//! file by file after a second attach, `xfs_repair -n`, fsck; then XFS with fio writing
//! and verifying on it while mindcastle is killed with SIGKILL and started again 5
//! times: each start recovers the quiesced device (`UBLK_F_USER_RECOVERY`), fio sees no
//! error, the files are intact, `xfs_repair -n` and fsck clean.
//!
//! Needs what `kernel_nbd_vm` needs plus fio and xfsprogs; skips loudly without them,
//! never under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::vm;

#[test]
fn attach_through_ublk_in_a_vm() {
    if !vm::capable("the ublk VM test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initrd.gz");
    vm::initrd_with(
        &initrd,
        "ublk-test.sh",
        None,
        &["fio", "mkfs.xfs", "xfs_repair", "blkdiscard"],
    );
    let mut g = vm::Guest::boot(&initrd, &tmp.path().join("console.log"), "", None);
    let finished = g.wait_until(Duration::from_secs(900), |c| c.contains("MCVM-RESULT"));
    let out = g.power_cut();
    let report: Vec<&str> = out.lines().filter(|l| l.contains("MCVM")).collect();
    eprintln!("{}", report.join("\n"));
    assert!(finished, "the VM did not finish in 900 s:\n{out}");
    assert!(
        out.contains("MCVM-RESULT pass"),
        "the guest test failed:\n{out}"
    );
    for step in [
        "ublk-create on /dev/ublkb",
        "fio-verify",
        "sub-block-and-discard",
        "xfs-detach",
        "reopen-checksums",
        "fsck-clean",
        "ublk-recover 5",
        "ublk-kills-under-load",
    ] {
        assert!(
            out.contains(&format!("MCVM ok {step}")),
            "step {step} missing:\n{out}"
        );
    }
}
