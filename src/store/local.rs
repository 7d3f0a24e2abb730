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
use std::os::unix::fs::FileExt;
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
}

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

    fn write_new(&self, id: &ChunkId, bytes: &[u8]) -> Result<File> {
        let path = self.path_of(id);
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{}-{seq}", std::process::id()));
        let write = || -> std::io::Result<File> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, &path)?;
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
        let mut buf = pool.take(len);
        let r = self
            .read_range_into(id, offset, &mut buf)
            .and_then(|()| accept(&buf));
        pool.give(buf);
        r
    }

    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        self.check_writable()?;
        let id = ChunkId::of(bytes);
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
            None => self.write_new(&id, bytes)?,
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

    fn size(&self, id: &ChunkId) -> Result<u64> {
        let path = self.path_of(id);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| Error::io(format!("chunk {}", path.display()), e))
    }

    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.check_writable()?;
        if let Ok(mut cache) = self.files.lock() {
            cache.pop(id);
        }
        if let Ok(mut p) = self.pending.lock() {
            p.known.remove(id);
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
