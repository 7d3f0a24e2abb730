//! A kernel nbd device outlives its server: in a qemu guest (Debian's kernel, its nbd
//! and xfs modules), XFS on a disk attached through netlink, fio writing with
//! verification on the mount while mindcastle is killed with SIGKILL and started again
//! 20 times, then handed over from one running attach to a new one 5 times
//! (`attach --hand-over`, `tests/vm/recover-cycles.sh`): fio must report no I/O error and no verify
//! mismatch, the tree written first must be intact, `xfs_repair -n` and mindcastle's
//! fsck clean. The single-kill steps (a held read completing after the take-over, I/O
//! errors past the reconnect timeout, `--recover`) are in `kernel_nbd_vm`.
//!
//! Needs what `kernel_nbd_vm` needs plus fio and xfsprogs; skips loudly without them,
//! never under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::vm;

#[test]
fn xfs_and_fio_survive_twenty_kills_and_five_hand_overs_of_the_server() {
    if !vm::capable("the kernel nbd recovery VM test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initrd.gz");
    vm::initrd_with(
        &initrd,
        "recover-cycles.sh",
        None,
        &["fio", "mkfs.xfs", "xfs_repair"],
    );
    let mut g = vm::Guest::boot(&initrd, &tmp.path().join("console.log"), "", None);
    let finished = g.wait_until(Duration::from_secs(1500), |c| c.contains("MCVM-RESULT"));
    let out = g.power_cut();
    let report: Vec<&str> = out.lines().filter(|l| l.contains("MCVM")).collect();
    eprintln!("{}", report.join("\n"));
    assert!(finished, "the VM did not finish in 1500 s:\n{out}");
    assert!(
        out.contains("MCVM-RESULT pass"),
        "the guest test failed:\n{out}"
    );
    for step in [
        "xfs-create on /dev/nbd0",
        "cycle 20 ",
        "hand-over 5 ",
        "fio-under-kills",
        "xfs-repair-clean",
        "fsck-clean",
        "reopen-checksums",
    ] {
        assert!(
            out.contains(&format!("MCVM ok {step}")),
            "step {step} missing:\n{out}"
        );
    }
}
