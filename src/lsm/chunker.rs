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

/// A cut chunk waiting to be hashed and stored, with its records.
type Cut = (Vec<u8>, Vec<(u64, u32, u32, [u8; 16])>);

/// Accumulates records, cuts chunks, and stores them (hashing in parallel) at `finish`.
/// Holds at most one memtable's worth of records.
pub struct Chunker<'a> {
    store: &'a dyn ChunkStore,
    buf: Vec<u8>,
    pending: Vec<(u64, u32, u32, [u8; 16])>,
    cuts: Vec<Cut>,
}

impl<'a> Chunker<'a> {
    /// A chunker writing to `store`.
    pub fn new(store: &'a dyn ChunkStore) -> Self {
        Self {
            store,
            buf: Vec::with_capacity(MIN_CHUNK * 2),
            pending: Vec::new(),
            cuts: Vec::new(),
        }
    }

    /// Adds one record for block `lba` (blocks must come in increasing order).
    pub fn push(&mut self, lba: u64, rec: &SealedRecord) -> Result<()> {
        if self.buf.len() + rec.bytes.len() > MAX_CHUNK {
            self.cut();
        }
        let offset = self.buf.len() as u32;
        self.buf.extend_from_slice(&rec.bytes);
        self.pending
            .push((lba, offset, rec.bytes.len() as u32, rec.tag));
        let h = u32::from_le_bytes([rec.tag[0], rec.tag[1], rec.tag[2], rec.tag[3]]);
        if self.buf.len() >= MIN_CHUNK && h < CUT_THRESHOLD {
            self.cut();
        }
        Ok(())
    }

    fn cut(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let buf = std::mem::replace(&mut self.buf, Vec::with_capacity(MIN_CHUNK * 2));
        self.cuts.push((buf, std::mem::take(&mut self.pending)));
    }

    /// Stores every chunk (SHA-512 and writes spread over the cores); returns every
    /// entry in lba order.
    pub fn finish(mut self) -> Result<Vec<(u64, Loc)>> {
        self.cut();
        let store = self.store;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, 8);
        let per = self.cuts.len().div_ceil(threads).max(1);
        let results: Vec<Result<Vec<(u64, Loc)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = self
                .cuts
                .chunks(per)
                .map(|group| {
                    s.spawn(move || -> Result<Vec<(u64, Loc)>> {
                        let mut out = Vec::new();
                        for (buf, recs) in group {
                            let id = store.put(buf)?;
                            let size = buf.len() as u32;
                            out.extend(recs.iter().map(|&(lba, offset, len, tag)| {
                                (
                                    lba,
                                    Loc::Data(DataRef {
                                        chunk: id,
                                        chunk_size: size,
                                        offset,
                                        len,
                                        tag,
                                    }),
                                )
                            }));
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(crate::error::Error::invalid("chunk writer panicked"))
                    })
                })
                .collect()
        });
        let mut out = Vec::new();
        for r in results {
            out.extend(r?);
        }
        Ok(out)
    }
}
