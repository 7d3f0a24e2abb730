//! A process killed (SIGKILL) during `snapshot`, `reset`, `clone`, `forget` or `gc`
//! leaves a disk that opens, passes fsck, and holds every flushed write (or, for
//! reset, exactly the snapshot's state); a killed clone leaves either no clone or a
//! whole one.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use mindcastle::{OpenOptions, Volume};

const SIZE: u64 = 16 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image(path: &Path) -> Vec<u8> {
    let v = Volume::open(path, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; SIZE as usize];
    v.read_at(0, &mut buf).unwrap();
    v.close().unwrap();
    buf
}

/// A disk with snapshot "a" (4 MiB of data), then 2 MiB more written and flushed but
/// left in the log (the writer "crashed"); returns it, the image at "a" and the image
/// with every flushed write.
fn setup(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let swap = dir.join("d.swap");
    let v = Volume::create(&swap, SIZE).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let a = common::noise(1, 4 << 20);
    v.write_at(0, &a).unwrap();
    model[..4 << 20].copy_from_slice(&a);
    v.snapshot_labeled("a", "").unwrap();
    let at_a = model.clone();
    let b = common::noise(2, 2 << 20);
    v.write_at(3 << 20, &b).unwrap();
    model[3 << 20..5 << 20].copy_from_slice(&b);
    v.flush().unwrap();
    drop(v); // no close: the last writes are only in the log
    (swap, at_a, model)
}

fn fsck_clean(swap: &Path) {
    let o = common::run(&["fsck", "--json", s(swap)]);
    assert!(
        o.status.success(),
        "fsck {}: {} {}",
        swap.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn run_and_kill(args: &[&str], after: Duration) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mindcastle"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    let _ = c.kill();
    let _ = c.wait();
}

const DELAYS_MS: [u64; 7] = [0, 2, 5, 10, 20, 40, 400];

#[test]
fn killed_snapshot_forget_and_gc_keep_every_flushed_write() {
    for op in ["snapshot", "forget", "gc"] {
        for ms in DELAYS_MS {
            let dir = tempfile::tempdir().unwrap();
            let (swap, _, model) = setup(dir.path());
            let args: Vec<&str> = match op {
                "snapshot" => vec!["snapshot", "--name", "x", s(&swap)],
                "forget" => vec!["forget", s(&swap), "a"],
                _ => vec!["gc", s(&swap)],
            };
            run_and_kill(&args, Duration::from_millis(ms));
            fsck_clean(&swap);
            assert!(image(&swap) == model, "{op} killed after {ms} ms lost data");
            fsck_clean(&swap);
        }
    }
}

#[test]
fn killed_reset_leaves_the_old_state_or_the_snapshot() {
    for ms in DELAYS_MS {
        let dir = tempfile::tempdir().unwrap();
        let (swap, at_a, model) = setup(dir.path());
        run_and_kill(&["reset", s(&swap), "a"], Duration::from_millis(ms));
        fsck_clean(&swap);
        let img = image(&swap);
        assert!(
            img == model || img == at_a,
            "reset killed after {ms} ms left a third state"
        );
        if img == at_a {
            // Reset happened: the state it left is a snapshot that reads as the model.
            let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
            let log = v.log().unwrap();
            v.close().unwrap();
            let saved = &log[0];
            assert!(saved.message.contains("before reset"), "{log:?}");
            let sv = Volume::open(
                &swap,
                &OpenOptions {
                    read_only: true,
                    snapshot: Some(
                        mindcastle::format::chunk_id::ChunkId::from_hex(&saved.id).unwrap(),
                    ),
                    ..Default::default()
                },
            )
            .unwrap();
            let mut buf = vec![0u8; SIZE as usize];
            sv.read_at(0, &mut buf).unwrap();
            assert!(buf == model, "the saved state lost data");
        }
    }
}

#[test]
fn killed_clone_leaves_no_clone_or_a_whole_one() {
    for ms in DELAYS_MS {
        let dir = tempfile::tempdir().unwrap();
        let (swap, at_a, model) = setup(dir.path());
        // A clone reads the disk, so the writer's log is checkpointed first.
        Volume::open(&swap, &OpenOptions::default())
            .unwrap()
            .close()
            .unwrap();
        let clone = dir.path().join("c.swap");
        run_and_kill(
            &["clone", &format!("{}@a", s(&swap)), s(&clone)],
            Duration::from_millis(ms),
        );
        fsck_clean(&swap);
        assert!(
            image(&swap) == model,
            "clone killed after {ms} ms changed the source"
        );
        if clone.exists() {
            fsck_clean(&clone);
            assert!(image(&clone) == at_a, "a clone that exists is whole");
        }
    }
}
