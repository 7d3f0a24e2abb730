//! The write-ahead log: append, sync on FLUSH/FUA (fdatasync) with group commit, replay
//! at open. Byte layout in `format::wal`.
//!
//! Appends take a short mutex and buffer; the engine hands the buffer to the kernel
//! (one write(2), no fsync) at the end of each write call, before it is acknowledged,
//! so a killed process loses no acknowledged write. A sync never
//! holds that mutex while it waits for the disk: it notes the log position it needs,
//! takes the sync lock, and returns at once when another sync has already made that
//! position durable (so concurrent FLUSHes share one fdatasync); otherwise it writes
//! out the buffer, takes handles to the files, and fdatasyncs them with no lock but the
//! sync lock held. Writers and readers of the disk never wait for the disk.
//!
//! Two segments at most: `wal`, where appends go, and `wal.old`, the segment sealed when
//! the memtable was frozen, deleted once a checkpoint covers it. Replay reads `wal.old`
//! then `wal`; ops replay idempotently in order, so a crash anywhere in a rotation or
//! before the delete loses nothing and applies nothing twice in a harmful order.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{Error, ErrorKind, Result};
use crate::format::wal::{
    decode_header, decode_ops, encode_data, encode_header, encode_op, header_len,
    is_current_version, LogBase, LogEnd, WalOp, HEADER_LEN,
};

/// Buffered bytes written to the file once they exceed this.
const BUF_LIMIT: usize = 1 << 20;

/// Called before every fdatasync of the log (tests hold a sync there).
pub type SyncHook = Arc<dyn Fn() + Send + Sync>;

/// An open log.
pub struct Wal {
    inner: Mutex<Inner>,
    /// Serialises fdatasyncs (not appends).
    sync_lock: Mutex<()>,
    /// Log position (bytes ever appended, over every segment) known durable.
    synced: AtomicU64,
    hook: Option<SyncHook>,
}

struct Inner {
    file: Arc<File>,
    path: PathBuf,
    buf: Vec<u8>,
    /// Bytes in the current segment's file.
    len: u64,
    /// Bytes ever written out, over every segment (the position syncs wait for).
    written: u64,
    /// Set when a sync failed: the kernel may have dropped the dirty pages, so no later
    /// sync of this file can be trusted until the disk is reopened (and replayed).
    broken: bool,
    /// The sealed segment, until a sync makes its tail durable.
    unsynced_old: Option<Arc<File>>,
    /// A rotation renamed and created files whose names are not yet durable.
    dir_dirty: bool,
    /// Counts rotations, so a sync that raced one knows what it covered.
    generation: u64,
    /// The number of the segment appends go to (0: unnumbered, an older layout's).
    segment: u64,
}

/// What open found in the log.
#[derive(Default)]
pub struct Replay {
    /// Ops to apply (of the segments the root does not cover), sealed segment first.
    pub ops: Vec<WalOp>,
    /// The root each of those segments was started on (sealed segment first).
    pub bases: Vec<LogBase>,
}

/// One segment read from its file.
struct Segment {
    ops: Vec<WalOp>,
    base: LogBase,
}

/// The segments a root covering `covered` does not hold, in order: a numbered segment
/// at or below `covered` is skipped (its ops are in the root: a sealed segment whose
/// delete was lost, or a data folder put back from a backup); the others must follow
/// on with no gap. Unnumbered segments (logs of version 1 or 2) are all taken, as
/// before numbers. Returns the ops, the bases and the last number taken (or `covered`).
fn select(path: &Path, segments: Vec<Segment>, covered: u64) -> Result<(Replay, u64)> {
    let mut replay = Replay::default();
    let mut last = covered;
    let mut expect: Option<u64> = None;
    for seg in segments {
        let n = seg.base.segment;
        if n == 0 {
            replay.ops.extend(seg.ops);
            replay.bases.push(seg.base);
            continue;
        }
        if covered > 0 && n <= covered {
            if !seg.ops.is_empty() {
                tracing::info!(
                    path = %path.display(),
                    segment = n,
                    covered,
                    ops = seg.ops.len(),
                    "skipping a log segment the root already holds"
                );
            }
            continue;
        }
        let want = expect.unwrap_or(if covered > 0 { covered + 1 } else { n });
        // The same number twice: a join (`rewrite`) that a crash left beside the sealed
        // segment it copied. It holds that segment's ops again, then the next one's:
        // replayed in order, the state is the same as without the crash.
        let rejoined = expect == Some(n + 1);
        if n != want && !rejoined {
            return Err(Error::corrupt(format!(
                "write-ahead log {}: segment {n} follows {}, but segment {want} is missing: \
                 replaying it would skip writes. Put back the .swap file that goes with this \
                 data folder (its root names the last segment it holds)",
                path.display(),
                if expect.is_some() {
                    format!("segment {}", want - 1)
                } else {
                    format!("a root holding segments up to {covered}")
                }
            )));
        }
        replay.ops.extend(seg.ops);
        replay.bases.push(seg.base);
        last = n;
        expect = Some(n + 1);
    }
    Ok((replay, last))
}

