//! Where chunks live. `ChunkStore` is the one interface; the store never knows what a
//! block is. Implementations: `local` (a folder). Remote, cache and fallback stores stack
//! on the same trait.

pub mod local;

use crate::error::Result;
use crate::format::chunk_id::ChunkId;

/// Immutable, content-addressed chunk storage.
pub trait ChunkStore: Send + Sync {
    /// The whole chunk, verified against its id.
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>>;
    /// `len` bytes at `offset` (callers verify them by AEAD tag).
    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Stores `bytes` durably (after `sync`), returning their id. Storing an existing
    /// chunk is a no-op.
    fn put(&self, bytes: &[u8]) -> Result<ChunkId>;
    /// True when the chunk is present.
    fn contains(&self, id: &ChunkId) -> Result<bool>;
    /// Removes a chunk (absent is fine).
    fn delete(&self, id: &ChunkId) -> Result<()>;
    /// Every chunk present.
    fn list(&self) -> Result<Vec<ChunkId>>;
    /// Makes every `put` so far durable.
    fn sync(&self) -> Result<()>;
}
