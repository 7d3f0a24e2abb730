//! The write-ahead log: append, sync on FLUSH/FUA (fdatasync), replay at open. Byte
//! layout in `format::wal`.
//!
//! Two segments at most: `wal`, where appends go, and `wal.old`, the segment sealed when
//! the memtable was frozen, deleted once a checkpoint covers it. Replay reads `wal.old`
//! then `wal`; ops replay idempotently in order, so a crash anywhere in a rotation or
//! before the delete loses nothing and applies nothing twice in a harmful order.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::wal::{
    decode_header, decode_ops, encode_data, encode_header, encode_op, WalOp, HEADER_LEN,
};

/// Buffered bytes written to the file once they exceed this.
const BUF_LIMIT: usize = 1 << 20;

/// An open log.
pub struct Wal {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    len: u64,
    /// Set when a sync failed: the kernel may have dropped the dirty pages, so no later
    /// sync of this file can be trusted until the disk is reopened (and replayed).
    broken: bool,
    /// The sealed segment, until a sync makes its tail durable (rotation does not wait
    /// for the disk; the next FLUSH pays, as it would have anyway).
    unsynced_old: Option<File>,
    /// A rotation renamed and created files whose names are not yet durable.
    dir_dirty: bool,
}

impl Wal {
    /// Opens (creating if needed) the log at `path`, returning it with the ops to replay.
    /// A torn tail is cut off so new ops follow the last good one.
    pub fn open(path: &Path, base: Option<ChunkId>) -> Result<(Self, Vec<WalOp>)> {
        let ctx = |e| Error::io(format!("write-ahead log {}", path.display()), e);
        let old = old_path(path);
        if old.exists() {
            consolidate(path, &old)?;
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
        let mut wal = Self {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            len: 0,
            broken: false,
            unsynced_old: None,
            dir_dirty: false,
        };
        if bytes.len() < HEADER_LEN {
            wal.reset(base)?;
            return Ok((wal, Vec::new()));
        }
        decode_header(&bytes).map_err(|e| e.context(path.display().to_string()))?;
        let (ops, valid) = decode_ops(&bytes);
        if valid < bytes.len() {
            tracing::info!(path = %path.display(), dropped = bytes.len() - valid, "dropping torn tail of write-ahead log");
            wal.file.set_len(valid as u64).map_err(ctx)?;
        }
        wal.file.seek(SeekFrom::Start(valid as u64)).map_err(ctx)?;
        wal.len = valid as u64;
        Ok((wal, ops))
    }

    /// Reads the ops of a log (sealed segment first) without opening it for writing
    /// (read-only disks).
    pub fn read_ops(path: &Path) -> Result<Vec<WalOp>> {
        let mut ops = read_segment(&old_path(path))?;
        ops.extend(read_segment(path)?);
        Ok(ops)
    }

    /// Appends an op (buffered; durable after `sync`).
    pub fn append(&mut self, op: &WalOp) -> Result<()> {
        encode_op(op, &mut self.buf);
        self.after_append()
    }

    /// Appends a data op from a borrowed record (the write path: no copy of its own).
    pub fn append_data(&mut self, lba: u64, record: &[u8]) -> Result<()> {
        encode_data(lba, record, &mut self.buf);
        self.after_append()
    }

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
        if let Err(e) = self.file.write_all(&self.buf) {
            // A short write (a full disk) left part of an op at the end: cut back to the
            // last whole op so a later retry appends right after it, not after garbage
            // that would end the replay early. The buffer is kept for that retry.
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.seek(SeekFrom::Start(self.len)).map(|_| ()));
            if cut.is_err() {
                self.broken = true;
            }
            return Err(Error::io(
                format!("appending to {}", self.path.display()),
                e,
            ));
        }
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn check_broken(&self) -> Result<()> {
        if self.broken {
            return Err(Error::new(
                crate::error::ErrorKind::Io,
                format!(
                    "write-ahead log {} failed earlier; reopen the disk to recover",
                    self.path.display()
                ),
            ));
        }
        Ok(())
    }

