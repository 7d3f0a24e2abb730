//! Whole chunks only, each checked against its name: for a reader that trusts only
//! signed ref versions (`trust=` in its `.swap`). A byte range of a chunk is
//! authenticated one layer up by an AES-GCM-SIV tag, and the disk key is symmetric: a
//! holder of the key (every reader has it) can make other bytes with the same tag and
//! serve them from a mirror. A chunk's name is the SHA-512 of its bytes, and the signed
//! root reaches every chunk by name, so reading whole chunks and hashing them takes
//! only bytes the signer published. Range reads become whole-chunk reads (kept in a
//! small cache of verified chunks, so neighbouring reads cost one fetch).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use super::ChunkStore;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

/// Verified chunks kept for the range reads after them.
const KEEP_CHUNKS: usize = 16;

/// A store that reads only whole chunks and checks each against its name.
pub struct WholeChunkStore {
    inner: Arc<dyn ChunkStore>,
    recent: Mutex<LruCache<ChunkId, Arc<Vec<u8>>>>,
}

impl WholeChunkStore {
    /// Reads through `inner`.
    pub fn new(inner: Arc<dyn ChunkStore>) -> Self {
        let cap = NonZeroUsize::new(KEEP_CHUNKS).unwrap_or(NonZeroUsize::MIN);
        Self {
            inner,
            recent: Mutex::new(LruCache::new(cap)),
        }
    }

    fn whole(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.recent.lock().ok().and_then(|mut r| r.get(id).cloned()) {
            return Ok(b);
        }
        let bytes = self.inner.get(id)?;
        if ChunkId::of(&bytes) != *id {
            return Err(Error::corrupt(format!(
                "chunk {id} from {}: contents do not match its name",
                self.inner.describe()
            )));
        }
        let b = Arc::new(bytes);
        if let Ok(mut r) = self.recent.lock() {
            r.put(*id, b.clone());
        }
        Ok(b)
    }

    fn slice(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let b = self.whole(id)?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| b.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "chunk {id}: {len} bytes at {offset} are past its end ({} bytes)",
                    b.len()
                ))
            })
    }
}

impl ChunkStore for WholeChunkStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        Ok(self.whole(id)?.as_ref().clone())
    }
    /// Whole chunks already: passed on as a bulk read (not kept in `recent`, which
    /// serves range reads), each checked against its name here, in lanes, unless the
    /// store behind checked it.
    fn get_many(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>>> {
        let mut got = self.inner.get_many(ids);
        if !self.inner.checks_names() {
            super::verify::refuse_mismatches(ids, &mut got, |id| {
                Error::corrupt(format!(
                    "chunk {id} from {}: contents do not match its name",
                    self.inner.describe()
                ))
            });
        }
        got
    }
    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.slice(id, offset, len)
    }
    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        accept(&self.slice(id, offset, len)?)
    }
    fn warm_range(&self, id: &ChunkId, _offset: u64, _len: usize) -> Result<()> {
        self.whole(id).map(|_| ())
    }
    fn warm_whole(&self, id: &ChunkId) -> Result<()> {
        self.whole(id).map(|_| ())
    }
    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        self.inner.put(bytes)
    }
    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        self.inner.put_hashed(id, bytes)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        self.inner.contains(id)
    }
    fn size(&self, id: &ChunkId) -> Result<u64> {
        self.inner.size(id)
    }
    fn owns(&self, id: &ChunkId) -> bool {
        self.inner.owns(id)
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.inner.delete(id)
    }
    fn list(&self) -> Result<Vec<ChunkId>> {
        self.inner.list()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    /// Every chunk it returns was hashed here (`whole`).
    fn checks_names(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn ranges_come_from_whole_chunks_checked_against_their_names() -> Result<()> {
        let mem = Arc::new(MemoryStore::default());
        let id = mem.put(b"hello, whole chunk")?;
        let w = WholeChunkStore::new(mem.clone());
        assert_eq!(w.get_range(&id, 7, 5)?, b"whole".to_vec());
        assert!(w.get_range(&id, 15, 10).is_err());
        // A store that answers other bytes under the name is refused.
        let bad = ChunkId([7; 32]);
        mem.overwrite(&bad, b"not these bytes".to_vec())?;
        let e = w
            .get_range(&bad, 0, 3)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("do not match its name"), "{e}");
        // Got together: each checked here (a memory store checks nothing), a bad one
        // refused, a missing one its own error, the good one whole.
        let got = w.get_many(&[bad, id, ChunkId([9; 32])]);
        let e = got[0]
            .as_ref()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("do not match its name"), "{e}");
        assert_eq!(got[1].as_deref().ok(), Some(&b"hello, whole chunk"[..]));
        assert_eq!(
            got[2].as_ref().err().map(Error::kind),
            Some(crate::error::ErrorKind::NotFound)
        );
        Ok(())
    }
}
