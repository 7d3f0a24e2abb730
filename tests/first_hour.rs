//! What a new user meets in the first hour: typos, swapped arguments, closed pipes,
//! files that are not disks, `-s` meaning GiB everywhere, `serve`'s signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_mistyped_subcommand_is_not_taken_for_a_disk() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        vec!["inof", "/bin/true"],
        vec!["inof", "t.swap"],
        vec!["exprot", "x"],
    ] {
        let o = common::bin()
            .current_dir(dir.path())
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        let e = stderr(&o);
        assert!(e.contains("unrecognized subcommand"), "{args:?}: {e}");
        assert!(e.contains("similar"), "no suggestion for {args:?}: {e}");
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{args:?} created files"
        );
    }
}

#[test]
fn a_created_disk_names_its_root_and_s_means_gib() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("g.swap");
    let o = common::run(&["create", "-s", "1", s(&p)]);
    assert!(o.status.success(), "{o:?}");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains("size=1073741824\n"), "{text}");
    assert!(
        text.contains("snapshot=") && text.contains("snaphash="),
        "{text}"
    );
    let q = dir.path().join("m.swap");
    let o = common::run(&["create", "--size", "64M", s(&q)]);
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read_to_string(&q)
        .unwrap()
        .contains("size=67108864\n"));
    let o = common::run(&["create", "-s", "0", s(&dir.path().join("z.swap"))]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

#[test]
fn export_never_overwrites_a_file_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let disk = common::new_disk(dir.path(), 1 << 20);
    let keep = dir.path().join("small.img");
    std::fs::write(&keep, b"precious bytes").unwrap();
    let o = common::run(&["export", s(&disk), s(&keep)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("--force"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&keep).unwrap(), b"precious bytes");
    let o = common::run(&["export", "--force", s(&disk), s(&keep)]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(std::fs::read(&keep).unwrap(), vec![0u8; 1 << 20]);
    // A new file and /dev/null need no --force.
    let o = common::run(&["export", s(&disk), s(&dir.path().join("new.img"))]);
    assert!(o.status.success(), "{o:?}");
    let o = common::run(&["export", s(&disk), "/dev/null"]);
    assert!(o.status.success(), "{o:?}");
}

/// Runs the binary with its stdout a pipe whose reader is already gone.
fn run_into_closed_pipe(args: &[&str]) -> std::process::Output {
    let mut child = common::bin()
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn a_closed_pipe_never_panics_and_a_cut_export_fails() {
    let dir = tempfile::tempdir().unwrap();
    let disk = common::new_disk(dir.path(), 8 << 20);
    for args in [vec!["info"], vec!["info", "--json"], vec!["fsck"]] {
        let mut a = args.clone();
        a.push(s(&disk));
        let o = run_into_closed_pipe(&a);
        assert!(!stderr(&o).contains("panicked"), "{a:?}: {}", stderr(&o));
        assert_eq!(o.status.code(), Some(0), "{a:?}: {o:?}");
    }
    let o = run_into_closed_pipe(&["export", s(&disk), "-"]);
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    assert_eq!(o.status.code(), Some(6), "{o:?}");
    assert!(
        stderr(&o).contains("standard output closed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_file_that_is_not_a_disk_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("blob.swap");
    std::fs::write(&bin, [0xffu8, 0xfe, 0, 1, 2, 0x80]).unwrap();
    let o = common::run(&["info", s(&bin)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("not a .swap file"), "{}", stderr(&o));
}

#[test]
fn a_swap_readable_by_others_gets_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let disk = common::new_disk(dir.path(), 1 << 20);
    let o = common::run(&["info", s(&disk)]);
    assert!(
        !stderr(&o).contains("readable by other users"),
        "{}",
        stderr(&o)
    );
    std::fs::set_permissions(&disk, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = common::run(&["info", s(&disk)]);
    assert!(o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("readable by other users") && e.contains("chmod 600"),
        "{e}"
    );
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn serve_snapshots_on_usr1_ignores_usr2_and_alrm_and_stops_cleanly_on_hup() {
    let dir = tempfile::tempdir().unwrap();
    let disk = common::new_disk(dir.path(), 4 << 20);
    let sock = dir.path().join("s.sock");
    let mut child = common::bin()
        .args(["serve", s(&disk), "--socket", s(&sock)])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = child.id();
    kill(pid, "-USR1");
    // The snapshot is recorded in the .swap file's root: wait for it to name one kept.
    let t = Instant::now();
    loop {
        let o = common::run(&["info", "--json", s(&disk)]);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        if v["snapshots"].as_array().is_some_and(|a| a.len() == 1) {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no snapshot after SIGUSR1"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for sig in ["-USR2", "-ALRM"] {
        kill(pid, sig);
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "serve died on USR2/ALRM"
    );
    kill(pid, "-HUP");
    let st = child.wait().unwrap();
    assert!(st.success(), "serve exited with {st}");
    assert!(!sock.exists(), "the socket file was left behind");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("snapshot"), "{err}");
}
