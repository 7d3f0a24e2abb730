//! Chunks in memory, for tests: the simplest correct store.

use std::collections::HashMap;
use std::sync::Mutex;

use super::ChunkStore;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

/// A map of chunks.
#[derive(Default)]
pub struct MemoryStore {
    chunks: Mutex<HashMap<ChunkId, Vec<u8>>>,
}

impl MemoryStore {
    fn map(&self) -> Result<std::sync::MutexGuard<'_, HashMap<ChunkId, Vec<u8>>>> {
        self.chunks
            .lock()
            .map_err(|_| Error::internal("memory store lock poisoned"))
    }

    /// Replaces the bytes stored under `id` (tests: a torn or corrupted file).
    pub fn overwrite(&self, id: &ChunkId, bytes: Vec<u8>) -> Result<()> {
        self.map()?.insert(*id, bytes);
        Ok(())
    }
}

impl ChunkStore for MemoryStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.map()?
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("chunk {id} (memory)")))
    }
    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let map = self.map()?;
        let c = map
            .get(id)
            .ok_or_else(|| Error::not_found(format!("chunk {id} (memory)")))?;
        usize::try_from(offset)
            .ok()
            .and_then(|o| c.get(o..o.checked_add(len)?))
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::corrupt(format!("chunk {id}: truncated (memory)")))
    }
    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(bytes);
        let mut map = self.map()?;
        // Never trust a copy that does not match its name.
        if map.get(&id).is_none_or(|c| ChunkId::of(c) != id) {
            map.insert(id, bytes.to_vec());
        }
        Ok(id)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.map()?.contains_key(id))
    }
    fn size(&self, id: &ChunkId) -> Result<u64> {
        self.map()?
            .get(id)
            .map(|c| c.len() as u64)
            .ok_or_else(|| Error::not_found(format!("chunk {id} (memory)")))
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.map()?.remove(id);
        Ok(())
    }
    fn owns(&self, id: &ChunkId) -> bool {
        self.map().is_ok_and(|m| m.contains_key(id))
    }
    fn list(&self) -> Result<Vec<ChunkId>> {
        Ok(self.map()?.keys().copied().collect())
    }
    fn describe(&self) -> String {
        "memory".into()
    }
}
