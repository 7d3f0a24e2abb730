//! Where features meet: a pushed copy beside its source, a clone of a disk with writes
//! still in its log, `snapshot` of a disk that cannot open, `apply` of a damaged stream,
//! acknowledged writes across a `kill -9` of `serve`, and two disks sharing one cache
//! folder. Each of these lost data, killed the wrong process or broke a bound before
//! 2026-12-02 (issue 22, points 1-3, 8, 11 and 12).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::nbd::Nbd;
use common::server::Server;
use mindcastle::{OpenOptions, Volume};

const SIZE: u64 = 8 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The disk's bytes as `mindcastle export` gives them (the CLI, as a user runs it).
fn export(swap: &Path) -> Vec<u8> {
    let o = common::run(&["export", s(swap), "-"]);
    assert!(
        o.status.success(),
        "export {}: {}",
        swap.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn fsck_clean(swap: &Path) {
    let o = common::run(&["fsck", s(swap)]);
    assert!(
        o.status.success(),
        "fsck {}: {}{}",
        swap.display(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A disk with 2 MiB written and checkpointed; returns it and its image.
fn disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    let swap = dir.join("d.swap");
    let v = Volume::create(&swap, SIZE).unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let a = common::noise(1, 2 << 20);
    v.write_at(0, &a).unwrap();
    model[..a.len()].copy_from_slice(&a);
    v.close().unwrap();
    (swap, model)
}

/// Writes 300 4 KiB blocks through `serve` and flushes; returns the expected image.
fn write_through_serve(dir: &Path, swap: &Path, mut model: Vec<u8>, seed: u64) -> Vec<u8> {
    let srv = Server::start(dir, swap, &[]);
    let mut c = Nbd::connect(&srv.socket);
    for i in 0..300u64 {
        let off = (i * 7919 % (SIZE / 4096)) * 4096;
        let b = common::noise(seed + i, 4096);
        c.write(off, &b);
        model[off as usize..off as usize + 4096].copy_from_slice(&b);
    }
    c.flush();
    drop(c);
    srv.stop();
    model
}

#[test]
fn a_copy_pushed_beside_its_source_writes_without_touching_it() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, model) = disk(dir.path());
    let dest = dir.path().join("pub");
    let remote = dir.path().join("remote.swap");
    let o = common::run(&["push", s(&swap), s(&dest), "--swap-out", s(&remote)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let src = mindcastle::volume::read_swap(&swap).unwrap();
    let copy = mindcastle::volume::read_swap(&remote).unwrap();
    assert_ne!(
        src.uuid, copy.uuid,
        "--swap-out must make a disk of its own"
    );
    assert_eq!(src.snapshot, copy.snapshot);

    let remote_model = write_through_serve(dir.path(), &remote, model.clone(), 100);
    assert!(export(&swap) == model, "the source changed");
    assert!(export(&remote) == remote_model, "the copy lost its writes");
    fsck_clean(&swap);
    fsck_clean(&remote);
    // The source goes on being written too, and neither sees the other's writes.
    let src_model = write_through_serve(dir.path(), &swap, model, 500);
    assert!(export(&swap) == src_model);
    assert!(export(&remote) == remote_model);
}

#[test]
fn a_second_disk_naming_a_data_folder_cannot_write_it() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, model) = disk(dir.path());
    let src = mindcastle::volume::read_swap(&swap).unwrap();
    let folder = mindcastle::volume::data_dir(&swap, &src);
    // Another disk (its own uuid) whose swapdata= names d.swap's folder.
    let mut other = src.clone();
    other.uuid = "00000000-0000-4000-8000-000000000001".into();
    other.swapdata = Some(folder.file_name().unwrap().to_string_lossy().into_owned());
    let intruder = dir.path().join("other.swap");
    mindcastle::volume::create_swap(&intruder, &other).unwrap();
    let o = common::run(&["snapshot", s(&intruder)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("belongs to disk {}", src.uuid)),
        "{err}"
    );
    // Reading it is fine; the owner still opens and holds its data.
    let o = common::run(&["export", s(&intruder), "-"]);
    assert!(o.status.success() && o.stdout == model);
    assert!(export(&swap) == model);
    assert_eq!(
        std::fs::read_to_string(folder.join("owner"))
            .unwrap()
            .trim(),
        src.uuid
    );
}

/// A disk whose last writes were flushed but are only in the log (its writer was
/// killed); returns it and the image with every flushed write.
fn crashed_disk(dir: &Path) -> (PathBuf, Vec<u8>) {
    let (swap, mut model) = disk(dir);
    let srv = Server::start(dir, &swap, &[]);
    let mut c = Nbd::connect(&srv.socket);
    for i in 0..100u64 {
        let off = (1024 + i * 3) * 4096;
        let b = common::noise(900 + i, 4096);
        c.write(off, &b);
        model[off as usize..off as usize + 4096].copy_from_slice(&b);
    }
    c.flush();
    drop(c);
    drop(srv); // SIGKILL: the writes are in the log, not in a root
    (swap, model)
}

#[test]
fn a_clone_of_the_head_holds_the_writes_still_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, model) = crashed_disk(dir.path());
    let clone = dir.path().join("c.swap");
    let o = common::run(&["clone", s(&swap), s(&clone)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(export(&clone) == model, "the clone lost the logged writes");
    assert!(export(&swap) == model);
    fsck_clean(&clone);
}

#[test]
fn a_clone_of_a_held_head_is_refused_and_of_its_snapshot_works() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, model) = disk(dir.path());
    let o = common::run(&["snapshot", "--name", "base", s(&swap)]);
    assert!(o.status.success());
    let held = Volume::open(&swap, &OpenOptions::default()).unwrap();
    held.write_at(0, &[7u8; 4096]).unwrap();
    held.flush().unwrap();
    let clone = dir.path().join("c.swap");
    let o = common::run(&["clone", s(&swap), s(&clone)]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("clone a snapshot"), "{err}");
    assert!(!clone.exists());
    let o = common::run(&["clone", &format!("{}@base", s(&swap)), s(&clone)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    held.close().unwrap();
    assert!(export(&clone) == model);
}

/// `push` of a served disk is refused (it checkpoints first), naming a route that
/// publishes the disk's state without stopping the server; the route, followed while
/// the server goes on writing and checkpointing, publishes exactly the snapshot's bytes.
#[test]
fn a_served_disk_is_published_by_the_route_its_push_refusal_names() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, mut model) = disk(dir.path());
    // A small memtable: the server checkpoints (and collects) every few writes.
    let srv = Server::start_with_env(
        dir.path(),
        &swap,
        &[],
        &[("MINDCASTLE_MEMTABLE_ENTRIES", "64")],
    );
    let mut c = Nbd::connect(&srv.socket);
    let write = |c: &mut Nbd, model: &mut Vec<u8>, seed: u64| {
        for i in 0..200u64 {
            let off = ((seed + i) * 7919 % (SIZE / 4096)) * 4096;
            let b = common::noise(seed * 1000 + i, 4096);
            c.write(off, &b);
            model[off as usize..off as usize + 4096].copy_from_slice(&b);
        }
        c.flush();
    };
    write(&mut c, &mut model, 1);
    let dest = dir.path().join("pub");
    let o = common::run(&["push", s(&swap), s(&dest)]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("in use by process"), "{err}");
    assert!(err.contains("mindcastle clone"), "{err}");
    assert!(!dest.exists(), "a refused push made its destination");
    // To a ref, a clone is no route (its versions would not follow this disk's).
    let o = common::run(&["push", "--ref", "main", s(&swap), s(&dest)]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("stop it") && !err.contains("mindcastle clone"),
        "{err}"
    );
    assert!(!dest.exists(), "a refused push --ref made its destination");
    // The route: a snapshot the server takes, a clone of it, the clone pushed.
    let o = common::run(&["snapshot", "--name", "release", s(&swap)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let at_snapshot = model.clone();
    write(&mut c, &mut model, 2);
    let copy = dir.path().join("copy.swap");
    let o = common::run(&["clone", &format!("{}@release", s(&swap)), s(&copy)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    write(&mut c, &mut model, 3);
    let remote = dir.path().join("remote.swap");
    let o = common::run(&["push", s(&copy), s(&dest), "--swap-out", s(&remote)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    write(&mut c, &mut model, 4);
    drop(c);
    srv.stop();
    assert!(export(&remote) == at_snapshot, "the published copy");
    assert!(export(&copy) == at_snapshot, "the clone");
    assert!(export(&swap) == model, "the source");
    fsck_clean(&remote);
    fsck_clean(&swap);
}

#[test]
fn snapshot_of_a_disk_whose_remote_is_down_fails_without_signalling() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, _) = disk(dir.path());
    let dest = dir.path().join("pub");
    // In another folder: the copy has no chunks of its own.
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    let remote = dir.path().join("elsewhere/r.swap");
    let o = common::run(&["push", s(&swap), s(&dest), "--swap-out", s(&remote)]);
    assert!(o.status.success());
    // Point the copy at a port where nothing listens.
    let port = common::web::free_port();
    let text = std::fs::read_to_string(&remote).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("fallback=") {
                format!("fallback=http://127.0.0.1:{port}/pub")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&remote, text + "\n").unwrap();
    let o = common::bin()
        .args(["snapshot", s(&remote)])
        .env("MINDCASTLE_REMOTE_TIMEOUT", "2s")
        .output()
        .unwrap();
    // Before: SIGUSR1 to itself (killed by the signal, no exit code).
    assert!(o.status.code().is_some(), "killed by a signal: {o:?}");
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

/// Every stream `apply` refuses leaves the target byte for byte as it was.
#[test]
fn apply_of_a_damaged_stream_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, _) = disk(dir.path());
    let o = common::run(&["snapshot", "--name", "a", s(&swap)]);
    assert!(o.status.success());
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    for i in 0..40u64 {
        v.write_at(i * 65536 + 512, &common::noise(40 + i, 3000))
            .unwrap();
    }
    v.close().unwrap();
    let delta = dir.path().join("up.delta");
    let o = common::run(&[
        "export",
        "--changed-since",
        "a",
        "--format",
        "stream",
        s(&swap),
        s(&delta),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let good = std::fs::read(&delta).unwrap();
    let base_img = dir.path().join("base.img");
    let o = common::run(&["export", "--snapshot", "a", s(&swap), s(&base_img)]);
    assert!(o.status.success());
    let base = std::fs::read(&base_img).unwrap();
    let target_swap = dir.path().join("t.swap");
    let o = common::run(&["clone", &format!("{}@a", s(&swap)), s(&target_swap)]);
    assert!(o.status.success());
    let bad_streams: Vec<Vec<u8>> = [good.len() / 2, good.len() - 3, 200, good.len() - 30]
        .iter()
        .map(|&cut| good[..cut].to_vec())
        .chain(
            [100usize, good.len() / 3, good.len() - 10]
                .iter()
                .map(|&at| {
                    let mut b = good.clone();
                    b[at] ^= 0x10;
                    b
                }),
        )
        .collect();
    for (i, bad) in bad_streams.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.delta"));
        std::fs::write(&p, bad).unwrap();
        for target in [&base_img, &target_swap] {
            let o = common::run(&["apply", s(&p), s(target)]);
            assert!(!o.status.success(), "stream {i} applied to {target:?}");
            assert!(
                std::fs::read(&base_img).unwrap() == base,
                "stream {i} changed the image"
            );
            assert!(export(&target_swap) == base, "stream {i} changed the disk");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains("nothing was written"), "{err}");
        }
    }
    // Standard input too, and the good stream still applies.
    let o = common::bin()
        .args(["apply", "-", s(&base_img)])
        .stdin(std::fs::File::open(dir.path().join("bad0.delta")).unwrap())
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(std::fs::read(&base_img).unwrap() == base);
    let o = common::run(&["apply", s(&delta), s(&base_img)]);
    assert!(o.status.success());
    assert!(std::fs::read(&base_img).unwrap() == export(&swap));
}

/// Writes the server acknowledged, without a flush, survive `kill -9` of `serve`: each
/// is in the kernel's hands (written to the log file) before its reply.
#[test]
fn acknowledged_writes_survive_kill_9_of_serve_without_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, mut model) = disk(dir.path());
    let srv = Server::start(dir.path(), &swap, &[]);
    let mut c = Nbd::connect(&srv.socket);
    // Sub-block writes too: read-modify-write of a block. First: the last writes
    // before the kill are whole-block ones, which the server hands to the kernel as a
    // batch before their replies (a sub-block write hands off everything before it).
    c.write(4096 * 3 + 100, &[9u8; 300]);
    model[4096 * 3 + 100..4096 * 3 + 400].fill(9);
    for i in 0..1126u64 {
        let off = (i * 104_729 % (SIZE / 4096)) * 4096;
        let b = common::noise(7000 + i, 4096);
        c.write(off, &b);
        model[off as usize..off as usize + 4096].copy_from_slice(&b);
    }
    // SIGKILL while the client is still connected: a disconnect first would let the
    // server flush at its end of the connection.
    drop(srv);
    drop(c);
    let got = export(&swap);
    let lost = (0..SIZE as usize / 4096)
        .filter(|b| got[b * 4096..(b + 1) * 4096] != model[b * 4096..(b + 1) * 4096])
        .count();
    assert_eq!(lost, 0, "{lost} acknowledged blocks lost");
    fsck_clean(&swap);
}

/// A chunk torn at a folder destination (a power cut during an earlier push) is found
/// by the next push and copied again, never taken as there.
#[test]
fn a_push_resumed_over_a_torn_chunk_copies_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, model) = disk(dir.path());
    let dest = dir.path().join("pub");
    let o = common::run(&["push", s(&swap), s(&dest)]);
    assert!(o.status.success());
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dest)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let torn = files.last().unwrap().clone();
    let len = std::fs::metadata(&torn).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&torn)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let o = common::run(&["push", "--json", s(&swap), s(&dest)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let t: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(t["copied"], 1, "{t}");
    assert_eq!(std::fs::metadata(&torn).unwrap().len(), len);
    // Every file at the destination hashes to its name, and a copy reads it whole.
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let id = mindcastle::format::chunk_id::ChunkId::of(&bytes);
        assert_eq!(f.file_name().unwrap().to_string_lossy(), id.file_name());
    }
    let remote = dir.path().join("r.swap");
    let o = common::run(&["push", s(&swap), s(&dest), "--swap-out", s(&remote)]);
    assert!(o.status.success());
    assert!(export(&remote) == model);
}

