//! A folder of `HEX64.lvl` files.
//!
//! `put` writes a temporary file, fsyncs it and renames it into place, so a name only
//! ever refers to complete bytes; `sync` fsyncs the folder so the renames survive power
//! loss. Reads go through a small cache of open file handles.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::ChunkStore;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

const OPEN_FILES: usize = 256;

/// Chunks in a local folder.
pub struct LocalStore {
    dir: PathBuf,
    files: Mutex<LruCache<ChunkId, Arc<File>>>,
    tmp_seq: AtomicU64,
    unsynced: Mutex<Vec<File>>,
}

impl LocalStore {
    /// Uses (and creates if needed) `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating data folder {}", dir.display()), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files: Mutex::new(LruCache::new(
                std::num::NonZeroUsize::new(OPEN_FILES).unwrap_or(std::num::NonZeroUsize::MIN),
            )),
            tmp_seq: AtomicU64::new(0),
            unsynced: Mutex::new(Vec::new()),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of a chunk.
    pub fn path_of(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(id.file_name())
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
}

impl ChunkStore for LocalStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let path = self.path_of(id);
        let bytes =
            fs::read(&path).map_err(|e| Error::io(format!("chunk {}", path.display()), e))?;
        if ChunkId::of(&bytes) != *id {
            return Err(Error::corrupt(format!(
                "chunk {}: contents do not match its name",
                path.display()
            )));
        }
        Ok(bytes)
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let f = self.file(id)?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, offset).map_err(|e| {
            let e = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                return Error::corrupt(format!(
                    "chunk {}: truncated (wanted {len} bytes at {offset})",
                    self.path_of(id).display()
                ));
            } else {
                e
            };
            Error::io(format!("reading chunk {}", self.path_of(id).display()), e)
        })?;
        Ok(buf)
    }

    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(bytes);
        let path = self.path_of(&id);
        if path.exists() {
            return Ok(id);
        }
        let seq = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join(format!(".tmp-{}-{seq}", std::process::id()));
        // Written and renamed now, fsynced in `sync` (before any root names it). A name
        // left by a power cut before that sync is unreferenced and removed by the
        // collection that runs when the disk is next opened, before any new put.
        let write = || -> std::io::Result<File> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(bytes)?;
            fs::rename(&tmp, &path)?;
            Ok(f)
        };
        match write() {
            Ok(f) => {
                if let Ok(mut u) = self.unsynced.lock() {
                    u.push(f);
                }
                Ok(id)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(Error::io(format!("writing chunk {}", path.display()), e))
            }
        }
    }

    fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.path_of(id).exists())
    }

    fn delete(&self, id: &ChunkId) -> Result<()> {
        if let Ok(mut cache) = self.files.lock() {
            cache.pop(id);
        }
        match fs::remove_file(self.path_of(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("deleting chunk {id}"), e)),
        }
    }

    fn list(&self) -> Result<Vec<ChunkId>> {
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("listing {}", self.dir.display()), e))?;
            if let Some(id) = ent.file_name().to_str().and_then(ChunkId::from_file_name) {
                out.push(id);
            }
        }
        Ok(out)
    }

    fn sync(&self) -> Result<()> {
        let files = match self.unsynced.lock() {
            Ok(mut u) => std::mem::take(&mut *u),
            Err(_) => Vec::new(),
        };
        for f in &files {
            f.sync_data()
                .map_err(|e| Error::io(format!("syncing a chunk in {}", self.dir.display()), e))?;
        }
        sync_dir(&self.dir)
    }
}

/// fsyncs a directory so renames and creations in it are durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("syncing folder {}", dir.display()), e))
}
