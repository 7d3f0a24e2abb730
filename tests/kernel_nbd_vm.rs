//! The kernel front ends of attach, against real Linux drivers: Debian's 6.12 kernel
//! boots under qemu (software emulation, so no KVM or module is needed on the host)
//! with an initramfs holding busybox, mkfs.ext4, this build's `mindcastle` and the
//! kernel's own ublk, nbd and ext4 modules. Inside, `tests/vm/guest-test.sh`: `auto`
//! picks ublk and takes a killed attach's ublk device back; with ublk_drv removed it
//! picks kernel nbd and says why; then raw bytes with sub-block overlapping writes read
//! back through /dev/nbdN, SIGHUP close and reopen compared byte for byte, BLKDISCARD,
//! ext4 made, filled, closed and checked by sha256 on reopen, SIGINT running close
//! first, a SIGKILL through the ioctls releasing the device, through netlink keeping it
//! for the next attach (a held read completes, a flushed write is there), a copy of the
//! disk never taking its device, I/O errors past the reconnect timeout, the kernel
//! adding a fifth device, `--fuse` choosing FUSE + loop, FUSE + loop with nbd removed,
//! and fsck + export of what reached the chunks.
//!
//! Needs qemu-system-x86_64, busybox-static, cpio and the kernel files that
//! `tests/vm/fetch-kernel.sh` puts in /opt/mindcastle-vm (all from
//! `scripts/install-deps.sh`). Skips loudly without them, never under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::vm;

#[test]
fn attach_through_the_kernel_nbd_driver_in_a_vm() {
    vm::run_guest_script(
        "the kernel nbd VM test",
        "guest-test.sh",
        &[],
        Duration::from_secs(900),
        &[
            "auto-picks-ublk-then-recovers-it",
            "create on /dev/nbd0",
            "read-back",
            "sighup-close",
            "open-compare on /dev/nbd0",
            "ext4-create on /dev/nbd1",
            "sigint-exit",
            "ext4-open-checksums",
            "failing-open-script",
            "sigkill-releases-device",
            "netlink-recover on /dev/nbd",
            "copy-never-takes-the-device",
            "past-the-timeout",
            "fifth-disk-gets-a-new-device",
            "fuse-forced on /dev/loop",
            "falls-back-to-fuse",
            "fsck-export",
        ],
    );
}
