//! A full disk loses nothing: on a small tmpfs, writes go on until the log or a chunk
//! cannot be written; the writer gets ENOSPC (never a panic, never a success that was
//! not stored); after the filesystem grows, every flushed write reads back exactly,
//! the disk reopens, keeps working and passes fsck. Needs root (to mount the tmpfs);
//! skips loudly without it, never under CI=true.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::process::Command;

use mindcastle::{OpenOptions, Volume};

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false)
}

struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Self {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        Self(dir.to_path_buf())
    }
    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn capable() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("the full-disk test needs root (to mount a tmpfs) under CI=true");
    }
    eprintln!("SKIPPING full-disk test: needs root to mount a small tmpfs");
    false
}

fn fill_until_full(opts: &OpenOptions) {
    let tmp = tempfile::tempdir().unwrap();
    let fs = Tmpfs::mount(tmp.path(), "24m");
    let swap = tmp.path().join("full.swap");
    Volume::create(&swap, 256 << 20).unwrap().close().unwrap();
    let vol = Volume::open(&swap, opts).unwrap();
    let piece = 1 << 20;
    let mut model = vec![0u8; 256 << 20];
    let mut flushed = 0usize;
    let mut err = None;
    for i in 0..200usize {
        let data = common::noise(i as u64, piece);
        let r = vol
            .write_at((i * piece) as u64, &data)
            .and_then(|()| vol.flush());
        match r {
            Ok(()) => {
                model[i * piece..(i + 1) * piece].copy_from_slice(&data);
                flushed = i + 1;
            }
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("24 MiB of tmpfs never filled");
    assert!(e.is_no_space(), "expected ENOSPC, got: {e}");
    assert!(flushed >= 4, "only {flushed} MiB fit");
    // What was acknowledged reads back while the disk is still full.
    let mut got = vec![0u8; flushed * piece];
    vol.read_at(0, &mut got).unwrap();
    assert!(
        got == model[..flushed * piece],
        "flushed data differs while full"
    );

    // Space comes back while the disk is open: writes and flushes work again, and
    // what they store must survive a crash (no half-written op left in the log to end
    // the replay early).
    fs.grow("512m");
    let at = (flushed + 1) * piece;
    let more = common::noise(999, piece);
    vol.write_at(at as u64, &more).unwrap();
    vol.flush().unwrap();
    model[at..at + piece].copy_from_slice(&more);
    drop(vol); // no close: as if killed after the flush

    let vol = Volume::open(&swap, &OpenOptions::default()).unwrap();
    let mut got = vec![0u8; at + piece];
    vol.read_at(0, &mut got).unwrap();
    assert!(
        got[..flushed * piece] == model[..flushed * piece],
        "flushed data lost after the disk filled"
    );
    assert!(
        got[at..] == model[at..at + piece],
        "a write flushed after space came back was lost"
    );
    let report = vol.fsck(&|_| {}).unwrap();
    assert!(report.problems.is_empty(), "fsck: {:?}", report.problems);
    vol.close().unwrap();
}

#[test]
fn full_log_loses_nothing_flushed() {
    if !capable() {
        return;
    }
    // Default sizes: the log fills the tmpfs long before a checkpoint.
    fill_until_full(&OpenOptions::default());
}

#[test]
fn full_disk_during_checkpoints_loses_nothing_flushed() {
    if !capable() {
        return;
    }
    // Small memtable: checkpoints write chunks all the time, so one of them hits ENOSPC.
    fill_until_full(&common::small());
}
