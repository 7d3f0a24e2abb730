//! An ordered list of stores, the local data folder first: reads try each in turn and
//! take the first good answer; writes, syncs and deletes go to the first only, so a
//! published copy further down the list never changes.

use std::sync::Arc;

use super::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;

/// Stores tried in order.
pub struct FallbackStore {
    stores: Vec<Arc<dyn ChunkStore>>,
}

impl FallbackStore {
    /// `stores[0]` takes every write; the rest are read when it lacks a chunk or fails.
    pub fn new(stores: Vec<Arc<dyn ChunkStore>>) -> Result<Self> {
        if stores.is_empty() {
            return Err(Error::internal("a fallback list needs at least one store"));
        }
        Ok(Self { stores })
    }

    fn first(&self) -> Result<&Arc<dyn ChunkStore>> {
        self.stores
            .first()
            .ok_or_else(|| Error::internal("empty fallback list"))
    }

    /// Tries `f` on each store in order; the error, when all fail, names every answer.
    fn first_good<T>(
        &self,
        id: &ChunkId,
        f: impl FnMut(&dyn ChunkStore) -> Result<T>,
    ) -> Result<T> {
        self.first_good_given(id, None, f)
    }

    /// [`FallbackStore::first_good`] where the first store's answer, when given, was
    /// already had (a `get_many` of the first store): it is not asked again.
    fn first_good_given<T>(
        &self,
        id: &ChunkId,
        mut given: Option<Result<T>>,
        mut f: impl FnMut(&dyn ChunkStore) -> Result<T>,
    ) -> Result<T> {
        if let [only] = self.stores.as_slice() {
            // Nothing to choose between: its own error says it all (the fallback
            // around this one names the source).
            return given.unwrap_or_else(|| f(only.as_ref()));
        }
        let mut answers = Vec::new();
        let mut kind = ErrorKind::NotFound;
        for (i, s) in self.stores.iter().enumerate() {
            let answer = match given.take() {
                Some(a) if i == 0 => a,
                _ => f(s.as_ref()),
            };
            match answer {
                Ok(v) => {
                    if i > 0 {
                        tracing::debug!(chunk = %id, source = %s.describe(), "read from a fallback");
                    }
                    return Ok(v);
                }
                Err(e) => {
                    // The most telling kind wins: corrupt over I/O over not found.
                    kind = match (kind, e.kind()) {
                        (_, ErrorKind::Corrupt) | (ErrorKind::Corrupt, _) => ErrorKind::Corrupt,
                        (ErrorKind::NotFound, k) => k,
                        (k, _) => k,
                    };
                    // Each store's errors name it (its path or URL).
                    answers.push(e.to_string());
                }
            }
        }
        if self.stores.len() > 1 {
            tracing::warn!(chunk = %id, answers = %answers.join("; "), "no source could give the chunk");
        }
        Err(Error::new(
            kind,
            format!("chunk {id}: {}", answers.join("; ")),
        ))
    }
}

impl ChunkStore for FallbackStore {
    /// The first store answers all together; what it cannot give is asked of the
    /// others in turn, as `get` asks (its answer counted as the first store's).
    fn get_many(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>>> {
        let Ok(first) = self.first() else {
            return ids.iter().map(|id| self.get(id)).collect();
        };
        let got = first.get_many(ids);
        got.into_iter()
            .zip(ids)
            .map(|(answer, id)| match answer {
                Ok(bytes) => Ok(bytes),
                Err(e) => self.first_good_given(id, Some(Err(e)), |s| s.get(id)),
            })
            .collect()
    }

    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.first_good(id, |s| s.get(id))
    }
    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.first_good(id, |s| s.get_range(id, offset, len))
    }
    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.first_good(id, |s| s.read_verified(id, offset, len, &mut *accept))
    }
    fn warm_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<()> {
        self.first_good(id, |s| s.warm_range(id, offset, len))
    }
    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        self.first()?.put(bytes)
    }
    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        self.first()?.put_hashed(id, bytes)
    }
    fn sync(&self) -> Result<()> {
        self.first()?.sync()
    }
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        for s in &self.stores {
            if s.contains(id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
    fn size(&self, id: &ChunkId) -> Result<u64> {
        self.first_good(id, |s| s.size(id))
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.first()?.delete(id)
    }
    /// Only the first store's chunks are this disk's to free.
    fn owns(&self, id: &ChunkId) -> bool {
        self.first().is_ok_and(|s| s.owns(id))
    }
    /// The chunks of the first store (the ones this disk may delete).
    fn list(&self) -> Result<Vec<ChunkId>> {
        self.first()?.list()
    }
    fn describe(&self) -> String {
        self.stores
            .iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join(" > ")
    }
}
