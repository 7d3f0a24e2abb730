//! A folder of `HEX64.lvl` files: the disk's data folder, a folder named by `fallback=`,
//! or the cache's folder.
//!
//! `put` writes a temporary file and renames it into place, so a name only ever refers
//! to complete bytes once synced; `sync` fsyncs every file put since the last sync, then
//! the folder, so the renames survive power loss. A failed fsync poisons the store
//! (every later `sync` fails): the kernel may have dropped the dirty pages, and a retry
//! that "succeeds" would let a root name bytes that never reached the disk. A name found
//! already present (left by a crash before its fsync, say) is trusted only after its
//! bytes hash to it, and is then fsynced again like a fresh put. Reads go through a small
//! cache of open file handles.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;

const OPEN_FILES: usize = 256;
/// Prefix of files being written (removed when a writer opens the folder).
const TMP_PREFIX: &str = ".tmp-";
/// A temporary file this old is a crashed writer's even when its PID runs again.
const STALE_TEMPORARY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Chunks in a local folder.
pub struct LocalStore {
    dir: PathBuf,
    writable: bool,
    files: Mutex<LruCache<ChunkId, Arc<File>>>,
    tmp_seq: AtomicU64,
    pending: Mutex<Pending>,
    /// Held by one `sync` at a time, for its fsyncs: puts only take `pending` briefly,
    /// so writers storing chunks never wait for the disk; a sync that starts while
    /// another runs waits for it, so it returns only when every file put before it
    /// began is durable.
    sync_lock: Mutex<()>,
    /// Deleted chunk files kept to be written over by new chunks (see `recycle`).
    recycled: Mutex<Recycled>,
    /// Whether deleted chunks' files are recycled (the disk's own data folder only).
    recycling: bool,
    /// Test hook: recycle whatever the filesystem's free space.
    ignore_free_space: bool,
}

/// Files of deleted chunks, renamed to temporary names, waiting to be written over.
#[derive(Default)]
struct Recycled {
    files: Vec<(PathBuf, u64)>,
    bytes: u64,
}

/// At most this many bytes of deleted chunks are kept for recycling: disk space the
/// collector gives back late, about what a few checkpoints of sequential writes store.
const RECYCLE_BYTES: u64 = 256 << 20;

#[derive(Default)]
struct Pending {
    /// Files put since the last successful sync.
    unsynced: Vec<File>,
    /// Ids written or verified by this process (a put of one of them is a no-op).
    known: HashSet<ChunkId>,
    /// A sync failed: nothing put since the last good sync can be trusted.
    poisoned: bool,
    /// Test hook: fail this many of the next file fsyncs.
    fail_syncs: u32,
}

fn lock_err() -> Error {
    Error::internal("chunk store lock poisoned by an earlier panic")
}

