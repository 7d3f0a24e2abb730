//! The kernel nbd path of attach, against a real Linux nbd driver: a Debian kernel boots
//! under qemu (software emulation, so no KVM or nbd module is needed on the host) with an
//! initramfs holding busybox, mkfs.ext4, this build's `mindcastle` and the kernel's own
//! nbd and ext4 modules. Inside, `tests/vm/guest-test.sh` attaches disks through
//! /dev/nbdN: raw bytes with sub-block overlapping writes read back through the device,
//! SIGHUP close and reopen compared byte for byte, BLKDISCARD, a second disk on the next
//! device with ext4 made, filled, closed and checked by sha256 on reopen, SIGINT running
//! close first, `--fuse` choosing FUSE + loop although nbd is there, and fsck + export
//! of what reached the chunks.
//!
//! Needs qemu-system-x86_64, busybox-static, cpio and the kernel files that
//! `tests/vm/fetch-kernel.sh` puts in /opt/mindcastle-vm (all from
//! `scripts/install-deps.sh`). Skips loudly without them, never under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::have;

fn vm_dir() -> PathBuf {
    std::env::var_os("MINDCASTLE_VM_DIR")
        .map_or_else(|| PathBuf::from("/opt/mindcastle-vm"), PathBuf::from)
}

fn capable(dir: &Path) -> bool {
    let ok = have("qemu-system-x86_64")
        && have("cpio")
        && Path::new("/bin/busybox").exists()
        && dir.join("vmlinuz").exists()
        && dir.join("modules/order").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "the kernel nbd VM test needs qemu-system-x86_64, cpio, busybox-static and \
                 {} (scripts/install-deps.sh) under CI=true",
                dir.display()
            );
        }
        eprintln!(
            "SKIPPING kernel nbd VM test: needs qemu-system-x86_64, cpio, busybox-static and \
             the kernel in {} (run scripts/install-deps.sh)",
            dir.display()
        );
    }
    ok
}

#[test]
fn attach_through_the_kernel_nbd_driver_in_a_vm() {
    let dir = vm_dir();
    if !capable(&dir) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let initrd = tmp.path().join("initrd.gz");
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    let st = Command::new(vm.join("build-initramfs.sh"))
        .arg(&dir)
        .arg(env!("CARGO_BIN_EXE_mindcastle"))
        .arg(&initrd)
        .status()
        .unwrap();
    assert!(st.success(), "building the initramfs failed");

    let log_path = tmp.path().join("console.log");
    let log = std::fs::File::create(&log_path).unwrap();
    // KVM is not used: nested KVM hangs on some hosts, and emulation is fast enough.
    let accel = std::env::var("MINDCASTLE_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", &accel, "-cpu", "max", "-smp", "2", "-m", "1024"])
        .args(["-nographic", "-no-reboot", "-kernel"])
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(&initrd)
        .args(["-append", "console=ttyS0 rdinit=/init panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = String::from_utf8_lossy(&std::fs::read(&log_path).unwrap()).into_owned();
    let report: Vec<&str> = out.lines().filter(|l| l.contains("MCVM")).collect();
    eprintln!("{}", report.join("\n"));
    assert!(status.is_some(), "the VM did not finish in 900 s:\n{out}");
    assert!(
        out.contains("MCVM-RESULT pass"),
        "the guest test failed:\n{out}"
    );
    for step in [
        "create on /dev/nbd0",
        "read-back",
        "sighup-close",
        "open-compare on /dev/nbd0",
        "ext4-create on /dev/nbd1",
        "sigint-exit",
        "ext4-open-checksums",
        "failing-open-script",
        "fuse-forced on /dev/loop",
        "fsck-export",
    ] {
        assert!(
            out.contains(&format!("MCVM ok {step}")),
            "step {step} missing:\n{out}"
        );
    }
}