fn lock_err() -> Error {
    Error::internal("write-ahead log lock poisoned by an earlier panic")
}

impl Wal {
    /// Opens (creating if needed) the log at `path`, returning it with what to replay
    /// on top of a root that holds segments up to `covered` (0: unknown). A torn tail is
    /// cut off so new ops follow the last good one; a damaged op with valid ops after
    /// it is refused, and the file left as it is. A sealed segment left by a crash is
    /// joined with the one after it into one file (what the root covers left out).
    pub fn open(
        path: &Path,
        base: LogBase,
        covered: u64,
        hook: Option<SyncHook>,
    ) -> Result<(Self, Replay)> {
        let ctx = |e| Error::io(format!("write-ahead log {}", path.display()), e);
        let old = old_path(path);
        let had_old = old.exists();
        let mut segments = Vec::new();
        for p in [&old, path] {
            if let Some(seg) = read_segment(p)? {
                segments.push(seg);
            }
        }
        let current_skipped = !had_old
            && segments
                .last()
                .is_some_and(|s| s.base.segment != 0 && covered > 0 && s.base.segment <= covered);
        let first_base = segments
            .iter()
            .find(|s| s.base.segment == 0 || s.base.segment > covered)
            .map(|s| s.base);
        let (replay, last) = select(path, segments, covered)?;
        let fresh = LogBase {
            segment: if last > covered { last } else { covered + 1 },
            ..base
        };
        if had_old || current_skipped {
            // One file from here on: the ops to replay under the first one's base and
            // number, so it still follows the root if no checkpoint covers it before
            // the next open (the checkpoint after a replay can fail, or be killed).
            let header = first_base.unwrap_or(fresh);
            rewrite(path, header, &replay.ops, had_old.then_some(&*old))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(ctx)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(ctx)?;
        let mut inner = Inner {
            file: Arc::new(file),
            path: path.to_path_buf(),
            buf: Vec::new(),
            len: 0,
            written: 0,
            broken: false,
            unsynced_old: None,
            dir_dirty: false,
            generation: 0,
            segment: fresh.segment,
        };
        if bytes.len() < header_len(&bytes) {
            inner.reset(fresh)?;
        } else {
            let (_, valid, log_base) = decode_segment(path, &bytes)?;
            inner.segment = log_base.segment;
            if replay.ops.is_empty() && !is_current_version(&bytes) {
                // Nothing to replay in a log of an older layout: start it afresh in this
                // one, so ops only this layout has never sit under an older header (a
                // build that knows only that version would take them for a torn tail).
                // A log with ops is replayed and checkpointed at open, which starts a
                // new segment anyway.
                inner.reset(fresh)?;
            } else {
                if valid < bytes.len() {
                    tracing::info!(path = %path.display(), dropped = bytes.len() - valid, "dropping torn tail of write-ahead log");
                    inner.file.set_len(valid as u64).map_err(ctx)?;
                }
                (&*inner.file)
                    .seek(SeekFrom::Start(valid as u64))
                    .map_err(ctx)?;
                inner.len = valid as u64;
            }
        }
        let wal = Self {
            inner: Mutex::new(inner),
            sync_lock: Mutex::new(()),
            synced: AtomicU64::new(0),
            hook,
        };
        Ok((wal, replay))
    }

    /// Reads the ops of a log (sealed segment first) that a root covering `covered`
    /// does not hold, without opening it for writing (read-only disks, and readers
    /// beside a running writer). A rotation while it reads (the writer sealed `wal` as
    /// `wal.old` and started a new `wal`) would give a state that never existed; it is
    /// seen as a new `wal` file (another inode) and the read starts over.
    pub fn read_ops(path: &Path, covered: u64) -> Result<Replay> {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: &Path| std::fs::metadata(p).ok().map(|m| m.ino());
        for _ in 0..100 {
            let before = ino(path);
            let mut segments = Vec::new();
            for p in [old_path(path), path.to_path_buf()] {
                if let Some(seg) = read_segment(&p)? {
                    segments.push(seg);
                }
            }
            if ino(path) == before {
                return Ok(select(path, segments, covered)?.0);
            }
            tracing::debug!(path = %path.display(), "the log rotated while it was read; reading again");
        }
        Err(Error::new(
            ErrorKind::Busy,
            format!(
                "{}: the writer rotated its log 100 times while it was read; try again",
                path.display()
            ),
        ))
    }

    /// Removes the log at `path` (both segments) when it holds no ops, so a disk moved
    /// to another root (a followed ref's newer version) starts its log afresh on that
    /// root; a log with ops is an error and is left as it is. The caller holds the
    /// disk's lock.
    pub fn remove_if_empty(path: &Path) -> Result<()> {
        if !Self::read_ops(path, 0)?.ops.is_empty() {
            return Err(Error::internal(format!(
                "write-ahead log {} holds writes; not removing it",
                path.display()
            )));
        }
        let mut removed = false;
        for p in [old_path(path), path.to_path_buf()] {
            match std::fs::remove_file(&p) {
                Ok(()) => removed = true,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", p.display()), e)),
            }
        }
        match path.parent() {
            Some(dir) if removed => crate::store::local::sync_dir(dir),
            _ => Ok(()),
        }
    }

    /// The number of the segment appends go to.
    pub fn segment(&self) -> Result<u64> {
        Ok(self.inner()?.segment)
    }

    fn inner(&self) -> Result<std::sync::MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| lock_err())
    }

    /// Appends an op (buffered; durable after `sync`).
    pub fn append(&self, op: &WalOp) -> Result<()> {
        let mut w = self.inner()?;
        encode_op(op, &mut w.buf);
        w.after_append()
    }

    /// Appends a data op from a borrowed record (the write path: no copy of its own).
    pub fn append_data(&self, lba: u64, record: &[u8]) -> Result<()> {
        let mut w = self.inner()?;
        encode_data(lba, record, &mut w.buf);
        w.after_append()
    }

    /// Writes the buffered ops to the log file (no fsync): after this, they survive the
    /// process being killed, though not a power cut.
    pub fn hand_off(&self) -> Result<()> {
        self.inner()?.write_out()
    }

    /// Makes every op appended before the call durable: the sealed segment's tail first
    /// (if a rotation left it unsynced), then this segment, then the folder's new names.
    pub fn sync(&self) -> Result<()> {
        let want = {
            let mut w = self.inner()?;
            w.write_out()?;
            w.written
        };
        let _turn = self.sync_lock.lock().map_err(|_| lock_err())?;
        if self.synced.load(Ordering::Acquire) >= want {
            return Ok(()); // another sync covered our ops while we waited
        }
        let (old, file, dir, generation, pos, path) = {
            let mut w = self.inner()?;
            w.check_broken()?;
            w.write_out()?;
            (
                w.unsynced_old.clone(),
                w.file.clone(),
                w.dir_dirty,
                w.generation,
                w.written,
                w.path.clone(),
            )
        };
        if let Some(h) = &self.hook {
            h();
        }
        let synced = (|| -> std::io::Result<()> {
            if let Some(old) = &old {
                old.sync_data()?;
            }
            file.sync_data()?;
            if dir {
                sync_dir(&path)?;
            }
            Ok(())
        })();
        let mut w = self.inner()?;
        if let Err(e) = synced {
            w.broken = true;
            return Err(Error::io(format!("syncing {}", path.display()), e));
        }
        if w.generation == generation {
            w.unsynced_old = None;
            w.dir_dirty = false;
        }
        drop(w);
        self.synced.fetch_max(pos, Ordering::AcqRel);
        Ok(())
    }

    /// Seals the current segment as `wal.old` and starts the next one (numbered one
    /// more) on `base`; the caller froze the memtable those ops are in. Nothing waits for the disk here (this runs
    /// under the engine's write lock): the next `sync` makes the sealed tail and the
    /// names durable before it makes any op of the new segment durable.
    pub fn rotate(&self, base: LogBase) -> Result<()> {
        let mut w = self.inner()?;
        w.write_out()?;
        let old = old_path(&w.path);
        if old.exists() || w.unsynced_old.is_some() {
            return Err(Error::internal(
                "write-ahead log: the sealed segment is still waiting for its checkpoint",
            ));
        }
        let ctx = |e| Error::io(format!("rotating {}", old.display()), e);
        std::fs::rename(&w.path, &old).map_err(ctx)?;
        let fresh = (|| -> std::io::Result<File> {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&w.path)?;
            f.write_all(&encode_header(LogBase {
                segment: w.segment + 1,
                ..base
            }))?;
            Ok(f)
        })();
        match fresh {
            Ok(f) => {
                let sealed = std::mem::replace(&mut w.file, Arc::new(f));
                w.unsynced_old = Some(sealed);
                w.len = HEADER_LEN as u64;
                w.written += HEADER_LEN as u64;
                w.dir_dirty = true;
                w.generation += 1;
                w.segment += 1;
                Ok(())
            }
            Err(e) => {
                // Put the segment back so appends and replay keep one ordered log.
                let _ = std::fs::rename(&old, &w.path);
                Err(ctx(e))
            }
        }
    }

    /// True while a sealed segment waits for its checkpoint.
    pub fn has_old(&self) -> Result<bool> {
        Ok(old_path(&self.inner()?.path).exists())
    }

    /// Deletes the sealed segment: a durable checkpoint now holds its ops (so its tail
    /// no longer needs a sync).
    pub fn drop_old(&self) -> Result<()> {
        let mut w = self.inner()?;
        w.unsynced_old = None;
        match std::fs::remove_file(old_path(&w.path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting the sealed write-ahead log segment", e)),
        }
    }

    /// Bytes in the current segment, buffered ones included.
    pub fn len(&self) -> u64 {
        self.inner()
            .map(|w| w.len + w.buf.len() as u64)
            .unwrap_or(0)
    }

    /// True when the current segment holds no op.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN as u64
    }
}