impl LocalStore {
    /// Opens `dir` for reading and writing, creating it if needed and removing
    /// temporary files a crashed writer left (the caller holds the disk lock).
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating data folder {}", dir.display()), e))?;
        let store = Self::new(dir, true);
        store.remove_temporaries();
        Ok(store)
    }

    /// Opens a disk's own data folder like `open`, with the files of deleted chunks
    /// written over by new ones (see `recycle`). Not for a folder other processes
    /// share (a cache, a push destination): a reader there may hold a file open.
    pub fn open_recycling(dir: &Path) -> Result<Self> {
        let mut store = Self::open(dir)?;
        store.recycling = true;
        Ok(store)
    }

    /// Opens `dir` for reading only (a fallback folder, or a disk opened read-only).
    pub fn open_read_only(dir: &Path) -> Self {
        Self::new(dir, false)
    }

    fn new(dir: &Path, writable: bool) -> Self {
        Self {
            dir: dir.to_path_buf(),
            writable,
            files: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(OPEN_FILES).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            tmp_seq: AtomicU64::new(0),
            pending: Mutex::new(Pending::default()),
            sync_lock: Mutex::new(()),
            recycled: Mutex::new(Recycled::default()),
            recycling: false,
            ignore_free_space: false,
        }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a chunk.
    pub fn path_of(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(id.file_name())
    }

    /// Test hook: the next `n` file fsyncs fail with EIO.
    #[doc(hidden)]
    pub fn fail_next_syncs(&self, n: u32) {
        if let Ok(mut p) = self.pending.lock() {
            p.fail_syncs = n;
        }
    }

    /// Removes temporary files whose writer is gone: its process is not running (the
    /// PID in the name), or the file is a day old (a PID used again). A live writer's
    /// file stays: a cache or push folder can be shared by several processes, and
    /// deleting a file another is about to rename would fail its write.
    fn remove_temporaries(&self) {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return;
        };
        for ent in rd.flatten() {
            let name = ent.file_name();
            let Some(rest) = name
                .to_string_lossy()
                .strip_prefix(TMP_PREFIX)
                .map(str::to_owned)
            else {
                continue;
            };
            let writer_alive = rest
                .split('-')
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            let old = ent
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TEMPORARY);
            if !writer_alive || old {
                let _ = fs::remove_file(ent.path());
            }
        }
    }

    fn file(&self, id: &ChunkId) -> Result<Arc<File>> {
        if let Ok(mut cache) = self.files.lock() {
            if let Some(f) = cache.get(id) {
                return Ok(f.clone());
            }
        }
        let path = self.path_of(id);
        let f = Arc::new(
            File::open(&path).map_err(|e| Error::io(format!("chunk {}", path.display()), e))?,
        );
        if let Ok(mut cache) = self.files.lock() {
            cache.put(*id, f.clone());
        }
        Ok(f)
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "chunk folder {} is read-only here",
                self.dir.display()
            )))
        }
    }

    /// An existing file under `id`'s name whose bytes hash to it, opened for the sync.
    fn verified_existing(&self, id: &ChunkId) -> Option<File> {
        let path = self.path_of(id);
        let bytes = fs::read(&path).ok()?;
        if ChunkId::of(&bytes) != *id {
            tracing::warn!(path = %path.display(), "chunk file does not match its name; rewriting it");
            return None;
        }
        File::open(&path).ok()
    }

    /// Writes `bytes` under their name without ever fsyncing them: for a cache, whose
    /// copies are checked on every use (hash or record tag) and fetched again when a
    /// power cut left one torn, so a sync per fetched chunk would only slow reads.
    /// `id` must be the bytes' hash, checked by the caller (a fetched chunk is checked
    /// once, where it arrives; hashing it again here cost a third of a cold read's CPU).
    pub fn keep(&self, id: &ChunkId, bytes: &[u8]) -> Result<()> {
        self.check_writable()?;
        // Always written: a copy already there may be the torn one being replaced.
        self.write_new(id, bytes)?;
        Ok(())
    }

    fn tmp_path(&self, what: &str) -> PathBuf {
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{TMP_PREFIX}{}-{what}{seq}", std::process::id()))
    }

    /// Moves a deleted chunk's file aside to be written over by a later chunk, when
    /// this store recycles and its pool has room; `Ok(false)` when the caller is to
    /// unlink it instead.
    ///
    /// Why: on a machine that hands freed memory back to its host (a VM with free page
    /// reporting), every page of a new file is a host fault, 8-10x the cost of writing
    /// into a page the guest still caches, and a deleted chunk's cached pages are such
    /// pages. Only the disk's own data folder recycles, and the engine deletes only
    /// chunks no root, kept snapshot or write under way reaches, so writing over one
    /// loses what unlinking it would. Two differences are handled: a file with another
    /// link (a clone's) is never written over, and a reader of this process that
    /// opened the file before reads other bytes, which fail their record tag (never
    /// returned as data) and are resolved again against the newer state
    /// (`Engine::retrying`).
    fn recycle(&self, path: &Path) -> Result<bool> {
        if !self.recycling {
            return Ok(false);
        }
        let mut pool = self.recycled.lock().map_err(|_| lock_err())?;
        if pool.bytes >= RECYCLE_BYTES || !(self.ignore_free_space || room_to_spare(&self.dir)) {
            return Ok(false);
        }
        let aside = self.tmp_path("free-");
        match fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(true),
            Err(_) => return Ok(false),
        }
        // Renamed first, counted after: no link can be made through the chunk's name
        // any more, so a count of one stays one.
        match fs::symlink_metadata(&aside) {
            Ok(m) if m.nlink() == 1 && m.is_file() => {
                pool.bytes += m.len();
                pool.files.push((aside, m.len()));
            }
            _ => {
                // Another name holds these bytes (a clone's link): only ours goes.
                let _ = fs::remove_file(&aside);
            }
        }
        Ok(true)
    }

    /// Writes `bytes` over a recycled file and renames it to `path`; `None` when the
    /// pool is empty or the file could not be reused (it is then removed).
    fn write_recycled(&self, path: &Path, bytes: &[u8]) -> Option<File> {
        let aside = {
            let mut pool = self.recycled.lock().ok()?;
            let (aside, len) = pool.files.pop()?;
            pool.bytes -= len;
            aside
        };
        let write = || -> std::io::Result<File> {
            let f = OpenOptions::new().write(true).open(&aside)?;
            f.write_all_at(bytes, 0)?;
            f.set_len(bytes.len() as u64)?;
            fs::rename(&aside, path)?;
            Ok(f)
        };
        match write() {
            Ok(f) => Some(f),
            Err(e) => {
                tracing::debug!(error = %e, "could not reuse a deleted chunk's file");
                let _ = fs::remove_file(&aside);
                None
            }
        }
    }

    /// Unlinks every file kept for recycling (their space is the user's again).
    fn drain_recycled(&self) {
        let files = match self.recycled.lock() {
            Ok(mut pool) => {
                pool.bytes = 0;
                std::mem::take(&mut pool.files)
            }
            Err(_) => return,
        };
        for (path, _) in files {
            let _ = fs::remove_file(path);
        }
    }

    /// Test hook: recycle even on a filesystem with little room to spare.
    #[doc(hidden)]
    pub fn recycle_whatever_the_free_space(mut self) -> Self {
        self.ignore_free_space = true;
        self
    }

    /// Test hook: how many deleted chunks' files wait to be written over.
    #[doc(hidden)]
    pub fn recycled_files(&self) -> usize {
        self.recycled.lock().map(|p| p.files.len()).unwrap_or(0)
    }

    fn write_new(&self, id: &ChunkId, bytes: &[u8]) -> Result<File> {
        let path = self.path_of(id);
        if let Some(f) = self.write_recycled(&path, bytes) {
            return Ok(f);
        }
        match self.write_fresh(&path, bytes) {
            Err(e) if self.recycled_files() > 0 => {
                // A full disk, say: give back what the pool holds and try once more.
                tracing::debug!(error = %e, "writing a chunk failed; freeing recycled files");
                self.drain_recycled();
                self.write_fresh(&path, bytes)
            }
            r => r,
        }
    }

    fn write_fresh(&self, path: &Path, bytes: &[u8]) -> Result<File> {
        let tmp = self.tmp_path("");
        let write = || -> std::io::Result<File> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, path)?;
            Ok(f)
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing chunk {}", path.display()), e)
        })
    }

    /// Fills `buf` from the chunk's bytes at `offset`; a chunk too short is corrupt.
    fn read_range_into(&self, id: &ChunkId, offset: u64, buf: &mut [u8]) -> Result<()> {
        let f = self.file(id)?;
        f.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt(format!(
                    "chunk {}: truncated (wanted {} bytes at {offset})",
                    self.path_of(id).display(),
                    buf.len()
                ))
            } else {
                Error::io(format!("reading chunk {}", self.path_of(id).display()), e)
            }
        })
    }
}