/// Lines added to a `.swap` while its disk is open survive the next checkpoint, which
/// only moves the root (issue 22, point 8; before, the checkpoint rewrote the file as
/// it was at open).
#[test]
fn edits_to_an_open_disks_swap_file_survive_its_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, mut model) = disk(dir.path());
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    let mut text = std::fs::read_to_string(&swap).unwrap();
    text.push_str("label=build host 7\n");
    std::fs::write(&swap, &text).unwrap();
    v.write_at(4096, &[3u8; 4096]).unwrap();
    model[4096..8192].fill(3);
    let root = v.checkpoint().unwrap().unwrap();
    let after = std::fs::read_to_string(&swap).unwrap();
    assert!(after.contains("label=build host 7"), "{after}");
    let parsed = mindcastle::volume::read_swap(&swap).unwrap();
    assert_eq!(parsed.snapshot.map(|r| r.id), Some(root.id));
    v.close().unwrap();
    assert!(std::fs::read_to_string(&swap)
        .unwrap()
        .contains("label=build host 7"));
    assert!(export(&swap) == model);
}

/// A log segment put back from an older copy of the data folder (or a sealed segment
/// whose delete was lost) holds writes the root already has and later writes replaced:
/// it is skipped by its number, never replayed over the newer state (issue 22, point 5;
/// before, any older base was accepted and the stale writes came back).
#[test]
fn a_stale_log_segment_put_back_is_not_replayed_over_newer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, mut model) = disk(dir.path());
    let wal = {
        let sw = mindcastle::volume::read_swap(&swap).unwrap();
        mindcastle::volume::data_dir(&swap, &sw).join("wal")
    };
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.write_at(0, &[0xAA; 8192]).unwrap();
    v.flush().unwrap();
    drop(v); // crashed: the write is only in the log
    let backup = dir.path().join("wal.backup");
    std::fs::copy(&wal, &backup).unwrap();
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.write_at(4096, &[0xBB; 4096]).unwrap();
    model[..4096].fill(0xAA);
    model[4096..8192].fill(0xBB);
    v.close().unwrap();
    assert!(export(&swap) == model);
    std::fs::copy(&backup, &wal).unwrap(); // the old log comes back
    assert!(
        export(&swap) == model,
        "a read-only open replayed the stale log"
    );
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.close().unwrap();
    assert!(export(&swap) == model, "the stale log was replayed");
    fsck_clean(&swap);
}