impl Inner {
    fn after_append(&mut self) -> Result<()> {
        if self.buf.len() >= BUF_LIMIT {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        self.check_broken()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = (&*self.file).write_all(&self.buf) {
            // A short write (a full disk) left part of an op at the end: cut back to the
            // last whole op so a later retry appends right after it, not after garbage
            // that would end the replay early. The buffer is kept for that retry.
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| (&*self.file).seek(SeekFrom::Start(self.len)).map(|_| ()));
            if cut.is_err() {
                self.broken = true;
            }
            return Err(Error::io(
                format!("appending to {}", self.path.display()),
                e,
            ));
        }
        self.len += self.buf.len() as u64;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn check_broken(&self) -> Result<()> {
        if self.broken {
            return Err(Error::new(
                ErrorKind::Io,
                format!(
                    "write-ahead log {} failed earlier; reopen the disk to recover",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Empties the log (at open, when it has no header yet) and names its base.
    fn reset(&mut self, base: LogBase) -> Result<()> {
        let ctx = |e| Error::io(format!("resetting {}", self.path.display()), e);
        self.buf.clear();
        self.file.set_len(0).map_err(ctx)?;
        (&*self.file).seek(SeekFrom::Start(0)).map_err(ctx)?;
        let h = encode_header(base);
        (&*self.file).write_all(&h).map_err(ctx)?;
        self.file.sync_data().map_err(ctx)?;
        self.len = h.len() as u64;
        self.segment = base.segment;
        Ok(())
    }
}

/// Path of the sealed segment beside `path`.
fn old_path(path: &Path) -> PathBuf {
    path.with_extension("old")
}

/// Decodes one segment's bytes: its ops, the valid length and its base. A damaged op
/// followed by valid ones is an error naming the file and offset.
fn decode_segment(path: &Path, bytes: &[u8]) -> Result<(Vec<WalOp>, usize, LogBase)> {
    let base = decode_header(bytes).map_err(|e| e.context(path.display().to_string()))?;
    let d = decode_ops(bytes);
    if let LogEnd::Corrupt { bad, next } = d.end {
        return Err(Error::corrupt(format!(
            "write-ahead log {}: the op at byte {bad} is damaged, yet whole ops follow it \
             (from byte {next}): this is corruption, not a torn write, and replaying up to it \
             would drop acknowledged writes. The file is left as it is; copy it aside before \
             anything else",
            path.display()
        )));
    }
    Ok((d.ops, d.valid, base))
}

fn read_segment(path: &Path) -> Result<Option<Segment>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= header_len(&bytes) => {
            let (ops, _, base) = decode_segment(path, &bytes)?;
            Ok(Some(Segment { ops, base }))
        }
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("write-ahead log {}", path.display()), e)),
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Replaces `path` with one segment holding `ops` under `header` (durably: a new
/// file, synced, renamed over it), then deletes the sealed segment `old` if given. A
/// crash in between replays the old ops twice in a row before the new ones (or skips
/// them twice, when the root covers them), which ends in the same state.
fn rewrite(path: &Path, header: LogBase, ops: &[WalOp], old: Option<&Path>) -> Result<()> {
    let mut out = encode_header(header);
    for op in ops {
        encode_op(op, &mut out);
    }
    let tmp = path.with_extension("new");
    let ctx = |e| Error::io(format!("rewriting {}", path.display()), e);
    (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)?;
        if let Some(old) = old {
            std::fs::remove_file(old)?;
            sync_dir(path)?;
        }
        Ok(())
    })()
    .map_err(ctx)?;
    tracing::info!(
        ops = ops.len(),
        segment = header.segment,
        "joined the write-ahead log segments left by a crash"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn data(lba: u64, b: u8) -> WalOp {
        WalOp::Data {
            lba,
            record: vec![b; 40],
        }
    }

    fn open(path: &Path) -> (Wal, Vec<WalOp>) {
        let (w, r) = Wal::open(path, LogBase::default(), 0, None).unwrap();
        (w, r.ops)
    }

    #[test]
    fn rotation_keeps_order_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (w, ops) = open(&path);
        assert!(ops.is_empty());
        w.append(&data(1, 1)).unwrap();
        w.append(&WalOp::Zero { lba: 1, count: 2 }).unwrap();
        w.rotate(LogBase::default()).unwrap();
        assert!(w.has_old().unwrap());
        // A second rotation before the checkpoint would lose the order: refused.
        assert!(w.rotate(LogBase::default()).is_err());
        w.append(&data(1, 2)).unwrap();
        w.sync().unwrap();
        drop(w);
        let want = vec![data(1, 1), WalOp::Zero { lba: 1, count: 2 }, data(1, 2)];
        assert_eq!(Wal::read_ops(&path, 0).unwrap().ops, want);
        // Opening after the crash joins the segments into one log, old ops first.
        let (w, ops) = open(&path);
        assert_eq!(ops, want);
        assert!(!w.has_old().unwrap());
        assert!(!path.with_extension("new").exists());
        w.append(&data(3, 3)).unwrap();
        w.sync().unwrap();
        drop(w);
        let mut all = want.clone();
        all.push(data(3, 3));
        assert_eq!(Wal::read_ops(&path, 0).unwrap().ops, all);
    }

    #[test]
    fn dropping_the_sealed_segment_leaves_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (w, _) = open(&path);
        w.append(&data(5, 1)).unwrap();
        w.rotate(LogBase::default()).unwrap();
        w.append(&data(6, 2)).unwrap();
        w.drop_old().unwrap();
        w.sync().unwrap();
        assert_eq!(Wal::read_ops(&path, 0).unwrap().ops, vec![data(6, 2)]);
        // Rotating again is allowed once the old segment is gone.
        w.rotate(LogBase::default()).unwrap();
    }

    #[test]
    fn a_joined_log_no_checkpoint_covered_opens_again() {
        // Segments 2 (sealed) and 3 over a root holding 1; the join is not followed by
        // a checkpoint (it failed, or the process was killed): the next open replays
        // the same ops, and so does a join of two empty segments.
        for ops in [vec![data(1, 1), data(2, 2)], Vec::new()] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("wal");
            let (w, _) = Wal::open(&path, LogBase::default(), 1, None).unwrap();
            assert_eq!(w.segment().unwrap(), 2);
            if let Some(op) = ops.first() {
                w.append(op).unwrap();
            }
            w.rotate(LogBase::default()).unwrap();
            if let Some(op) = ops.get(1) {
                w.append(op).unwrap();
            }
            w.sync().unwrap();
            drop(w);
            for _ in 0..2 {
                let (w, r) = Wal::open(&path, LogBase::default(), 1, None).unwrap();
                assert_eq!(r.ops, ops);
                assert_eq!(w.segment().unwrap(), 2);
                assert!(!path.with_extension("old").exists());
            }
        }
    }

    #[test]
    fn a_crash_mid_join_of_numbered_segments_replays_old_ops_twice_in_a_row() {
        // Sealed segment 2 and the join of 2 and 3 (numbered 2) beside it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let two = LogBase {
            segment: 2,
            ..LogBase::default()
        };
        let mut sealed = encode_header(two);
        encode_op(&data(1, 1), &mut sealed);
        let mut joined = sealed.clone();
        encode_op(&data(1, 9), &mut joined);
        std::fs::write(&path, &joined).unwrap();
        std::fs::write(path.with_extension("old"), &sealed).unwrap();
        let (_, r) = Wal::open(&path, LogBase::default(), 1, None).unwrap();
        assert_eq!(r.ops, vec![data(1, 1), data(1, 1), data(1, 9)]);
        // A number that skips is still refused.
        let mut four = encode_header(LogBase {
            segment: 4,
            ..LogBase::default()
        });
        encode_op(&data(1, 9), &mut four);
        std::fs::write(&path, &four).unwrap();
        std::fs::write(path.with_extension("old"), &sealed).unwrap();
        let err = Wal::open(&path, LogBase::default(), 1, None).err().unwrap();
        assert!(err.to_string().contains("segment 3 is missing"), "{err}");
    }

