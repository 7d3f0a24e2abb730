//! Remembers the id of every chunk put through it, so garbage collection can consider
//! chunks this process wrote that no root ended up naming (a checkpoint that failed
//! half-way) without ever guessing about chunks it did not write; counts reads too
//! (whole chunks and ranges, with the bytes of ranges).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::ChunkStore;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

/// Records puts in front of `inner`.
pub struct RecordingStore {
    inner: Arc<dyn ChunkStore>,
    put: Mutex<HashSet<ChunkId>>,
    gets: std::sync::atomic::AtomicU64,
    ranges: std::sync::atomic::AtomicU64,
    range_bytes: std::sync::atomic::AtomicU64,
}

impl RecordingStore {
    /// Records puts to `inner`.
    pub fn new(inner: Arc<dyn ChunkStore>) -> Self {
        Self {
            inner,
            put: Mutex::new(HashSet::new()),
            gets: std::sync::atomic::AtomicU64::new(0),
            ranges: std::sync::atomic::AtomicU64::new(0),
            range_bytes: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whole-chunk reads so far.
    pub fn gets(&self) -> u64 {
        self.gets.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Range reads so far, and the bytes they asked for.
    pub fn ranges(&self) -> (u64, u64) {
        (
            self.ranges.load(std::sync::atomic::Ordering::Relaxed),
            self.range_bytes.load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// Notes a chunk put, returning its id.
    fn record(&self, id: ChunkId) -> Result<ChunkId> {
        self.put
            .lock()
            .map_err(|_| Error::internal("recording store lock poisoned"))?
            .insert(id);
        Ok(id)
    }

    fn count_range(&self, len: usize) {
        self.ranges
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.range_bytes
            .fetch_add(len as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// The ids put since the last call.
    pub fn take_put(&self) -> Result<HashSet<ChunkId>> {
        Ok(std::mem::take(&mut *self.put.lock().map_err(|_| {
            Error::internal("recording store lock poisoned")
        })?))
    }
}

impl ChunkStore for RecordingStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.get(id)
    }
    fn get_many(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>>> {
        self.gets
            .fetch_add(ids.len() as u64, std::sync::atomic::Ordering::Relaxed);
        self.inner.get_many(ids)
    }
    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.count_range(len);
        self.inner.get_range(id, offset, len)
    }
    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.count_range(len);
        self.inner.read_verified(id, offset, len, accept)
    }
    /// Counted as the range read it replaces, and passed on as a warming: a cache
    /// behind that holds the range answers without reading it.
    fn warm_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<()> {
        self.count_range(len);
        self.inner.warm_range(id, offset, len)
    }
    /// Counted as a whole-chunk read, passed on as a warming.
    fn warm_whole(&self, id: &ChunkId) -> Result<()> {
        self.gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.warm_whole(id)
    }
    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        let id = self.inner.put(bytes)?;
        self.record(id)
    }
    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        let id = self.inner.put_hashed(id, bytes)?;
        self.record(id)
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
    fn checks_names(&self) -> bool {
        self.inner.checks_names()
    }
}
