//! Attach end to end, as root on the FUSE + loop path: the example statechange scripts,
//! the signals (SIGHUP close, SIGINT exit, SIGUSR1 snapshot), the tar flow, and a script
//! that fails. Skips (loudly) only where root, /dev/fuse or loop devices are truly
//! absent, and never under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::have;

fn capable() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let ok = root && Path::new("/dev/fuse").exists() && Path::new("/dev/loop-control").exists();
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("attach tests need root, /dev/fuse and loop devices under CI=true");
        }
        eprintln!("SKIPPING attach test: needs root, /dev/fuse and /dev/loop-control");
        return false;
    }
    have("losetup") && have("mkfs.xfs") && have("mountpoint")
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// A running attach; if a test fails before waiting for it, dropping it runs close
/// (SIGINT) and, failing that, kills it, so no mount, loop device or open pipe outlives
/// the test (a lingering child would keep the harness waiting on its output).
struct Running(Option<Child>);

impl Running {
    fn id(&self) -> u32 {
        self.0.as_ref().map_or(0, Child::id)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let Some(mut c) = self.0.take() else { return };
        if matches!(c.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-INT", &c.id().to_string()])
                .status();
            let t = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(args: &[&str]) -> Running {
    Running(Some(
        Command::new(env!("CARGO_BIN_EXE_mindcastle"))
            .args(args)
            .env("PATH", common::server::path_env())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    ))
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn uuid_of(swap: &Path) -> String {
    wait_for("the .swap file", || swap.exists());
    mindcastle::volume::read_swap(swap).unwrap().uuid
}

fn mounted(dir: &str) -> bool {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(dir))
}

fn loop_for(uuid: &str) -> bool {
    let o = Command::new("losetup").arg("-a").output().unwrap();
    String::from_utf8_lossy(&o.stdout).contains(uuid)
}

fn signal(c: &Running, sig: &str) {
    assert!(Command::new("kill")
        .args([sig, &c.id().to_string()])
        .status()
        .unwrap()
        .success());
}

fn wait_exit(mut r: Running) -> i32 {
    let t = Instant::now();
    loop {
        // Left in `r` while waiting, so a timeout below still cleans up on drop.
        if let Some(st) = r.0.as_mut().unwrap().try_wait().unwrap() {
            r.0 = None;
            return st.code().unwrap_or(-1);
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "mindcastle did not exit"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// sha256 of every file under `dir`, sorted by path.
fn sums(dir: &str) -> String {
    let o = Command::new("sh")
        .args([
            "-c",
            &format!("cd {dir} && find . -type f | sort | xargs -r sha256sum"),
        ])
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn xfs_end_to_end_hup_then_reopen() {
    if !capable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("d.swap");
    let script = examples().join("statechange.sh");
    let c = spawn(&[
        "--size",
        "1G",
        swap.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    let uuid = uuid_of(&swap);
    let mnt = format!("/tmp/mnt-{uuid}");
    wait_for("the XFS mount", || mounted(&mnt));
    for i in 0..20 {
        let sub = format!("{mnt}/d{}", i % 4);
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            format!("{sub}/f{i}"),
            common::data(i, 1000 + i as usize * 7919),
        )
        .unwrap();
    }
    std::fs::write(format!("{mnt}/big"), common::data(99, 20 << 20)).unwrap();
    assert!(Command::new("sync").status().unwrap().success());
    let before = sums(&mnt);
    assert!(before.lines().count() == 21);
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);
    assert!(
        !mounted(&mnt) && !loop_for(&uuid),
        "left a mount or loop device behind"
    );
    // Attach again: `open`, same files.
    let c = spawn(&[swap.to_str().unwrap(), script.to_str().unwrap()]);
    wait_for("the remount", || mounted(&mnt));
    assert_eq!(sums(&mnt), before);
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);
    let o = common::run(&["fsck", swap.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
}

#[test]
fn ctrl_c_leaves_nothing_behind_and_keeps_synced_files() {
    if !capable() || !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("d.swap");
    let script = examples().join("statechange-ext4.sh");
    let c = spawn(&[
        "attach",
        "-s",
        "1",
        swap.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    let uuid = uuid_of(&swap);
    let mnt = format!("/tmp/mnt-{uuid}");
    wait_for("the ext4 mount", || mounted(&mnt));
    let d = common::data(5, 3 << 20);
    std::fs::write(format!("{mnt}/kept"), &d).unwrap();
    assert!(Command::new("sync").status().unwrap().success());
    signal(&c, "-INT");
    assert_eq!(wait_exit(c), 0);
    assert!(!mounted(&mnt), "Ctrl-C left {mnt} mounted");
    assert!(!loop_for(&uuid), "Ctrl-C left a loop device");
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(
        !mounts.contains(&uuid),
        "Ctrl-C left a FUSE mount: {mounts}"
    );
    let c = spawn(&[swap.to_str().unwrap(), script.to_str().unwrap()]);
    wait_for("the remount", || mounted(&mnt));
    assert!(std::fs::read(format!("{mnt}/kept")).unwrap() == d);
    signal(&c, "-INT");
    assert_eq!(wait_exit(c), 0);
}

/// A statechange script for raw-device tests (no filesystem): it appends
/// "EVENT DEVICE SNAPSHOT_UUID" to `dir/events` and sends SIGINT on close. Returns the
/// script and the events file.
fn raw_script(dir: &Path) -> (PathBuf, PathBuf) {
    let script = dir.join("raw.sh");
    let note = dir.join("events");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 $DEVICE ${{SNAPSHOT_UUID:-}}\" >> {}\n[ \"$1\" = close ] && kill -INT $PID\nexit 0\n",
            note.display()
        ),
    )
    .unwrap();
    Command::new("chmod")
        .args(["+x", script.to_str().unwrap()])
        .status()
        .unwrap();
    (script, note)
}

/// Creates and attaches a 64 MiB disk `name` in `dir` with `raw_script`; returns the
/// running attach, the `.swap`, the script, the events file and the block device.
fn start_raw(dir: &Path, name: &str) -> (Running, PathBuf, PathBuf, PathBuf, String) {
    let swap = dir.join(name);
    let (script, note) = raw_script(dir);
    let c = spawn(&[
        "--size",
        "64M",
        swap.to_str().unwrap(),
        script.to_str().unwrap(),
    ]);
    let events = || std::fs::read_to_string(&note).unwrap_or_default();
    wait_for("create", || events().starts_with("create /dev/loop"));
    let dev = events().split_whitespace().nth(1).unwrap().to_string();
    (c, swap, script, note, dev)
}

/// Writes `data` to `dev` at MiB `seek_mib`, direct and fsynced.
fn write_device(dev: &str, scratch: &Path, data: &[u8], seek_mib: u64) {
    std::fs::write(scratch, data).unwrap();
    let st = Command::new("dd")
        .args([
            &format!("if={}", scratch.display()),
            &format!("of={dev}"),
            "bs=1M",
            &format!("seek={seek_mib}"),
            "oflag=direct",
            "conv=fsync",
            "status=none",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "dd to {dev}");
}

#[test]
fn usr1_snapshot_is_exported_as_it_was() {
    if !capable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // No filesystem: the test writes the device directly; the script records events.
    let (c, swap, script, note, dev) = start_raw(dir.path(), "d.swap");
    let events = || std::fs::read_to_string(&note).unwrap_or_default();
    let scratch = dir.path().join("chunk");
    let write_dev = |seed: u64| write_device(&dev, &scratch, &common::data(seed, 1 << 20), 0);
    write_dev(1);
    // Other signals are ignored while attached: the process and the device stay.
    for sig in ["-USR2", "-QUIT", "-PIPE", "-ALRM"] {
        signal(&c, sig);
    }
    std::thread::sleep(Duration::from_millis(300));
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.id())).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .chars()
        .next();
    assert!(
        matches!(state, Some(s) if s != 'Z' && s != 'X'),
        "an ignored signal ended the attach (state {state:?})"
    );
    write_dev(3);
    write_dev(1);
    signal(&c, "-USR1");
    wait_for("the snapshot event", || events().contains("snapshot "));
    let id = events()
        .lines()
        .find(|l| l.starts_with("snapshot"))
        .unwrap()
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 64);
    write_dev(2);
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);
    // Reattach and detach once more, then export both states.
    let c = spawn(&[swap.to_str().unwrap(), script.to_str().unwrap()]);
    wait_for("open", || events().contains("open /dev/loop"));
    signal(&c, "-INT");
    assert_eq!(wait_exit(c), 0);
    let old = dir.path().join("old.raw");
    let o = common::run(&[
        "export",
        "--snapshot",
        &id,
        swap.to_str().unwrap(),
        old.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&old).unwrap()[..1 << 20] == common::data(1, 1 << 20)[..]);
    let cur = dir.path().join("cur.raw");
    assert!(
        common::run(&["export", swap.to_str().unwrap(), cur.to_str().unwrap()])
            .status
            .success()
    );
    assert!(std::fs::read(&cur).unwrap()[..1 << 20] == common::data(2, 1 << 20)[..]);
}

#[test]
fn tar_flow_keeps_paths_sizes_modes_and_owners() {
    if !capable() || !have("tar") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("root");
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(tree.join("etc/os-release"), "NAME=test\n").unwrap();
    std::fs::write(tree.join("usr/bin/tool"), common::data(3, 100_000)).unwrap();
    let sh = |c: &str| {
        assert!(
            Command::new("sh")
                .args(["-c", c])
                .status()
                .unwrap()
                .success(),
            "{c}"
        )
    };
    let t = tree.display();
    sh(&format!("chown 1234:5678 {t}/usr/bin/tool && chmod 4751 {t}/usr/bin/tool && chmod 0640 {t}/etc/os-release && chown 42:43 {t}/etc"));
    let tarball = dir.path().join("rootfs.tar");
    sh(&format!(
        "tar --numeric-owner -cf {} -C {t} .",
        tarball.display()
    ));
    let swap = dir.path().join("img.swap");
    let st = Command::new(examples().join("tar-to-disk.sh"))
        .args([tarball.to_str().unwrap(), swap.to_str().unwrap(), "1G"])
        .env("MINDCASTLE", env!("CARGO_BIN_EXE_mindcastle"))
        .env("PATH", common::server::path_env())
        .status()
        .unwrap();
    assert!(st.success());
    let uuid = uuid_of(&swap);
    let mnt = format!("/tmp/mnt-{uuid}");
    let c = spawn(&[
        swap.to_str().unwrap(),
        examples().join("statechange.sh").to_str().unwrap(),
    ]);
    wait_for("the mount", || mounted(&mnt));
    for rel in ["etc", "etc/os-release", "usr/bin/tool"] {
        let a = std::fs::symlink_metadata(tree.join(rel)).unwrap();
        let b = std::fs::symlink_metadata(format!("{mnt}/{rel}")).unwrap();
        assert_eq!(
            (a.mode(), a.uid(), a.gid()),
            (b.mode(), b.uid(), b.gid()),
            "{rel}"
        );
        if a.is_file() {
            assert_eq!(a.len(), b.len(), "{rel}");
            assert!(
                std::fs::read(tree.join(rel)).unwrap()
                    == std::fs::read(format!("{mnt}/{rel}")).unwrap()
            );
        }
    }
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);
}

#[test]
fn failing_open_script_exits_non_zero_and_cleans_up() {
    if !capable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 64 << 20);
    let uuid = uuid_of(&swap);
    let script = dir.path().join("fail.sh");
    std::fs::write(&script, "#!/bin/sh\necho refusing >&2\nexit 3\n").unwrap();
    Command::new("chmod")
        .args(["+x", script.to_str().unwrap()])
        .status()
        .unwrap();
    let o = common::run(&[swap.to_str().unwrap(), script.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("failed on open (exit status 3)"), "{err}");
    assert!(!loop_for(&uuid), "loop device left behind");
    std::thread::sleep(Duration::from_millis(100));
    let fuse_left = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .contains(&uuid);
    assert!(!fuse_left, "FUSE mount left behind");
    // A script that is not executable is refused before anything is attached.
    let noexec = dir.path().join("noexec.sh");
    std::fs::write(&noexec, "#!/bin/sh\n").unwrap();
    let o = common::run(&[swap.to_str().unwrap(), noexec.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not executable"));
}

#[test]
fn sigkill_leaves_nothing_the_next_attach_does_not_clear() {
    if !capable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (c, swap, script, note, dev) = start_raw(dir.path(), "k.swap");
    let events = || std::fs::read_to_string(&note).unwrap_or_default();
    let data = common::data(77, 1 << 20);
    write_device(&dev, &dir.path().join("data"), &data, 3);
    let uuid = uuid_of(&swap);
    // The attach mounts FUSE at a folder of its own, `mindcastle-UUID-RANDOM-PID`.
    let prefix = format!("{}/mindcastle-{uuid}-", std::env::temp_dir().display());
    let suffix = format!("-{}", c.id());
    let stale = std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .find(|d| d.starts_with(&prefix) && d.ends_with(&suffix))
        .expect("the attach's FUSE mount")
        .to_string();
    signal(&c, "-KILL");
    assert_eq!(wait_exit(c), -1);
    assert!(
        mounted(&stale),
        "expected the killed attach's FUSE mount to linger"
    );

    // The next attach clears the dead mount and its loop device, and the synced bytes
    // are there.
    std::fs::write(&note, "").unwrap();
    let c = spawn(&[swap.to_str().unwrap(), script.to_str().unwrap()]);
    wait_for("open", || events().starts_with("open /dev/loop"));
    assert!(!mounted(&stale), "the stale FUSE mount is still there");
    let o = Command::new("losetup").arg("-a").output().unwrap();
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains(&stale),
        "a loop device still points into the stale mount"
    );
    let dev = events().split_whitespace().nth(1).unwrap().to_string();
    let o = Command::new("dd")
        .args([
            &format!("if={dev}"),
            "bs=1M",
            "skip=3",
            "count=1",
            "iflag=direct",
            "status=none",
        ])
        .output()
        .unwrap();
    assert!(o.stdout == data, "synced data lost to SIGKILL");
    signal(&c, "-INT");
    assert_eq!(wait_exit(c), 0);
    assert!(!loop_for(&uuid));
}

/// A disk the original C Mindcastle wrote, converted, attached (FUSE + loop): its ext4
/// mounts and every file matches the fixture's FILES.sha256.
#[test]
fn converted_original_disk_mounts_with_every_file_intact() {
    if !capable() || !have("mkfs.ext4") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let old = common::legacy_copy(dir.path());
    let new = dir.path().join("converted.swap");
    let o = common::run(&["convert", old.to_str().unwrap(), new.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let script = examples().join("statechange-ext4.sh");
    let c = spawn(&[new.to_str().unwrap(), script.to_str().unwrap()]);
    let uuid = uuid_of(&new);
    let mnt = format!("/tmp/mnt-{uuid}");
    wait_for("the ext4 mount", || mounted(&mnt));
    let want = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-c/FILES.sha256"),
    )
    .unwrap();
    let mut want: Vec<&str> = want.lines().filter(|l| !l.trim().is_empty()).collect();
    want.sort_unstable();
    let got = sums(&mnt);
    let mut got: Vec<&str> = got.lines().collect();
    got.sort_unstable();
    assert_eq!(got, want, "files in the converted disk's ext4");
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);
    assert!(!mounted(&mnt) && !loop_for(&uuid));
}

/// Host A makes an XFS filesystem on its disk (attach with the example script), writes
/// files and closes; it pushes the disk over WebDAV to nginx on 127.0.0.1 and is gone.
/// Host B, with only the `.swap` that `push --swap-out` wrote (and a cache), attaches it
/// on FUSE + loop, mounts A's XFS, finds every file, writes one; the published folder
/// is unchanged, and B's file is there when B attaches again.
#[test]
fn pushed_disk_attaches_on_another_host() {
    if !capable() || !have("nginx") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let script = examples().join("statechange.sh");
    let a = dir.path().join("a").join("a.swap");
    std::fs::create_dir_all(a.parent().unwrap()).unwrap();
    let c = spawn(&["--size", "1G", &s(&a), script.to_str().unwrap()]);
    let uuid = uuid_of(&a);
    let mnt = format!("/tmp/mnt-{uuid}");
    wait_for("host A's XFS mount", || mounted(&mnt));
    std::fs::create_dir_all(format!("{mnt}/etc")).unwrap();
    std::fs::write(format!("{mnt}/etc/motd"), b"built once, booted anywhere\n").unwrap();
    std::fs::write(format!("{mnt}/blob"), common::noise(5, 24 << 20)).unwrap();
    for i in 0..12 {
        std::fs::write(
            format!("{mnt}/etc/f{i}"),
            common::data(i, 5000 + i as usize * 7919),
        )
        .unwrap();
    }
    assert!(Command::new("sync").status().unwrap().success());
    let files = sums(&mnt);
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);

    let web = dir.path().join("www");
    std::fs::create_dir_all(&web).unwrap();
    let (_nginx, port) = common::web::nginx(dir.path(), &web);
    let b = dir.path().join("b");
    std::fs::create_dir_all(&b).unwrap();
    let remote = b.join("remote.swap");
    let url = format!("http://127.0.0.1:{port}/pub/d");
    let o = common::run(&["push", &s(&a), &url, "--swap-out", &s(&remote)]);
    assert!(o.status.success(), "{o:?}");
    std::fs::remove_dir_all(a.parent().unwrap()).unwrap(); // host A is gone
    let mut text = std::fs::read_to_string(&remote).unwrap();
    assert!(text.contains(&format!("fallback={url}")), "{text}");
    text.push_str("cache=cache\n");
    std::fs::write(&remote, text).unwrap();
    let published = web.join("pub/d");
    let before = sums(published.to_str().unwrap());

    // The pushed copy is a disk of its own (a uuid of its own, so its own mount point).
    let mnt = format!("/tmp/mnt-{}", uuid_of(&remote));
    let c = spawn(&[&s(&remote), script.to_str().unwrap()]);
    wait_for("host B's mount of A's XFS", || mounted(&mnt));
    assert_eq!(sums(&mnt), files, "host B sees other files");
    std::fs::write(format!("{mnt}/local-change"), b"host B").unwrap();
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);
    assert_eq!(
        sums(published.to_str().unwrap()),
        before,
        "the published copy changed"
    );
    let c = spawn(&[&s(&remote), script.to_str().unwrap()]);
    wait_for("the remount", || mounted(&mnt));
    assert_eq!(
        std::fs::read(format!("{mnt}/local-change")).unwrap(),
        b"host B"
    );
    signal(&c, "-HUP");
    assert_eq!(wait_exit(c), 0);
}