/// A zero of blocks already zero changes no block, but it is still a logged op; a
/// checkpoint must cover it, or a later `reset` to a snapshot where those blocks hold
/// data gets them zeroed when the log is replayed (found by the CLI model, seed 254405;
/// the same on c21fe3c).
#[test]
fn a_logged_zero_of_zero_blocks_is_not_replayed_over_a_reset() {
    let dir = tempfile::tempdir().unwrap();
    let (swap, _) = disk(dir.path());
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.write_at(40960, &[5u8; 4096]).unwrap();
    v.snapshot_labeled("s", "").unwrap();
    let at_s = {
        let mut b = vec![0u8; SIZE as usize];
        v.read_at(0, &mut b).unwrap();
        b
    };
    v.write_zeroes(40960, 4096).unwrap();
    v.close().unwrap();
    // Zero it again: nothing changes, but the op is in the log.
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.write_zeroes(40960, 4096).unwrap();
    v.flush().unwrap();
    v.close().unwrap();
    let o = common::run(&["reset", s(&swap), "s"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(export(&swap) == at_s, "the zero came back over the reset");
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.close().unwrap();
    assert!(export(&swap) == at_s, "the zero came back at the next open");
}

#[test]
fn two_disks_reading_through_one_cache_folder_read_right_and_share_its_bound() {
    // Two published disks of different data, each read through a copy (its own uuid)
    // that names one cache folder with a bound below what they read; their `export`s
    // run at once (two processes sharing the folder), twice.
    let dir = tempfile::tempdir().unwrap();
    let size: u64 = 64 << 20;
    let dest = dir.path().join("pub");
    let cache = dir.path().join("shared-cache");
    let bound: u64 = 16 << 20;
    let mut copies = Vec::new();
    for n in 0..2u64 {
        let swap = dir.path().join(format!("d{n}.swap"));
        let v = Volume::create(&swap, size).unwrap();
        let image = common::noise(70 + n, size as usize);
        v.write_at(0, &image).unwrap();
        v.close().unwrap();
        let out = dir.path().join(format!("r{n}.swap"));
        let o = common::run(&["push", s(&swap), s(&dest), "--swap-out", s(&out)]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let mut text = std::fs::read_to_string(&out).unwrap();
        text.push_str(&format!("cache={}\ncachesize={bound}\n", s(&cache)));
        std::fs::write(&out, text).unwrap();
        copies.push((out, image));
    }
    for round in 0..2 {
        let running: Vec<_> = copies
            .iter()
            .map(|(c, _)| {
                common::bin()
                    .args(["export", s(c), "-"])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for (child, (_, image)) in running.into_iter().zip(&copies) {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            assert!(o.stdout == *image, "round {round}: an export differs");
        }
    }
    // The bound holds for the folder, whoever filled it: each process may be over by
    // the chunk it just kept until it evicts. (Each counting only its own: 2 bounds.)
    let files: Vec<u64> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    let (total, largest) = (
        files.iter().sum::<u64>(),
        files.iter().max().copied().unwrap_or(0),
    );
    eprintln!(
        "cache folder: {} files, {total} bytes, largest {largest}",
        files.len()
    );
    assert!(
        total <= bound + 2 * largest,
        "cache folder holds {total} bytes, bound {bound}"
    );
    // No temporary file was left behind.
    assert!(std::fs::read_dir(&cache).unwrap().all(|e| !e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".tmp-")));
}

#[test]
fn a_reader_whose_writer_checkpoints_between_its_root_and_log_reads_sees_every_write() {
    // A reader without the lock (`info`, `export` beside `serve`) reads the root, then
    // the log. Here the writer checkpoints exactly between the two (and logs more):
    // the root read is stale and the log it pairs with starts after writes that root
    // lacks (segment 2 is gone). The reader must notice (the segment numbers show the
    // gap) and read again, never show the state {1, 4}.
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("d.swap");
    let w = std::sync::Arc::new(Volume::create(&swap, SIZE).unwrap());
    w.write_at(0, &[1; 4096]).unwrap();
    // A kept snapshot keeps the chunks of the root the reader reads from collection.
    w.snapshot().unwrap();
    w.write_at(4096, &[2; 4096]).unwrap();
    w.flush().unwrap();
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let hook = {
        let (w, runs) = (w.clone(), runs.clone());
        std::sync::Arc::new(move || {
            if runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                w.write_at(8192, &[3; 4096]).unwrap();
                w.checkpoint().unwrap();
                w.write_at(12288, &[4; 4096]).unwrap();
                w.flush().unwrap();
            }
        })
    };
    let opts = OpenOptions {
        read_only: true,
        no_lock: true,
        after_root_read: Some(hook),
        ..OpenOptions::default()
    };
    let r = Volume::open(&swap, &opts).unwrap();
    assert!(
        runs.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "the reader opened once: the checkpoint went unseen"
    );
    let mut got = vec![0u8; 4 * 4096];
    r.read_at(0, &mut got).unwrap();
    for (i, b) in got.chunks(4096).enumerate() {
        assert!(
            b.iter().all(|&x| x == i as u8 + 1),
            "block {i} reads {}",
            b[0]
        );
    }
}

/// Whether the data folder holds a deleted chunk's file waiting to be written over.
fn holds_recycled(swap: &Path) -> bool {
    let sw = mindcastle::volume::read_swap(swap).unwrap();
    let dir = swap.parent().unwrap().join(format!("swapdata-{}", sw.uuid));
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains("-free-"))
}

/// Recycling needs a filesystem with room to spare; CI's has it.
fn recycling_seen(seen: bool) {
    if !seen {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "no chunk file was recycled under CI=true (is the filesystem nearly full?)"
        );
        eprintln!(
            "NOTE: no chunk file was recycled here (little free space): the test ran without it"
        );
    }
}

#[test]
fn a_clone_keeps_its_chunks_while_its_source_recycles_dead_ones() {
    // `clone` links the source's chunk files; the source then overwrites everything,
    // so those chunks die there, and writes new chunks, which reuse dead chunks' files.
    // A linked file must never be one of them.
    let dir = tempfile::tempdir().unwrap();
    let (swap, model) = disk(dir.path());
    let clone = dir.path().join("c.swap");
    let o = common::run(&["clone", s(&swap), s(&clone)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    let mut src = model.clone();
    let mut seen = false;
    for round in 0..6u64 {
        let b = common::noise(1000 + round, 2 << 20);
        v.write_at(0, &b).unwrap();
        src[..b.len()].copy_from_slice(&b);
        v.checkpoint().unwrap();
        seen |= holds_recycled(&swap);
    }
    v.close().unwrap();
    recycling_seen(seen);
    assert!(export(&clone) == model, "the clone's data changed");
    assert!(export(&swap) == src, "the source lost its writes");
    fsck_clean(&clone);
    fsck_clean(&swap);
}

#[test]
fn reads_racing_checkpoints_that_recycle_chunks_read_a_written_version() {
    // A reader may hold a chunk's file open when the collector writes a new chunk over
    // it: it must read a version that was written (resolved again, never an error and
    // never other bytes), while the writer overwrites the same 2 MiB and checkpoints.
    const LEN: usize = 2 << 20;
    const ROUNDS: u64 = 24;
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("d.swap");
    let v = std::sync::Arc::new(Volume::create(&swap, SIZE).unwrap());
    let versions: Vec<Vec<u8>> = (0..ROUNDS).map(|r| common::noise(77 + r, LEN)).collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (v, done, versions) = (v.clone(), done.clone(), versions.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            let mut buf = vec![0u8; 256 << 10];
            while !done.load(std::sync::atomic::Ordering::SeqCst) || reads < 8 {
                let at = (reads as usize * buf.len()) % LEN;
                v.read_at(at as u64, &mut buf).unwrap_or_else(|e| {
                    panic!("read at {at} failed while chunks were recycled: {e}")
                });
                for (k, block) in buf.chunks(4096).enumerate() {
                    let off = at + k * 4096;
                    assert!(
                        block.iter().all(|&x| x == 0)
                            || versions.iter().any(|w| &w[off..off + 4096] == block),
                        "block at {off} reads bytes no write put there"
                    );
                }
                reads += 1;
            }
            reads
        })
    };
    let mut seen = false;
    for w in &versions {
        for part in (0..LEN).step_by(1 << 20) {
            v.write_at(part as u64, &w[part..part + (1 << 20)]).unwrap();
        }
        v.checkpoint().unwrap();
        seen |= holds_recycled(&swap);
    }
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let reads = reader.join().unwrap();
    assert!(reads >= 8);
    recycling_seen(seen);
    let mut got = vec![0u8; LEN];
    v.read_at(0, &mut got).unwrap();
    assert!(got == *versions.last().unwrap());
}