    #[test]
    fn a_crash_mid_join_replays_old_ops_twice_in_a_row() {
        // The joined log replaced `wal` but `wal.old` was not deleted yet.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let old = vec![data(1, 1), data(2, 1)];
        let new = vec![data(1, 9)];
        let mut joined = encode_header(LogBase::default());
        for op in old.iter().chain(&new) {
            encode_op(op, &mut joined);
        }
        std::fs::write(&path, &joined).unwrap();
        let mut sealed = encode_header(LogBase::default());
        for op in &old {
            encode_op(op, &mut sealed);
        }
        std::fs::write(path.with_extension("old"), &sealed).unwrap();
        let (_, ops) = open(&path);
        // Old, old, new: block 1 ends as 9 and block 2 as 1, as without the crash.
        assert_eq!(
            ops,
            vec![data(1, 1), data(2, 1), data(1, 1), data(2, 1), data(1, 9)]
        );
    }

    #[test]
    fn a_damaged_op_before_good_ones_refuses_to_open_and_keeps_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (w, _) = open(&path);
        for i in 0..4 {
            w.append(&data(i, i as u8)).unwrap();
        }
        w.sync().unwrap();
        drop(w);
        let mut bytes = std::fs::read(&path).unwrap();
        let second = HEADER_LEN + 61;
        bytes[second + 30] ^= 4;
        std::fs::write(&path, &bytes).unwrap();
        let err = Wal::open(&path, LogBase::default(), 0, None).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains(&format!("byte {second}")), "{msg}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the log was changed");
    }

    #[test]
    fn concurrent_syncs_share_one_fdatasync() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let syncs = Arc::new(AtomicU64::new(0));
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let hook: SyncHook = {
            let (syncs, gate) = (syncs.clone(), gate.clone());
            Arc::new(move || {
                syncs.fetch_add(1, Ordering::SeqCst);
                let (m, cv) = &*gate;
                let mut open = m.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
            })
        };
        let (w, _) = Wal::open(&path, LogBase::default(), 0, Some(hook)).unwrap();
        let w = Arc::new(w);
        w.append(&data(1, 1)).unwrap();
        std::thread::scope(|s| {
            let first = s.spawn(|| w.sync());
            while syncs.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            // The first sync waits at the disk; appends go on meanwhile.
            w.append(&data(2, 2)).unwrap();
            let later: Vec<_> = (0..4).map(|_| s.spawn(|| w.sync())).collect();
            std::thread::sleep(std::time::Duration::from_millis(50));
            let (m, cv) = &*gate;
            *m.lock().unwrap() = true;
            cv.notify_all();
            first.join().unwrap().unwrap();
            for l in later {
                l.join().unwrap().unwrap();
            }
        });
        // One for the first op, one shared by the four that came while it waited.
        assert_eq!(syncs.load(Ordering::SeqCst), 2);
        assert_eq!(
            Wal::read_ops(&path, 0).unwrap().ops,
            vec![data(1, 1), data(2, 2)]
        );
    }

    #[test]
    fn an_empty_log_of_the_older_layout_starts_afresh_and_one_with_ops_replays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let mut v1 = encode_header(LogBase::default());
        v1.truncate(48);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        std::fs::write(&path, &v1).unwrap();
        let (w, ops) = open(&path);
        assert!(ops.is_empty());
        drop(w);
        assert!(is_current_version(&std::fs::read(&path).unwrap()));
        // With an op to replay, the log is left as it is (the checkpoint after the
        // replay starts a new segment).
        let mut with_op = v1.clone();
        crate::format::wal::encode_op(&data(5, 9), &mut with_op);
        std::fs::write(&path, &with_op).unwrap();
        let (_w, ops) = open(&path);
        assert_eq!(ops, vec![data(5, 9)]);
        assert!(!is_current_version(&std::fs::read(&path).unwrap()));
    }

    fn segment_of(path: &Path) -> u64 {
        decode_header(&std::fs::read(path).unwrap())
            .unwrap()
            .segment
    }

    #[test]
    fn segments_are_numbered_and_replay_takes_only_what_the_root_lacks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        // A root holding segments up to 4: the new log is segment 5.
        let (w, r) = Wal::open(&path, LogBase::default(), 4, None).unwrap();
        assert!(r.ops.is_empty());
        assert_eq!(w.segment().unwrap(), 5);
        w.append(&data(1, 1)).unwrap();
        w.rotate(LogBase::default()).unwrap(); // 5 sealed, 6 started
        assert_eq!(w.segment().unwrap(), 6);
        w.append(&data(2, 2)).unwrap();
        w.sync().unwrap();
        drop(w);
        assert_eq!(segment_of(&path.with_extension("old")), 5);
        assert_eq!(segment_of(&path), 6);
        // A crash before the checkpoint of 5: both replay, in order.
        assert_eq!(
            Wal::read_ops(&path, 4).unwrap().ops,
            vec![data(1, 1), data(2, 2)]
        );
        // The root of 5 was named but wal.old's delete was lost: 5 is skipped, never
        // replayed over the root that holds it (and whatever came after it).
        assert_eq!(Wal::read_ops(&path, 5).unwrap().ops, vec![data(2, 2)]);
        // A root holding up to 6 (a data folder put back from an older backup): nothing.
        assert!(Wal::read_ops(&path, 6).unwrap().ops.is_empty());
        // A root that holds only up to 3: segment 4 is missing, refused.
        let err = Wal::read_ops(&path, 3).err().unwrap();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(err.to_string().contains("segment 4 is missing"), "{err}");
        // Opening with the root of 5 joins what is left into one segment, 6.
        let (w, r) = Wal::open(&path, LogBase::default(), 5, None).unwrap();
        assert_eq!(r.ops, vec![data(2, 2)]);
        assert!(!path.with_extension("old").exists());
        assert_eq!(w.segment().unwrap(), 6);
        drop(w);
        // Opening a log the root fully holds starts the next segment afresh.
        let (w, r) = Wal::open(&path, LogBase::default(), 6, None).unwrap();
        assert!(r.ops.is_empty());
        assert_eq!(w.segment().unwrap(), 7);
        assert!(Wal::read_ops(&path, 6).unwrap().ops.is_empty());
    }
}
