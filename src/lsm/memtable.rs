//! The newest writes, in memory, sorted by block; bounded by `Memtable::full`.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::format::record::SealedRecord;
use crate::lsm::entry::DataRef;

/// Flush to a run when entries exceed this.
pub const MAX_ENTRIES: usize = 32768;

/// One block's newest state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemEntry {
    /// Reads as zeros.
    Zero,
    /// A sealed record not yet in a chunk.
    Data(SealedRecord),
    /// A record a large write already stored in a data chunk (the log names it); the
    /// memtable holds only where it is.
    Stored(DataRef),
}

impl MemEntry {
    /// Stored bytes of a data entry; None for zero.
    pub fn stored_len(&self) -> Option<usize> {
        match self {
            MemEntry::Zero => None,
            MemEntry::Data(r) => Some(r.bytes.len()),
            MemEntry::Stored(d) => Some(d.len as usize),
        }
    }
}

/// Sorted in-memory writes.
#[derive(Default)]
pub struct Memtable {
    map: BTreeMap<u64, MemEntry>,
    bytes: usize,
}

impl Memtable {
    /// Inserts, replacing any older entry.
    pub fn insert(&mut self, lba: u64, e: MemEntry) {
        if let MemEntry::Data(r) = &e {
            self.bytes += r.bytes.len();
        }
        if let Some(MemEntry::Data(old)) = self.map.insert(lba, e) {
            self.bytes = self.bytes.saturating_sub(old.bytes.len());
        }
    }
    /// Entry of one block.
    pub fn get(&self, lba: u64) -> Option<&MemEntry> {
        self.map.get(&lba)
    }
    /// Entries with lba in `[a, b)`.
    pub fn range(&self, a: u64, b: u64) -> impl Iterator<Item = (&u64, &MemEntry)> {
        self.map.range((Bound::Included(a), Bound::Excluded(b)))
    }
    /// Data chunks that stored entries name.
    pub fn stored_chunks(
        &self,
        into: &mut std::collections::HashSet<crate::format::chunk_id::ChunkId>,
    ) {
        for e in self.map.values() {
            if let MemEntry::Stored(d) = e {
                into.insert(d.chunk);
            }
        }
    }
    /// True when a flush is due with at most `max_entries` entries or `max_bytes`
    /// record bytes (held in memory: stored entries hold none).
    pub fn full(&self, max_entries: usize, max_bytes: usize) -> bool {
        self.bytes >= max_bytes || self.map.len() >= max_entries
    }
    /// Stored record bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