    /// Makes every appended op durable: the sealed segment's tail first (if a rotation
    /// left it unsynced), then this segment, then the folder's new names.
    pub fn sync(&mut self) -> Result<()> {
        self.write_out()?;
        let fail = |w: &mut Self, e| {
            w.broken = true;
            Err(Error::io(format!("syncing {}", w.path.display()), e))
        };
        if let Some(old) = &self.unsynced_old {
            if let Err(e) = old.sync_data() {
                return fail(self, e);
            }
            self.unsynced_old = None;
        }
        if let Err(e) = self.file.sync_data() {
            return fail(self, e);
        }
        if self.dir_dirty {
            if let Err(e) = sync_dir(&self.path) {
                return fail(self, e);
            }
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Seals the current segment as `wal.old` and starts a new one; the caller froze the
    /// memtable those ops are in. Nothing waits for the disk here (this runs under the
    /// volume's write lock): the next `sync` makes the sealed tail and the names durable
    /// before it makes any op of the new segment durable, so replay order holds.
    pub fn rotate(&mut self) -> Result<()> {
        self.write_out()?;
        if self.unsynced_old.is_some() {
            // Still unsynced from an earlier rotation: cannot happen while `wal.old`
            // exists (checked below), but never drop a handle that owes a sync.
            self.sync()?;
        }
        let old = old_path(&self.path);
        if old.exists() {
            return Err(Error::invalid(
                "write-ahead log: the sealed segment is still waiting for its checkpoint",
            ));
        }
        let ctx = |e| Error::io(format!("rotating {}", self.path.display()), e);
        std::fs::rename(&self.path, &old).map_err(ctx)?;
        let fresh = (|| -> std::io::Result<File> {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&self.path)?;
            f.write_all(&encode_header(None))?;
            Ok(f)
        })();
        match fresh {
            Ok(f) => {
                self.unsynced_old = Some(std::mem::replace(&mut self.file, f));
                self.len = HEADER_LEN as u64;
                self.dir_dirty = true;
                Ok(())
            }
            Err(e) => {
                // Put the segment back so appends and replay keep one ordered log.
                let _ = std::fs::rename(&old, &self.path);
                Err(ctx(e))
            }
        }
    }

    /// True while a sealed segment waits for its checkpoint.
    pub fn has_old(&self) -> bool {
        old_path(&self.path).exists()
    }

    /// Deletes the sealed segment: a durable checkpoint now holds its ops (so its tail
    /// no longer needs a sync).
    pub fn drop_old(&mut self) -> Result<()> {
        self.unsynced_old = None;
        match std::fs::remove_file(old_path(&self.path)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("deleting the sealed write-ahead log segment", e)),
        }
    }

    /// Empties the log after a checkpoint to `base`.
    pub fn reset(&mut self, base: Option<ChunkId>) -> Result<()> {
        let ctx = |e| Error::io(format!("resetting {}", self.path.display()), e);
        self.buf.clear();
        self.file.set_len(0).map_err(ctx)?;
        self.file.seek(SeekFrom::Start(0)).map_err(ctx)?;
        let h = encode_header(base);
        self.file.write_all(&h).map_err(ctx)?;
        self.file.sync_data().map_err(ctx)?;
        self.len = h.len() as u64;
        Ok(())
    }

    /// Bytes in the log, buffered ones included.
    pub fn len(&self) -> u64 {
        self.len + self.buf.len() as u64
    }

    /// True when the log holds no op.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN as u64
    }
}

/// Path of the sealed segment beside `path`.
fn old_path(path: &Path) -> PathBuf {
    path.with_extension("old")
}

