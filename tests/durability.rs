//! The engine's durability holes, each closed: a `.swap` that lost its root is refused
//! and garbage collection deletes nothing; a FLUSH waiting on the disk stalls neither
//! readers nor writers; a failed chunk fsync never lets a root name unsynced bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mindcastle::store::fault::{FaultCounts, FaultPlan, FaultStore};
use mindcastle::store::ChunkStore;
use mindcastle::{ErrorKind, OpenOptions, Volume};

const SIZE: u64 = 8 << 20;

#[test]
fn a_swap_without_its_root_is_refused_and_no_chunk_is_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), SIZE);
    let vol = Volume::open(&path, &common::small()).unwrap();
    vol.write_at(0, &common::data(1, 6 << 20)).unwrap();
    vol.close().unwrap();
    let chunks = common::chunk_files(&path);
    // (How many depends on where the content-defined cuts fall under this disk's key.)
    assert!(chunks.len() > 2, "only {} chunks", chunks.len());
    let full = std::fs::read_to_string(&path).unwrap();
    let stripped: String = full
        .lines()
        .filter(|l| !l.starts_with("snapshot=") && !l.starts_with("snaphash="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, &stripped).unwrap();
    let err = Volume::open(&path, &OpenOptions::default()).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::Corrupt);
    assert!(err.to_string().contains("names no root"), "{err}");
    for args in [vec!["info"], vec!["export"]] {
        let mut a: Vec<&str> = args.clone();
        a.push(path.to_str().unwrap());
        if args[0] == "export" {
            a.push("-");
        }
        let out = common::run(&a);
        assert_eq!(out.status.code(), Some(3), "{a:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("names no root"));
    }
    assert_eq!(common::chunk_files(&path), chunks, "chunks were deleted");
    // The real .swap back: the disk is whole.
    std::fs::write(&path, &full).unwrap();
    let out = common::run(&["fsck", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let vol = Volume::open(&path, &OpenOptions::default()).unwrap();
    let mut back = vec![0u8; 6 << 20];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == common::data(1, 6 << 20));
}

/// A gate the log's fdatasync waits at until the test opens it.
#[derive(Default)]
struct Gate {
    entered: Mutex<u32>,
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait_open(&self) {
        *self.entered.lock().unwrap() += 1;
        self.cv.notify_all();
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.cv.wait(open).unwrap();
        }
    }
    fn wait_entered(&self) {
        let mut n = self.entered.lock().unwrap();
        while *n == 0 {
            n = self.cv.wait(n).unwrap();
        }
    }
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }
}

#[test]
fn a_flush_waiting_on_the_disk_stalls_neither_readers_nor_writers() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), SIZE);
    let gate = Arc::new(Gate::default());
    let hook_gate = gate.clone();
    let vol = Arc::new(
        Volume::open(
            &path,
            &OpenOptions {
                sync_hook: Some(Arc::new(move || hook_gate.wait_open())),
                ..OpenOptions::default()
            },
        )
        .unwrap(),
    );
    vol.write_at(0, &common::data(2, 65536)).unwrap();
    let flusher = {
        let vol = vol.clone();
        std::thread::spawn(move || vol.flush())
    };
    gate.wait_entered();
    // The flush now waits at the disk. A write and a read must both finish meanwhile
    // (the timeout only detects a stall; it measures nothing).
    let (tx, rx) = mpsc::channel();
    {
        let (vol, tx) = (vol.clone(), tx.clone());
        std::thread::spawn(move || {
            let r = vol.write_at(4096, &common::data(3, 8192));
            tx.send(("write", r.is_ok())).unwrap();
        });
    }
    {
        let vol = vol.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let r = vol.read_at(0, &mut buf);
            tx.send(("read", r.is_ok())).unwrap();
        });
    }
    let mut done = Vec::new();
    for _ in 0..2 {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((what, ok)) => {
                assert!(ok, "{what} failed");
                done.push(what);
            }
            Err(_) => {
                gate.release();
                panic!("stalled behind a flush waiting on the disk; finished: {done:?}");
            }
        }
    }
    assert!(!flusher.is_finished(), "the flush did not wait at the gate");
    gate.release();
    flusher.join().unwrap().unwrap();
    let mut want = common::data(2, 65536);
    want[4096..12288].copy_from_slice(&common::data(3, 8192));
    let mut back = vec![0u8; 65536];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == want);
}

