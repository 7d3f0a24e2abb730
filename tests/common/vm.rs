//! The test VM: Debian's kernel (unpacked by `tests/vm/fetch-kernel.sh`) under qemu with
//! software emulation, an initramfs from `tests/vm/build-initramfs.sh`, the serial
//! console captured to a file.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::server::have;

/// Where the kernel and its modules are.
pub fn dir() -> PathBuf {
    std::env::var_os("MINDCASTLE_VM_DIR")
        .map_or_else(|| PathBuf::from("/opt/mindcastle-vm"), PathBuf::from)
}

/// True when a VM can be started; skips loudly, and never under CI=true.
pub fn capable(what: &str) -> bool {
    let d = dir();
    let ok = have("qemu-system-x86_64")
        && have("cpio")
        && Path::new("/bin/busybox").exists()
        && d.join("vmlinuz").exists()
        && d.join("modules/order").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!(
                "{what} needs qemu-system-x86_64, cpio, busybox-static and {} \
                 (scripts/install-deps.sh) under CI=true",
                d.display()
            );
        }
        eprintln!(
            "SKIPPING {what}: needs qemu-system-x86_64, cpio, busybox-static and the kernel \
             in {} (run scripts/install-deps.sh)",
            d.display()
        );
    }
    ok
}

/// Builds an initramfs whose init runs `guest_script` (a file in tests/vm/).
pub fn initrd(out: &Path, guest_script: &str, pattern: Option<&Path>) {
    initrd_with(out, guest_script, pattern, &[]);
}

/// [`initrd`] with host programs (found in PATH) copied in with their libraries.
pub fn initrd_with(out: &Path, guest_script: &str, pattern: Option<&Path>, programs: &[&str]) {
    let vm = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vm");
    let mut cmd = Command::new(vm.join("build-initramfs.sh"));
    cmd.arg(dir())
        .arg(env!("CARGO_BIN_EXE_mindcastle"))
        .arg(out)
        .arg(vm.join(guest_script));
    for p in programs {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(p))
            .find(|c| c.is_file())
            .unwrap_or_else(|| panic!("{p} is not installed (scripts/install-deps.sh)"));
        cmd.arg(found);
    }
    if let Some(p) = pattern {
        cmd.env("PATTERN", p);
    }
    assert!(
        cmd.status().unwrap().success(),
        "building the initramfs failed"
    );
}

/// A running guest; killed (like a power cut) when dropped.
pub struct Guest {
    child: Child,
    log: PathBuf,
}

impl Guest {
    /// Boots with `append` added to the kernel command line and `disk` (if any) as a
    /// raw virtio disk, the console going to `log`.
    pub fn boot(initrd: &Path, log: &Path, append: &str, disk: Option<&Path>) -> Self {
        let out = std::fs::File::create(log).unwrap();
        // KVM is not used: nested KVM hangs on some hosts, and emulation is fast enough.
        let accel = std::env::var("MINDCASTLE_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", &accel, "-cpu", "max", "-smp", "2", "-m", "1024"])
            .args(["-nographic", "-no-reboot", "-kernel"])
            .arg(dir().join("vmlinuz"))
            .arg("-initrd")
            .arg(initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 rdinit=/init panic=-1 quiet {append}"
            ));
        if let Some(d) = disk {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache=writeback",
                d.display()
            ));
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Self {
            child,
            log: log.to_path_buf(),
        }
    }

    /// The console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Waits until `done(console)` or the guest exits or `limit` passes; returns
    /// whether `done` held.
    pub fn wait_until(&mut self, limit: Duration, done: impl Fn(&str) -> bool) -> bool {
        let t = Instant::now();
        loop {
            if done(&self.console()) {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() || t.elapsed() > limit {
                return done(&self.console());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Cuts the power: SIGKILL to qemu, so the guest's page cache and everything it
    /// had not flushed to its virtual disk is gone.
    pub fn power_cut(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.console()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Boots a guest whose init runs `script` (a file in tests/vm/, with `programs` copied
/// in), waits up to `limit` for its verdict, prints its `MCVM` lines, and asserts that
/// it passed and printed `MCVM ok STEP` for every step. Skips as [`capable`] says.
pub fn run_guest_script(
    what: &str,
    script: &str,
    programs: &[&str],
    limit: Duration,
    steps: &[&str],
) {
    if !capable(what) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let initrd_path = tmp.path().join("initrd.gz");
    initrd_with(&initrd_path, script, None, programs);
    let mut g = Guest::boot(&initrd_path, &tmp.path().join("console.log"), "", None);
    let finished = g.wait_until(limit, |c| c.contains("MCVM-RESULT"));
    let out = g.power_cut();
    let report: Vec<&str> = out.lines().filter(|l| l.contains("MCVM")).collect();
    eprintln!("{}", report.join("\n"));
    assert!(finished, "the VM did not finish in {limit:?}:\n{out}");
    assert!(
        out.contains("MCVM-RESULT pass"),
        "the guest test failed:\n{out}"
    );
    for step in steps {
        assert!(
            out.contains(&format!("MCVM ok {step}")),
            "step {step} missing:\n{out}"
        );
    }
}
