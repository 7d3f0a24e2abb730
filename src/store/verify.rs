//! Checks what a store returns before anyone uses it: a whole chunk must hash to its
//! id, and a range read must be exactly as long as asked. Range bytes are authenticated
//! one layer up, by the AEAD tag of the record or index node they hold (the store does
//! not know those tags). Writes pass through.

use std::sync::Arc;

use super::ChunkStore;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

/// A store whose answers are checked.
pub struct VerifyStore {
    inner: Arc<dyn ChunkStore>,
}

impl VerifyStore {
    /// Checks everything `inner` returns.
    pub fn new(inner: Arc<dyn ChunkStore>) -> Self {
        Self { inner }
    }
}

impl ChunkStore for VerifyStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let bytes = self.inner.get(id)?;
        if ChunkId::of(&bytes) != *id {
            return Err(Error::corrupt(format!(
                "chunk {id} from {}: contents do not match its name",
                self.inner.describe()
            )));
        }
        Ok(bytes)
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let bytes = self.inner.get_range(id, offset, len)?;
        if bytes.len() != len {
            return Err(Error::corrupt(format!(
                "chunk {id} from {}: asked for {len} bytes at {offset}, got {}",
                self.inner.describe(),
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        // The reader's check knows the bytes, not where they came from: name it.
        self.inner.read_verified(id, offset, len, &mut |b| {
            accept(b).map_err(|e| e.context(format!("chunk {id} from {}", self.inner.describe())))
        })
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
}