fn faulty(plan: FaultPlan) -> (OpenOptions, Arc<Mutex<Option<Arc<FaultStore>>>>) {
    let slot: Arc<Mutex<Option<Arc<FaultStore>>>> = Arc::default();
    let s = slot.clone();
    let mut opts = common::small();
    opts.wrap_store = Some(Arc::new(move |inner: Arc<dyn ChunkStore>| {
        let f = Arc::new(FaultStore::new(inner, plan.clone()));
        *s.lock().unwrap() = Some(f.clone());
        f as Arc<dyn ChunkStore>
    }));
    (opts, slot)
}

/// Writes 1 MiB as 64 KiB writes (small enough for the log to hold their records: the
/// checkpoint makes their chunks) with the store's `fail_at`th sync failing: the
/// checkpoint fails, and so does a retry (it must not succeed on the strength of names
/// whose bytes were never synced), the `.swap` is as it was, and after a power cut
/// that drops unsynced chunks the reopened disk has every write and passes fsck.
/// Returns the store's fault counts as the first checkpoint failed.
fn checkpoint_with_a_failed_sync(fail_at: u64, seed: u64) -> FaultCounts {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), SIZE);
    let before = std::fs::read_to_string(&path).unwrap();
    let (mut opts, slot) = faulty(FaultPlan {
        fail_sync: Some(fail_at),
        ..FaultPlan::default()
    });
    // Room for every write: only the explicit checkpoints below sync.
    opts.tuning.memtable_entries = 4096;
    let vol = Volume::open(&path, &opts).unwrap();
    let faults = slot.lock().unwrap().clone().unwrap();
    assert_eq!(faults.counts().syncs, 0, "a sync before the checkpoint");
    let d = common::data(seed, 1 << 20);
    for (i, part) in d.chunks(64 << 10).enumerate() {
        vol.write_at((i as u64) << 16, part).unwrap();
    }
    vol.flush().unwrap();
    assert!(vol.checkpoint().is_err(), "the chunk sync failed");
    let counts = faults.counts();
    assert_eq!(counts.injected, 1);
    assert!(
        vol.checkpoint().is_err(),
        "a checkpoint after a failed sync succeeded"
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        before,
        ".swap changed"
    );
    // Power cut: unsynced chunks are gone. Reopened, the log still has every write.
    drop(vol);
    faults.crash().unwrap();
    let vol = Volume::open(&path, &common::small()).unwrap();
    let mut back = vec![0u8; 1 << 20];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == d);
    vol.close().unwrap();
    let out = common::run(&["fsck", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    counts
}

/// A checkpoint's first sync is the data chunks', run beside the merge.
#[test]
fn a_failed_chunk_fsync_never_lets_a_root_name_unsynced_chunks() {
    assert_eq!(checkpoint_with_a_failed_sync(1, 4).syncs, 0);
}

/// A checkpoint syncs its data chunks on a second thread while it merges, then the
/// index chunks and the root: when the first succeeds and the second fails, no root is
/// published either.
#[test]
fn a_failed_sync_after_the_merge_publishes_no_root_though_the_data_chunks_synced() {
    assert_eq!(
        checkpoint_with_a_failed_sync(2, 5).syncs,
        1,
        "the data chunks' sync beside the merge ran and succeeded"
    );
}

#[test]
fn a_large_writes_chunk_is_synced_by_the_flush_and_a_failed_sync_fails_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), SIZE);
    let (mut opts, slot) = faulty(FaultPlan {
        fail_sync: Some(2),
        ..FaultPlan::default()
    });
    // Room for both writes: only the flushes sync.
    opts.tuning.memtable_entries = 4096;
    let vol = Volume::open(&path, &opts).unwrap();
    let fault = slot.lock().unwrap().clone().unwrap();
    // A large write stores its chunk at once; the flush syncs it (the first sync).
    let a = common::data(5, 1 << 20);
    vol.write_at(0, &a).unwrap();
    assert_eq!(fault.counts().syncs, 0, "nothing synced before the flush");
    vol.flush().unwrap();
    assert_eq!(fault.counts().syncs, 1, "the flush synced the chunk");
    // The next large write's flush hits a failing sync: the flush reports it.
    let b = common::data(6, 1 << 20);
    vol.write_at(2 << 20, &b).unwrap();
    assert!(
        vol.flush().is_err(),
        "a flush whose chunk sync failed succeeded"
    );
    // Power cut: the unsynced chunk is gone. The log still names it; reopening drops
    // that write (no flush acknowledged it) and keeps the acknowledged one.
    drop(vol);
    fault.crash().unwrap();
    let vol = Volume::open(&path, &common::small()).unwrap();
    let mut back = vec![0u8; 1 << 20];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == a, "an acknowledged large write was lost");
    vol.read_at(2 << 20, &mut back).unwrap();
    assert!(
        back == b || back.iter().all(|&x| x == 0),
        "an unacknowledged write came back as neither itself nor the old contents"
    );
    vol.close().unwrap();
    let out = common::run(&["fsck", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

/// A shrink whose checkpoint fails (the store's sync) changes nothing: the open disk
/// has its old size back, the `.swap` is as it was, and reopened the disk has every
/// byte, past the size it was to shrink to included, and passes fsck.
#[test]
fn a_resize_whose_checkpoint_fails_leaves_the_disk_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), SIZE);
    let d = common::noise(11, SIZE as usize);
    let vol = Volume::open(&path, &common::small()).unwrap();
    vol.write_at(0, &d).unwrap();
    vol.close().unwrap();
    let before = std::fs::read_to_string(&path).unwrap();
    let (mut opts, _slot) = faulty(FaultPlan {
        fail_sync: Some(1),
        ..FaultPlan::default()
    });
    opts.resizing = true;
    let vol = Volume::open(&path, &opts).unwrap();
    let e = vol.resize(SIZE / 2).unwrap_err();
    assert!(e.to_string().contains("injected"), "{e}");
    assert_eq!(vol.size(), SIZE, "the old size is back");
    drop(vol);
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    let vol = Volume::open(&path, &common::small()).unwrap();
    assert_eq!(vol.size(), SIZE);
    let mut back = vec![0u8; SIZE as usize];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == d, "bytes lost in a failed resize");
    vol.close().unwrap();
    let out = common::run(&["fsck", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

/// A reset to a snapshot of another size whose checkpoints fail (the store's first,
/// second or third sync: the state-left snapshot's two roots, then the reset's own)
/// changes nothing but, at most, the kept state-left snapshot: the open disk keeps its
/// size and bytes, and so does the disk reopened. With no failure, the reset takes the
/// snapshot's size and bytes, and the state left (larger) is kept whole.
#[test]
fn a_reset_across_a_resize_whose_checkpoint_fails_leaves_the_disk_as_it_was() {
    let big = 2 * SIZE;
    for fail_at in 1..=4u64 {
        let dir = tempfile::tempdir().unwrap();
        let path = common::new_disk(dir.path(), SIZE);
        let small = common::noise(21, SIZE as usize);
        let vol = Volume::open(&path, &common::small()).unwrap();
        vol.write_at(0, &small).unwrap();
        let snap = vol.snapshot().unwrap();
        vol.resize(big).unwrap();
        let mut grown = small.clone();
        grown.resize(big as usize, 0);
        let tail = common::noise(22, SIZE as usize);
        grown[SIZE as usize..].copy_from_slice(&tail);
        vol.write_at(SIZE, &tail).unwrap();
        vol.close().unwrap();

        let (opts, _slot) = faulty(FaultPlan {
            fail_sync: Some(fail_at),
            ..FaultPlan::default()
        });
        let vol = Volume::open(&path, &opts).unwrap();
        let read_all = |v: &Volume| {
            let mut b = vec![0u8; v.size() as usize];
            v.read_at(0, &mut b).unwrap();
            b
        };
        match vol.reset_to(&snap) {
            Err(e) => {
                assert!(fail_at <= 3, "sync {fail_at}: {e}");
                assert!(e.to_string().contains("injected"), "{e}");
                assert_eq!(vol.size(), big, "sync {fail_at}: the size is back");
                assert!(read_all(&vol) == grown, "sync {fail_at}: bytes in memory");
                drop(vol);
                let vol = Volume::open(&path, &common::small()).unwrap();
                assert_eq!(vol.size(), big, "sync {fail_at}: reopened");
                assert!(read_all(&vol) == grown, "sync {fail_at}: bytes lost");
                vol.close().unwrap();
            }
            Ok(left) => {
                assert_eq!(fail_at, 4, "the reset makes three syncs");
                assert_eq!(vol.size(), SIZE);
                assert!(read_all(&vol) == small);
                vol.close().unwrap();
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(text.contains(&format!("size={SIZE}\n")), "{text}");
                let vol = Volume::open(&path, &common::small()).unwrap();
                assert!(read_all(&vol) == small, "the reset, reopened");
                vol.close().unwrap();
                let o = common::run(&[
                    "export",
                    "--snapshot",
                    &left.id.to_string(),
                    path.to_str().unwrap(),
                    "-",
                ]);
                assert!(o.status.success(), "{o:?}");
                assert!(o.stdout == grown, "the state left is kept whole");
            }
        }
        let out = common::run(&["fsck", path.to_str().unwrap()]);
        assert!(out.status.success(), "{out:?}");
    }
}

/// A checkpoint fails after sealing the log (its store sync), the process ends; the
/// next open joins the two log segments and replays them, and its own checkpoint fails
/// too. The open after that still finds its log whole (the join keeps the first
/// segment's number, so it follows the root), replays every write and passes fsck.
#[test]
fn a_log_joined_at_an_open_whose_checkpoint_failed_opens_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), SIZE);
    let d = common::noise(12, 256 << 10);
    // A root that holds a log segment, so the log's numbers must follow it.
    let vol = Volume::open(&path, &common::small()).unwrap();
    vol.write_at(SIZE - 4096, &d[..4096]).unwrap();
    vol.close().unwrap();
    let (opts, _slot) = faulty(FaultPlan {
        fail_sync: Some(1),
        ..FaultPlan::default()
    });
    let vol = Volume::open(&path, &opts).unwrap();
    vol.write_at(0, &d[..128 << 10]).unwrap();
    vol.flush().unwrap();
    assert!(vol.engine().unwrap().checkpoint().is_err());
    vol.write_at(128 << 10, &d[128 << 10..]).unwrap();
    vol.flush().unwrap();
    drop(vol);
    let data_dir = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.is_dir())
        .unwrap();
    assert!(data_dir.join("wal.old").exists(), "no sealed segment left");
    let (opts, _slot) = faulty(FaultPlan {
        fail_sync: Some(1),
        ..FaultPlan::default()
    });
    assert!(
        Volume::open(&path, &opts).is_err(),
        "the open's checkpoint failed"
    );
    let vol = Volume::open(&path, &common::small()).unwrap();
    let mut back = vec![0u8; d.len()];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == d, "writes lost");
    vol.close().unwrap();
    let out = common::run(&["fsck", path.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}
