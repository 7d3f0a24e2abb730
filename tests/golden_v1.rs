//! Format version 1 stays readable: `tests/fixtures/v1/` is a disk written by this
//! version (chunks, index nodes, a root keeping a snapshot, and a write-ahead log with
//! flushed writes never checkpointed). Every later build must open it, replay the log,
//! pass fsck, and read exactly the bytes the recipe below wrote, now and at the kept
//! snapshot. The fixture is never regenerated for a format change: a new format gets a
//! new fixture beside it and a reader for the old one.
//!
//! Regenerate (only when creating a fixture for a new version):
//! `MINDCASTLE_WRITE_GOLDEN=1 cargo test --release --test golden_v1 -- --ignored`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use mindcastle::format::chunk_id::ChunkId;
use mindcastle::{OpenOptions, Volume};

const SIZE: u64 = 8 << 20;

enum Op {
    Write(u64, Vec<u8>),
    Zero(u64, u64),
    Trim(u64, u64),
}

/// Up to the snapshot.
fn phase1() -> Vec<Op> {
    vec![
        Op::Write(0, common::data(1, 1 << 20)),
        Op::Write((1 << 20) + 100, common::data(2, 3000)),
        Op::Write((1 << 20) + 2000, common::data(3, 700)),
        Op::Zero(256 << 10, 64 << 10),
    ]
}

/// After the snapshot, checkpointed.
fn phase2() -> Vec<Op> {
    vec![
        Op::Write(4 << 20, common::data(4, 512 << 10)),
        Op::Trim(8 << 10, 4 << 10),
        Op::Write(3, common::data(5, 10)),
    ]
}

/// After the last checkpoint, only in the log (flushed).
fn phase3() -> Vec<Op> {
    vec![
        Op::Write(6 << 20, common::data(6, 8192)),
        Op::Write((6 << 20) + 4000, common::data(7, 200)),
    ]
}

fn apply_model(img: &mut [u8], ops: &[Op]) {
    for op in ops {
        match op {
            Op::Write(o, d) => img[*o as usize..*o as usize + d.len()].copy_from_slice(d),
            Op::Zero(o, n) | Op::Trim(o, n) => img[*o as usize..(*o + *n) as usize].fill(0),
        }
    }
}

fn apply_volume(v: &Volume, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Write(o, d) => v.write_at(*o, d).unwrap(),
            Op::Zero(o, n) => v.write_zeroes(*o, *n).unwrap(),
            Op::Trim(o, n) => v.trim(*o, *n).unwrap(),
        }
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

fn read_all(v: &Volume) -> Vec<u8> {
    let mut buf = vec![0u8; v.size() as usize];
    v.read_at(0, &mut buf).unwrap();
    buf
}

#[test]
fn version_1_fixture_reads_back_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    copy_dir(&fixture(), tmp.path());
    let swap = tmp.path().join("disk.swap");
    let snap_hex = std::fs::read_to_string(tmp.path().join("SNAPSHOT")).unwrap();
    let snap = ChunkId::from_hex(snap_hex.trim()).unwrap();

    let mut at_snapshot = vec![0u8; SIZE as usize];
    apply_model(&mut at_snapshot, &phase1());
    let mut now = at_snapshot.clone();
    apply_model(&mut now, &phase2());
    apply_model(&mut now, &phase3());

    // Read-only first: the log is replayed in memory, nothing on disk changes.
    let ro = Volume::open(
        &swap,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        read_all(&ro) == now,
        "current state differs (read-only open)"
    );
    drop(ro);

    let old = Volume::open(
        &swap,
        &OpenOptions {
            snapshot: Some(snap),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(read_all(&old) == at_snapshot, "kept snapshot differs");
    drop(old);

    // Writable: replays the log into a new checkpoint; fsck then finds nothing wrong.
    let rw = Volume::open(&swap, &OpenOptions::default()).unwrap();
    assert!(read_all(&rw) == now, "current state differs after replay");
    let report = rw.fsck(&|_| {}).unwrap();
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    rw.close().unwrap();

    let out = common::run(&["fsck", swap.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "writes tests/fixtures/v1; run only to create a fixture for a new version"]
fn write_version_1_fixture() {
    if std::env::var("MINDCASTLE_WRITE_GOLDEN").as_deref() != Ok("1") {
        return;
    }
    let dir = fixture();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let swap = dir.join("disk.swap");
    let v = Volume::create(&swap, SIZE).unwrap();
    apply_volume(&v, &phase1());
    let snap = v.snapshot().unwrap();
    std::fs::write(dir.join("SNAPSHOT"), format!("{}\n", snap.id.to_hex())).unwrap();
    apply_volume(&v, &phase2());
    v.checkpoint().unwrap();
    apply_volume(&v, &phase3());
    v.flush().unwrap();
    // Dropped without close: phase 3 stays in the log only.
    drop(v);
    let _ = std::fs::remove_file(dir.join(".tmp-lock"));
}