impl ChunkStore for LocalStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let path = self.path_of(id);
        fs::read(&path).map_err(|e| Error::io(format!("chunk {}", path.display()), e))
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_range_into(id, offset, &mut buf)?;
        Ok(buf)
    }

    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        // A buffer from the process's pool: a fresh one per read cost a memset and
        // page faults on every 1 MiB of a sequential read.
        let pool = crate::buffers::shared();
        let mut buf = pool.take_at_least(len);
        let r = match buf.get_mut(..len) {
            Some(range) => self
                .read_range_into(id, offset, range)
                .and_then(|()| accept(range)),
            None => Err(Error::internal("a pooled buffer shorter than asked")),
        };
        pool.give(buf);
        r
    }

    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        self.put_hashed(ChunkId::of(bytes), bytes)
    }

    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        self.check_writable()?;
        // The name is the caller's hash of these bytes (tests check every one).
        debug_assert_eq!(id, ChunkId::of(bytes), "a chunk offered under another name");
        if self
            .pending
            .lock()
            .map_err(|_| lock_err())?
            .known
            .contains(&id)
        {
            return Ok(id);
        }
        // Written and renamed now, fsynced in `sync` (before any root names it).
        let file = match self.verified_existing(&id) {
            Some(f) => f,
            None => {
                let f = self.write_new(&id, bytes)?;
                // Its writeback starts now, so the fsync before the next root (which
                // writers may wait on) has little left to write.
                if let Err(e) = crate::attach::sys::start_writeback(&f) {
                    tracing::debug!(error = %e, "could not start a chunk's writeback");
                }
                f
            }
        };
        let mut p = self.pending.lock().map_err(|_| lock_err())?;
        p.unsynced.push(file);
        p.known.insert(id);
        Ok(id)
    }

    fn sync(&self) -> Result<()> {
        self.check_writable()?;
        let _one_at_a_time = self.sync_lock.lock().map_err(|_| lock_err())?;
        let poisoned = || {
            Error::new(
                ErrorKind::Io,
                format!(
                    "an earlier fsync in {} failed; reopen the disk to recover",
                    self.dir.display()
                ),
            )
        };
        let (files, fail) = {
            let mut p = self.pending.lock().map_err(|_| lock_err())?;
            if p.poisoned {
                return Err(poisoned());
            }
            let fail = p.fail_syncs > 0 && !p.unsynced.is_empty();
            if fail {
                p.fail_syncs -= 1;
            }
            (std::mem::take(&mut p.unsynced), fail)
        };
        let mut failed = None;
        for f in &files {
            let r = if fail {
                Err(std::io::Error::from_raw_os_error(libc::EIO))
            } else {
                f.sync_data()
            };
            if let Err(e) = r {
                failed = Some(Error::io(
                    format!("syncing a chunk in {}", self.dir.display()),
                    e,
                ));
                break;
            }
        }
        let result = match failed {
            Some(e) => Err(e),
            None => sync_dir(&self.dir),
        };
        if result.is_err() {
            // Nothing put since the last good sync can be trusted from now on.
            self.pending.lock().map_err(|_| lock_err())?.poisoned = true;
        }
        result
    }

    fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.path_of(id).exists())
    }

    fn warm_whole(&self, id: &ChunkId) -> Result<()> {
        if self.contains(id)? {
            return Ok(());
        }
        // Absent: the read's own error says so.
        self.get(id).map(|_| ())
    }

    fn size(&self, id: &ChunkId) -> Result<u64> {
        let path = self.path_of(id);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("chunk {}", path.display()), e))
    }

    fn owns(&self, id: &ChunkId) -> bool {
        self.writable
            && fs::symlink_metadata(self.path_of(id)).is_ok_and(|m| m.is_file() && m.nlink() == 1)
    }

    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.check_writable()?;
        if let Ok(mut cache) = self.files.lock() {
            cache.pop(id);
        }
        if let Ok(mut p) = self.pending.lock() {
            p.known.remove(id);
        }
        if self.recycle(&self.path_of(id))? {
            return Ok(());
        }
        match fs::remove_file(self.path_of(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting chunk {id}"), e)),
        }
    }

    fn list(&self) -> Result<Vec<ChunkId>> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.writable => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(Error::io(format!("listing {}", self.dir.display()), e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
            if let Some(id) = ent.file_name().to_str().and_then(ChunkId::from_file_name) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
}

impl Drop for LocalStore {
    /// Deleted chunks kept for recycling go now: their space is the user's again.
    fn drop(&mut self) {
        self.drain_recycled();
    }
}

/// Whether the filesystem under `dir` has room to keep deleted files for a while: at
/// least a tenth of it and 1 GiB free. A filling disk gets its space back at once.
fn room_to_spare(dir: &Path) -> bool {
    crate::attach::sys::free_space(dir)
        .is_ok_and(|(free, total)| free >= 1 << 30 && free.saturating_mul(10) >= total)
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing folder {}", dir.display()), e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temporaries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(TMP_PREFIX))
            .collect()
    }

    #[test]
    fn a_deleted_chunks_file_is_written_over_by_the_next_put() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open_recycling(dir.path())
            .unwrap()
            .recycle_whatever_the_free_space();
        let old = vec![7u8; 300 << 10];
        let a = s.put(&old).unwrap();
        s.sync().unwrap();
        let inode = fs::metadata(s.path_of(&a)).unwrap().ino();
        s.delete(&a).unwrap();
        assert!(!s.path_of(&a).exists(), "a deleted chunk keeps its name");
        assert_eq!(s.recycled_files(), 1);
        // Shorter than the file it reuses: the tail must go.
        let new = vec![9u8; 100 << 10];
        let b = s.put(&new).unwrap();
        s.sync().unwrap();
        assert_eq!(s.recycled_files(), 0);
        assert_eq!(fs::metadata(s.path_of(&b)).unwrap().ino(), inode);
        let on_disk = fs::read(s.path_of(&b)).unwrap();
        assert!(on_disk == new, "the recycled file holds other bytes");
        assert_eq!(ChunkId::of(&on_disk), b);
        // A put of the deleted bytes writes them again (the id is not "known").
        assert_eq!(s.put(&old).unwrap(), a);
        assert!(fs::read(s.path_of(&a)).unwrap() == old);
        // Kept files go when the store does.
        s.delete(&a).unwrap();
        assert_eq!(temporaries(dir.path()).len(), 1);
        drop(s);
        assert!(
            temporaries(dir.path()).is_empty(),
            "recycled files outlive the store"
        );
    }

    #[test]
    fn a_chunk_file_with_another_link_is_never_written_over() {
        let dir = tempfile::tempdir().unwrap();
        let clone = tempfile::tempdir_in(dir.path()).unwrap();
        let s = LocalStore::open_recycling(dir.path())
            .unwrap()
            .recycle_whatever_the_free_space();
        let old = vec![7u8; 200 << 10];
        let a = s.put(&old).unwrap();
        s.sync().unwrap();
        // A clone links the chunk into its own folder, as `clone` does.
        let linked = clone.path().join(a.file_name());
        fs::hard_link(s.path_of(&a), &linked).unwrap();
        s.delete(&a).unwrap();
        assert_eq!(
            s.recycled_files(),
            0,
            "a linked file was kept for recycling"
        );
        assert!(!s.path_of(&a).exists());
        s.put(&[5u8; 200 << 10]).unwrap();
        assert!(
            fs::read(&linked).unwrap() == old,
            "the clone's chunk changed"
        );
        assert!(temporaries(dir.path()).is_empty());
    }

    #[test]
    fn only_a_recycling_store_keeps_deleted_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let a = s.put(&[1u8; 4096]).unwrap();
        s.sync().unwrap();
        s.delete(&a).unwrap();
        assert_eq!(s.recycled_files(), 0);
        assert!(temporaries(dir.path()).is_empty());
        assert!(!s.path_of(&a).exists());
    }

    #[test]
    fn a_failed_chunk_fsync_is_never_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        s.put(b"first chunk").unwrap();
        s.fail_next_syncs(1);
        assert!(s.sync().is_err());
        // The retry of the same put must not make the next sync look clean: the bytes
        // behind the name may never have reached the disk.
        s.put(b"first chunk").unwrap();
        let again = s.sync();
        assert!(again.is_err(), "a sync after a failed one succeeded");
        assert!(again.unwrap_err().to_string().contains("reopen"));
    }

    #[test]
    fn a_name_with_wrong_bytes_is_rewritten_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        let id = ChunkId::of(b"payload");
        // A power cut after the rename but before the data reached the disk.
        std::fs::write(s.path_of(&id), b"\0\0\0\0\0\0\0").unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert_eq!(s.put(b"payload").unwrap(), id);
        s.sync().unwrap();
        assert_eq!(std::fs::read(s.path_of(&id)).unwrap(), b"payload");
    }

    #[test]
    fn temporaries_of_a_crashed_writer_go_at_open() {
        let dir = tempfile::tempdir().unwrap();
        // No process has this PID (above Linux's largest, 2^22).
        let dead = dir.path().join(".tmp-4294967294-0");
        std::fs::write(&dead, b"half").unwrap();
        let s = LocalStore::open(dir.path()).unwrap();
        assert!(!dead.exists());
        assert!(s.list().unwrap().is_empty());
    }

    #[test]
    fn a_running_writers_temporaries_stay_at_open() {
        // Another process (here: this one) writing into a shared cache folder.
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join(format!(".tmp-{}-99", std::process::id()));
        std::fs::write(&live, b"half").unwrap();
        LocalStore::open(dir.path()).unwrap();
        assert!(live.exists());
    }
}
