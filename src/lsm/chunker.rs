//! Packs sealed records into data chunks cut at content-defined boundaries.
//!
//! A chunk ends after a record whose tag's first four bytes (little-endian) fall below
//! `CUT_THRESHOLD`, once the chunk holds at least `MIN_CHUNK` bytes; it never exceeds
//! `MAX_CHUNK`. Tags are pseudo-random functions of block contents, so the same run of
//! blocks gives the same cuts and the same chunk bytes wherever it is written (in this
//! disk, a snapshot, a clone or another disk with the same key), and the store keeps
//! one copy.

use crate::error::Result;
use crate::format::record::SealedRecord;
use crate::lsm::entry::{DataRef, Loc};
use crate::store::ChunkStore;

/// Smallest data chunk (except the last of a batch).
pub const MIN_CHUNK: usize = 128 << 10;
/// Largest data chunk.
pub const MAX_CHUNK: usize = 4 << 20;
/// A record ends a chunk with probability 1/128.
pub const CUT_THRESHOLD: u32 = u32::MAX / 128;

/// Accumulates records and writes chunks.
pub struct Chunker<'a> {
    store: &'a dyn ChunkStore,
    buf: Vec<u8>,
    pending: Vec<(u64, u32, u32, [u8; 16])>,
    out: Vec<(u64, Loc)>,
    /// Bytes of chunks written (new or already present).
    pub chunk_bytes: u64,
}

impl<'a> Chunker<'a> {
    /// A chunker writing to `store`.
    pub fn new(store: &'a dyn ChunkStore) -> Self {
        Self {
            store,
            buf: Vec::with_capacity(MIN_CHUNK * 2),
            pending: Vec::new(),
            out: Vec::new(),
            chunk_bytes: 0,
        }
    }

    /// Adds one record for block `lba` (blocks must come in increasing order).
    pub fn push(&mut self, lba: u64, rec: &SealedRecord) -> Result<()> {
        if self.buf.len() + rec.bytes.len() > MAX_CHUNK {
            self.cut()?;
        }
        let offset = self.buf.len() as u32;
        self.buf.extend_from_slice(&rec.bytes);
        self.pending
            .push((lba, offset, rec.bytes.len() as u32, rec.tag));
        let h = u32::from_le_bytes([rec.tag[0], rec.tag[1], rec.tag[2], rec.tag[3]]);
        if self.buf.len() >= MIN_CHUNK && h < CUT_THRESHOLD {
            self.cut()?;
        }
        Ok(())
    }

    fn cut(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let id = self.store.put(&self.buf)?;
        let size = self.buf.len() as u32;
        self.chunk_bytes += u64::from(size);
        for (lba, offset, len, tag) in self.pending.drain(..) {
            self.out.push((
                lba,
                Loc::Data(DataRef {
                    chunk: id,
                    chunk_size: size,
                    offset,
                    len,
                    tag,
                }),
            ));
        }
        self.buf.clear();
        Ok(())
    }

    /// Writes the last chunk; returns every entry in lba order.
    pub fn finish(mut self) -> Result<Vec<(u64, Loc)>> {
        self.cut()?;
        Ok(self.out)
    }
}
