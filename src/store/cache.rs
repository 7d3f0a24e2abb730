//! A bounded folder of chunks fetched from slower stores (`cache=DIR`, `cachesize=`).
//!
//! Chunks are content-addressed, so one cache folder can serve every disk on a host and
//! survives restarts. A miss fetches the whole chunk from the store behind (verified
//! there), writes it here (not fsynced: every use checks a cached copy, and a torn one
//! is a miss) and answers from it; the least recently used chunks
//! go once the folder is over its size. Recency survives restarts through the files'
//! modification times (touched on the first hit of each chunk in a process). A cached
//! file that does not match its name, or that another process evicted, is a miss.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::SystemTime;

use lru::LruCache;

use super::local::LocalStore;
use super::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;

/// Default bound of a cache folder when `cachesize=` is not given.
pub const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

struct Index {
    lru: LruCache<ChunkId, u64>,
    bytes: u64,
    touched: HashSet<ChunkId>,
}

/// A cache folder in front of `inner`.
pub struct CacheStore {
    folder: LocalStore,
    inner: Arc<dyn ChunkStore>,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Downloads under way: a second reader of the same chunk waits for the first's
    /// answer instead of fetching it again.
    inflight: Mutex<HashMap<ChunkId, Arc<Flight>>>,
}

/// A finished download: the bytes, or the error's kind and text (errors do not clone).
type Answer = std::result::Result<Arc<Vec<u8>>, (ErrorKind, String)>;

/// One download that several readers wait for.
#[derive(Default)]
struct Flight {
    answer: Mutex<Option<Answer>>,
    ready: Condvar,
}

impl CacheStore {
    /// Uses `dir` (created if needed) as a cache of at most `max_bytes` in front of
    /// `inner`, which must check whole chunks against their names (a `VerifyStore`).
    pub fn open(dir: &Path, max_bytes: u64, inner: Arc<dyn ChunkStore>) -> Result<Self> {
        let folder = LocalStore::open(dir)?;
        let mut found: Vec<(SystemTime, ChunkId, u64)> = Vec::new();
        for id in folder.list()? {
            if let Ok(m) = std::fs::metadata(folder.path_of(&id)) {
                found.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), id, m.len()));
            }
        }
        found.sort();
        let mut index = Index {
            lru: LruCache::unbounded(),
            bytes: 0,
            touched: HashSet::new(),
        };
        for (_, id, len) in found {
            index.lru.put(id, len);
            index.bytes += len;
        }
        let cache = Self {
            folder,
            inner,
            max_bytes,
            index: Mutex::new(index),
            inflight: Mutex::new(HashMap::new()),
        };
        cache.evict()?;
        Ok(cache)
    }

    fn index(&self) -> Result<std::sync::MutexGuard<'_, Index>> {
        self.index
            .lock()
            .map_err(|_| Error::internal("cache index lock poisoned"))
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.index().map(|i| i.bytes).unwrap_or(0)
    }

    fn evict(&self) -> Result<()> {
        let mut ix = self.index()?;
        while ix.bytes > self.max_bytes {
            let Some((id, len)) = ix.lru.pop_lru() else {
                break;
            };
            ix.bytes = ix.bytes.saturating_sub(len);
            ix.touched.remove(&id);
            self.folder.delete(&id)?;
        }
        Ok(())
    }

    /// Marks a hit; false when the chunk is not cached.
    fn hit(&self, id: &ChunkId) -> Result<bool> {
        let mut ix = self.index()?;
        if ix.lru.get(id).is_none() {
            return Ok(false);
        }
        if ix.touched.insert(*id) {
            if let Ok(f) = std::fs::File::options()
                .write(true)
                .open(self.folder.path_of(id))
            {
                let _ = f.set_modified(SystemTime::now());
            }
        }
        Ok(true)
    }

    fn forget(&self, id: &ChunkId) {
        if let Ok(mut ix) = self.index() {
            if let Some(len) = ix.lru.pop(id) {
                ix.bytes = ix.bytes.saturating_sub(len);
            }
            ix.touched.remove(id);
        }
    }

    /// Fetches from behind (once, however many readers want it at the same time),
    /// keeps a copy, returns the bytes.
    fn fill(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let lock = || {
            self.inflight
                .lock()
                .map_err(|_| Error::internal("cache download table poisoned"))
        };
        let (flight, leader) = {
            let mut map = lock()?;
            match map.get(id) {
                Some(f) => (f.clone(), false),
                None => {
                    let f = Arc::new(Flight::default());
                    map.insert(*id, f.clone());
                    (f, true)
                }
            }
        };
        let poisoned = || Error::internal("cache download lock poisoned");
        if !leader {
            let mut answer = flight.answer.lock().map_err(|_| poisoned())?;
            while answer.is_none() {
                answer = flight.ready.wait(answer).map_err(|_| poisoned())?;
            }
            return match answer.as_ref() {
                Some(Ok(b)) => Ok(b.to_vec()),
                Some(Err((kind, msg))) => Err(Error::new(*kind, msg.clone())),
                None => Err(Error::internal("download finished without an answer")),
            };
        }
        let result = self.fetch_and_keep(id);
        if let Ok(mut answer) = flight.answer.lock() {
            *answer = Some(match &result {
                Ok(b) => Ok(Arc::new(b.clone())),
                Err(e) => Err((e.kind(), e.to_string())),
            });
        }
        flight.ready.notify_all();
        lock()?.remove(id);
        result
    }

    /// The store behind checks what it returns (`VerifyStore` under each fallback, see
    /// `store::stack`), so the bytes are hashed once, there.
    fn fetch_and_keep(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let bytes = self.inner.get(id)?;
        let len = bytes.len() as u64;
        if len <= self.max_bytes {
            let kept = self.folder.keep(id, &bytes);
            match kept {
                Ok(_) => {
                    let mut ix = self.index()?;
                    if ix.lru.put(*id, len).is_none() {
                        ix.bytes += len;
                    }
                    ix.touched.insert(*id);
                    drop(ix);
                    self.evict()?;
                }
                Err(e) => {
                    tracing::warn!(chunk = %id, error = %e, "could not keep a chunk in the cache")
                }
            }
        }
        Ok(bytes)
    }
}

