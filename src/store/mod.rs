//! Where chunks live. [`ChunkStore`] is the one way to chunks: the engine, garbage
//! collection, `info` and `fsck` all go through it, and the store never knows what a
//! block is.
//!
//! Stores stack: [`stack::open`] builds, for one disk,
//! `Fallback[ Verify(Local), Cache(Fallback[Verify(F1), Verify(F2), ...]) ]` from the
//! data folder and the `.swap` file's `fallback=` and `cache=` lines. Each file holds
//! one store or one decorator:
//! - [`local`]: a folder of `HEX64.lvl` files (the data folder, a folder fallback,
//!   the cache's folder);
//! - [`verify`]: checks whole chunks against their id and range reads for length (the
//!   record or node tag one layer up authenticates their bytes);
//! - [`fallback`]: an ordered list, local first; a failed or bad answer tries the next;
//! - [`cache`]: a bounded folder in front of slower stores, least recently used out,
//!   holding whole chunks and, for small reads, [`partial`] ones (the ranges read);
//! - [`remote`]: a URL (http(s), s3, gs, az) through the `object_store` crate;
//! - [`recording`]: notes the ids put, for garbage collection;
//! - [`memory`] and [`fault`]: for tests (fail the Nth op or an fsync, tear a put, drop
//!   what was not synced, flip bytes, delay).

pub mod cache;
pub mod fallback;
pub mod fault;
pub mod fetch_log;
pub mod local;
pub mod memory;
pub mod partial;
pub mod recording;
pub mod refs;
pub mod remote;
pub mod stack;
pub mod verify;
pub mod whole;

use crate::error::Result;
use crate::format::chunk_id::ChunkId;

/// Immutable, content-addressed chunk storage.
pub trait ChunkStore: Send + Sync {
    /// The whole chunk.
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>>;
    /// Whole chunks, each answered as [`ChunkStore::get`] answers it. A store that
    /// checks chunks by their hash hashes them together (`format::sha512_lanes`: eight
    /// in about the time of three one by one); the default gets them one by one.
    fn get_many(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>>> {
        ids.iter().map(|id| self.get(id)).collect()
    }
    /// `len` bytes at `offset`; a store returns exactly `len` bytes or an error.
    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>>;
    /// Reads `len` bytes at `offset` and hands them to `accept`, which authenticates
    /// them (by the record or node tags they hold) and keeps what it needs. A store with
    /// several sources (fallbacks, a cache) tries the next one when `accept` refuses
    /// an answer, so bytes that fail their tag from one source never end the read while
    /// another source has good ones. Returns the last refusal when none is accepted.
    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        accept(&self.get_range(id, offset, len)?)
    }
    /// Brings `len` bytes at `offset` close without using them (prefetching a trace):
    /// a store that keeps copies (a cache) keeps exactly that range. Nothing checks the
    /// bytes here; whoever reads them later does, and a copy that fails is fetched again.
    fn warm_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<()> {
        self.read_verified(id, offset, len, &mut |_| Ok(()))
    }
    /// Brings the whole chunk close without using it (prefetching a trace, the index
    /// at open): a store that holds it whole already answers without reading it, so a
    /// warm cache costs a prefetch no reads and no hashing. Nothing checks the bytes
    /// here; whoever reads them later does, and a copy that fails is fetched again.
    fn warm_whole(&self, id: &ChunkId) -> Result<()> {
        self.get(id).map(|_| ())
    }
    /// Stores `bytes` (durable once `sync` returns), returning their id. Storing a chunk
    /// that is already present is cheap but never trusts a copy it cannot vouch for.
    fn put(&self, bytes: &[u8]) -> Result<ChunkId>;
    /// [`ChunkStore::put`] of bytes whose id the caller already has (hashed together
    /// with other chunks in SHA-512 lanes, `format::sha512_lanes`): a store that names
    /// files by it takes it as given instead of hashing the bytes again. The default
    /// hashes them anyway (in `put`) and refuses an id that does not match.
    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        let got = self.put(bytes)?;
        if got != id {
            return Err(crate::error::Error::internal(format!(
                "chunk {got} was offered as {id}"
            )));
        }
        Ok(got)
    }
    /// Makes every `put` so far durable. A failed sync poisons the store: every later
    /// sync fails too, since the system may have dropped the unsynced bytes.
    fn sync(&self) -> Result<()>;
    /// True when the chunk is present here.
    fn contains(&self, id: &ChunkId) -> Result<bool>;
    /// The stored size of a chunk (NotFound when absent).
    fn size(&self, id: &ChunkId) -> Result<u64>;
    /// Removes a chunk (absent is fine).
    fn delete(&self, id: &ChunkId) -> Result<()>;
    /// True when deleting the chunk here would give its space back: this store holds it
    /// in its own writable storage and nothing else shares that copy (a clone's hard
    /// link, a fallback's folder or URL). Merges copy only such chunks' live records
    /// to free their dead ones; copying any other would store the live part twice.
    fn owns(&self, _id: &ChunkId) -> bool {
        false
    }
    /// True when every whole chunk this store returns (`get`, `get_many`) has been
    /// hashed against its name on the way (a [`verify::VerifyStore`], or stores whose
    /// every source is one): a caller need not hash it again.
    fn checks_names(&self) -> bool {
        false
    }
    /// Every chunk present.
    fn list(&self) -> Result<Vec<ChunkId>>;
    /// A short name for logs and errors (a folder path or URL).
    fn describe(&self) -> String;
}
