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
    vm::run_guest_script(
        "the kernel nbd recovery VM test",
        "recover-cycles.sh",
        &["fio", "mkfs.xfs", "xfs_repair"],
        Duration::from_secs(1500),
        &[
            "xfs-create on /dev/nbd0",
            "cycle 20 ",
            "hand-over 5 ",
            "fio-under-kills",
            "xfs-repair-clean",
            "fsck-clean",
            "reopen-checksums",
        ],
    );
}