impl ChunkStore for CacheStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        if self.hit(id)? {
            match self.folder.get(id) {
                Ok(b) if ChunkId::of(&b) == *id => return Ok(b),
                _ => {
                    self.forget(id);
                    let _ = self.folder.delete(id);
                }
            }
        }
        self.fill(id)
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        if self.hit(id)? {
            match self.folder.get_range(id, offset, len) {
                Ok(b) => return Ok(b),
                Err(_) => self.forget(id),
            }
        }
        let whole = self.fill(id)?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| whole.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "chunk {id}: {len} bytes at {offset} lie past its end ({} bytes)",
                    whole.len()
                ))
            })
    }

    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        if self.hit(id)? {
            match self
                .folder
                .get_range(id, offset, len)
                .and_then(|b| accept(&b))
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // A damaged cached copy is a miss: fetch it again from behind.
                    tracing::warn!(chunk = %id, error = %e, "cached chunk refused; fetching it again");
                    self.forget(id);
                    let _ = self.folder.delete(id);
                }
            }
        }
        let whole = self.fill(id)?;
        let part = usize::try_from(offset)
            .ok()
            .and_then(|o| whole.get(o..o.checked_add(len)?))
            .ok_or_else(|| Error::corrupt(format!("chunk {id}: range past its end")))?;
        accept(part)
    }

    fn put(&self, _bytes: &[u8]) -> Result<ChunkId> {
        Err(Error::internal("the cache takes no writes"))
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.index()?.lru.contains(id) || self.inner.contains(id)?)
    }
    fn size(&self, id: &ChunkId) -> Result<u64> {
        if let Some(len) = self.index()?.lru.peek(id) {
            return Ok(*len);
        }
        self.inner.size(id)
    }
    fn delete(&self, _id: &ChunkId) -> Result<()> {
        Err(Error::internal("the cache deletes nothing on request"))
    }
    fn list(&self) -> Result<Vec<ChunkId>> {
        self.inner.list()
    }
    fn describe(&self) -> String {
        format!(
            "cache {} > {}",
            self.folder.describe(),
            self.inner.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn stays_under_its_size_and_keeps_the_recent() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let ids: Vec<ChunkId> = (0..10u8).map(|i| mem.put(&[i; 1000]).unwrap()).collect();
        let c = CacheStore::open(dir.path(), 3500, mem.clone()).unwrap();
        for id in &ids {
            assert_eq!(c.get_range(id, 10, 5).unwrap().len(), 5);
        }
        assert!(c.bytes() <= 3500);
        let on_disk = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(on_disk, 3);
        // The newest are kept: served with the store behind emptied.
        for id in &ids {
            mem.delete(id).unwrap();
        }
        assert_eq!(c.get(&ids[9]).unwrap(), vec![9u8; 1000]);
        assert!(c.get(&ids[0]).is_err());
        // Reopened smaller, it keeps what fits.
        drop(c);
        let c = CacheStore::open(dir.path(), 2000, mem).unwrap();
        assert_eq!(c.bytes(), 2000);
        assert_eq!(c.get(&ids[9]).unwrap(), vec![9u8; 1000]);
    }

    #[test]
    fn concurrent_readers_of_one_chunk_share_one_download() {
        use crate::store::fault::{FaultPlan, FaultStore};
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let id = mem.put(&[7u8; 100_000]).unwrap();
        // A slow store behind, so the readers overlap.
        let slow = Arc::new(FaultStore::new(
            mem,
            FaultPlan {
                delay: Some(std::time::Duration::from_millis(200)),
                ..FaultPlan::default()
            },
        ));
        let counting = Arc::new(crate::store::recording::RecordingStore::new(slow));
        let c = CacheStore::open(dir.path(), 1 << 20, counting.clone()).unwrap();
        let gets = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    assert_eq!(c.get_range(&id, 10, 5).unwrap(), vec![7u8; 5]);
                    gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        assert_eq!(gets.into_inner(), 6);
        assert_eq!(
            counting.gets(),
            1,
            "the chunk was downloaded more than once"
        );
    }

    #[test]
    fn a_bad_cached_copy_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let id = mem.put(b"good bytes").unwrap();
        let c = CacheStore::open(dir.path(), 1 << 20, mem.clone()).unwrap();
        c.get(&id).unwrap();
        std::fs::write(dir.path().join(id.file_name()), b"bad bytes!").unwrap();
        assert_eq!(c.get(&id).unwrap(), b"good bytes");
    }
}