fn read_segment(path: &Path) -> Result<Vec<WalOp>> {
    match std::fs::read(path) {
        Ok(bytes) if bytes.len() >= HEADER_LEN => {
            decode_header(&bytes).map_err(|e| e.context(path.display().to_string()))?;
            Ok(decode_ops(&bytes).0)
        }
        Ok(_) => Ok(Vec::new()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io(format!("write-ahead log {}", path.display()), e)),
    }
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Folds a sealed segment left by a crash and the segment after it into one log: the
/// combined file replaces `wal` first, then `wal.old` goes. A crash in between replays
/// the old ops twice in a row before the new ones, which ends in the same state.
fn consolidate(path: &Path, old: &Path) -> Result<()> {
    let mut ops = read_segment(old)?;
    ops.extend(read_segment(path)?);
    let mut out = encode_header(None);
    for op in &ops {
        encode_op(op, &mut out);
    }
    let tmp = path.with_extension("new");
    let ctx = |e| {
        Error::io(
            format!("joining {} and {}", old.display(), path.display()),
            e,
        )
    };
    (|| -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(&out)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)?;
        std::fs::remove_file(old)?;
        sync_dir(path)
    })()
    .map_err(ctx)?;
    tracing::info!(
        ops = ops.len(),
        "joined the sealed write-ahead log segment left by a crash"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(lba: u64, b: u8) -> WalOp {
        WalOp::Data {
            lba,
            record: vec![b; 40],
        }
    }

    #[test]
    fn rotation_keeps_order_across_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut w, ops) = Wal::open(&path, None).unwrap();
        assert!(ops.is_empty());
        w.append(&data(1, 1)).unwrap();
        w.append(&WalOp::Zero { lba: 1, count: 2 }).unwrap();
        w.rotate().unwrap();
        assert!(w.has_old());
        // A second rotation before the checkpoint would lose the order: refused.
        assert!(w.rotate().is_err());
        w.append(&data(1, 2)).unwrap();
        w.sync().unwrap();
        drop(w);
        let want = vec![data(1, 1), WalOp::Zero { lba: 1, count: 2 }, data(1, 2)];
        assert_eq!(Wal::read_ops(&path).unwrap(), want);
        // Opening after the crash joins the segments into one log, old ops first.
        let (mut w, ops) = Wal::open(&path, None).unwrap();
        assert_eq!(ops, want);
        assert!(!w.has_old());
        assert!(!path.with_extension("new").exists());
        w.append(&data(3, 3)).unwrap();
        w.sync().unwrap();
        drop(w);
        let mut all = want.clone();
        all.push(data(3, 3));
        assert_eq!(Wal::read_ops(&path).unwrap(), all);
    }

    #[test]
    fn dropping_the_sealed_segment_leaves_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let (mut w, _) = Wal::open(&path, None).unwrap();
        w.append(&data(5, 1)).unwrap();
        w.rotate().unwrap();
        w.append(&data(6, 2)).unwrap();
        w.drop_old().unwrap();
        w.sync().unwrap();
        assert_eq!(Wal::read_ops(&path).unwrap(), vec![data(6, 2)]);
        // Rotating again is allowed once the old segment is gone.
        w.rotate().unwrap();
    }

    #[test]
    fn a_crash_mid_join_replays_old_ops_twice_in_a_row() {
        // The joined log replaced `wal` but `wal.old` was not deleted yet.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wal");
        let old = vec![data(1, 1), data(2, 1)];
        let new = vec![data(1, 9)];
        let mut joined = encode_header(None);
        for op in old.iter().chain(&new) {
            encode_op(op, &mut joined);
        }
        std::fs::write(&path, &joined).unwrap();
        let mut sealed = encode_header(None);
        for op in &old {
            encode_op(op, &mut sealed);
        }
        std::fs::write(path.with_extension("old"), &sealed).unwrap();
        let (_, ops) = Wal::open(&path, None).unwrap();
        // Old, old, new: block 1 ends as 9 and block 2 as 1, as without the crash.
        assert_eq!(
            ops,
            vec![data(1, 1), data(2, 1), data(1, 1), data(2, 1), data(1, 9)]
        );
    }
}
