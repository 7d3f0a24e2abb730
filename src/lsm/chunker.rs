//! Packs sealed records into data chunks cut at content-defined boundaries.
//!
//! A chunk ends after a record whose tag's first four bytes (little-endian) fall below
//! `CUT_THRESHOLD`, once the chunk holds at least `MIN_CHUNK` bytes; it never exceeds
//! `MAX_CHUNK`. Tags are pseudo-random functions of block contents, so the same run of
//! blocks gives the same cuts and the same chunk bytes wherever it is written (in this
//! disk, a snapshot, a clone or another disk with the same key), and the store keeps
//! one copy. A record equal to one already pushed to the same chunker (the same tag
//! and bytes: sealing is deterministic) is not stored again; its entry points at the
//! first copy, so identical blocks written close together (within the few chunks not
//! yet stored) are stored once. A batch's last chunk, when shorter than half of
//! `MIN_CHUNK`, is joined to the one before it (see `Chunker::join_short_tail`).

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::record::SealedRecord;
use crate::format::sha512_lanes;
use crate::lsm::entry::{DataRef, Loc};
use crate::store::ChunkStore;

/// Smallest data chunk (except the last of a batch).
pub const MIN_CHUNK: usize = 512 << 10;
/// Largest data chunk.
pub const MAX_CHUNK: usize = 4 << 20;
/// A record ends a chunk with probability 1/256 (once past `MIN_CHUNK`).
pub const CUT_THRESHOLD: u32 = u32::MAX / 256;

/// Where a record sits: (cut index, offset, length).
type Place = (usize, u32, u32);

/// Cut chunks waiting to be stored before they are stored in parallel: bounds the
/// chunker's memory to a few chunks instead of a whole memtable's copy.
const PENDING_CUTS: usize = 8;

/// A cut chunk: its bytes until stored, then its id and size.
enum Cut {
    Pending(Vec<u8>),
    Stored(ChunkId, u32),
}

/// Accumulates records, cuts chunks, and stores them (hashing in parallel) every few
/// chunks and at `finish`.
pub struct Chunker<'a> {
    store: &'a dyn ChunkStore,
    buf: Vec<u8>,
    cuts: Vec<Cut>,
    /// Every entry pushed, in lba order: (lba, place, tag).
    entries: Vec<(u64, Place, [u8; 16])>,
    /// First copy of each record, by tag (while its bytes are still in memory).
    seen: crate::prehashed::Map<[u8; 16], Place>,
    /// Bytes of pending cuts that make them be stored.
    pending_limit: usize,
}

/// SHA-512 of each of `msgs` in lanes, in order: groups as wide as the lanes (four with
/// AVX2) hashed on up to as many threads as there are cores, since with narrow lanes
/// one thread hashing a batch of eight is slower than two threads of OpenSSL were.
fn hash_in_lanes(msgs: &[&[u8]]) -> Result<Vec<[u8; 64]>> {
    let width = sha512_lanes::width().max(1);
    let threads = crate::cpus::available().min(msgs.len().div_ceil(width));
    if threads <= 1 {
        return Ok(sha512_lanes::sha512_each(msgs));
    }
    let per = msgs.len().div_ceil(threads).div_ceil(width) * width;
    let parts = crate::threads::in_groups(msgs, per, "chunk hashing", |_, g| {
        Ok(sha512_lanes::sha512_each(g))
    })?;
    Ok(parts.concat())
}

impl<'a> Chunker<'a> {
    /// A chunker writing to `store`.
    pub fn new(store: &'a dyn ChunkStore) -> Self {
        Self {
            store,
            buf: Vec::new(),
            cuts: Vec::new(),
            entries: Vec::new(),
            seen: crate::prehashed::Map::default(),
            pending_limit: usize::MAX,
        }
    }

    /// Stores cut chunks once they hold `bytes` (as well as every `PENDING_CUTS`).
    pub fn with_pending_limit(mut self, bytes: usize) -> Self {
        self.pending_limit = bytes;
        self
    }

    /// Adds one record for block `lba` (blocks must come in increasing order).
    pub fn push(&mut self, lba: u64, rec: &SealedRecord) -> Result<()> {
        self.push_bytes(lba, &rec.bytes, rec.tag)
    }

    /// [`Chunker::push`] of a record given as its stored bytes (`ciphertext || tag`)
    /// and tag.
    pub fn push_bytes(&mut self, lba: u64, bytes: &[u8], tag: [u8; 16]) -> Result<()> {
        if let Some(&place) = self.seen.get(&tag) {
            if self.bytes_at(place) == Some(bytes) {
                self.entries.push((lba, place, tag));
                return Ok(());
            }
        }
        if self.buf.len() + bytes.len() > MAX_CHUNK {
            self.cut()?;
        }
        if self.buf.capacity() == 0 {
            // Taken when a chunk starts, not at each cut: the last cut's successor
            // would go back unused.
            self.buf = crate::buffers::shared().take_empty(MIN_CHUNK * 2);
        }
        let place = (self.cuts.len(), self.buf.len() as u32, bytes.len() as u32);
        self.buf.extend_from_slice(bytes);
        self.entries.push((lba, place, tag));
        self.seen.entry(tag).or_insert(place);
        let h = u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]);
        if self.buf.len() >= MIN_CHUNK && h < CUT_THRESHOLD {
            self.cut()?;
        }
        Ok(())
    }

    /// The bytes of a record already pushed, while its chunk is in memory.
    fn bytes_at(&self, (cut, offset, len): Place) -> Option<&[u8]> {
        let chunk = if cut == self.cuts.len() {
            &self.buf
        } else {
            match self.cuts.get(cut)? {
                Cut::Pending(b) => b,
                Cut::Stored(..) => return None,
            }
        };
        chunk.get(offset as usize..offset as usize + len as usize)
    }

    /// Appends a tail shorter than `MIN_CHUNK / 2` to the chunk cut before it, when that
    /// one is still in memory and the two fit in `MAX_CHUNK`: a batch (a large write, a
    /// memtable) then ends in no small chunk unless it is small itself. Small chunks
    /// cost a file each here and a request each for a reader of the published disk.
    fn join_short_tail(&mut self) {
        if self.buf.is_empty() || self.buf.len() >= MIN_CHUNK / 2 {
            return;
        }
        let tail = self.cuts.len();
        let Some(prev) = tail.checked_sub(1) else {
            return;
        };
        let Some(Cut::Pending(before)) = self.cuts.get_mut(prev) else {
            return;
        };
        if before.len() + self.buf.len() > MAX_CHUNK {
            return;
        }
        let shift = before.len() as u32;
        before.extend_from_slice(&self.buf);
        self.buf.clear();
        for (_, place, _) in &mut self.entries {
            if place.0 == tail {
                *place = (prev, place.1 + shift, place.2);
            }
        }
        self.seen.clear();
    }

    fn cut(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        self.cuts.push(Cut::Pending(buf));
        let (pending, bytes) = self
            .cuts
            .iter()
            .filter_map(|c| match c {
                Cut::Pending(b) => Some(b.len()),
                Cut::Stored(..) => None,
            })
            .fold((0, 0), |(n, sum), b| (n + 1, sum + b));
        if pending >= PENDING_CUTS || bytes >= self.pending_limit {
            self.store_pending()?;
        }
        Ok(())
    }

    /// Stores every pending cut, keeping only ids and sizes; their records are no
    /// longer deduplicated against. Enough cuts to fill SHA-512 lanes are hashed
    /// together on this thread (a checkpoint's batch: 3.4x OpenSSL's speed with
    /// eight); fewer are hashed each on its own thread, as the files are written.
    fn store_pending(&mut self) -> Result<()> {
        let store = self.store;
        let pending: Vec<(usize, &Vec<u8>)> = self
            .cuts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match c {
                Cut::Pending(b) => Some((i, b)),
                Cut::Stored(..) => None,
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        let ids: Vec<Option<ChunkId>> =
            if pending.len() >= sha512_lanes::MIN_LANES && sha512_lanes::lanes_available() {
                let msgs: Vec<&[u8]> = pending.iter().map(|(_, b)| b.as_slice()).collect();
                hash_in_lanes(&msgs)?
                    .iter()
                    .map(|d| Some(ChunkId::from_digest(d)))
                    .collect()
            } else {
                vec![None; pending.len()]
            };
        let jobs: Vec<(usize, Option<ChunkId>, &Vec<u8>)> = pending
            .iter()
            .zip(ids)
            .map(|((i, b), id)| (*i, id, *b))
            .collect();
        let put =
            |(i, id, buf): &(usize, Option<ChunkId>, &Vec<u8>)| -> Result<(usize, ChunkId, u32)> {
                let id = match id {
                    Some(id) => store.put_hashed(*id, buf)?,
                    None => store.put(buf)?,
                };
                Ok((*i, id, buf.len() as u32))
            };
        // One chunk (a large write's) is stored on the caller's thread: a thread
        // spawned per write costs more than it saves.
        let threads = crate::cpus::available().clamp(1, 8).min(jobs.len());
        let per = jobs.len().div_ceil(threads).max(1);
        if threads == 1 {
            let stored: Vec<(usize, ChunkId, u32)> = jobs.iter().map(put).collect::<Result<_>>()?;
            return self.mark_stored(stored);
        }
        let stored = crate::threads::in_groups(&jobs, per, "chunk writer", |_, g| {
            g.iter().map(&put).collect::<Result<Vec<_>>>()
        })?
        .concat();
        self.mark_stored(stored)
    }

    /// Records where cuts were stored; their records are no longer deduplicated against.
    fn mark_stored(&mut self, stored: Vec<(usize, ChunkId, u32)>) -> Result<()> {
        for (i, id, size) in stored {
            if let Some(c) = self.cuts.get_mut(i) {
                // The stored bytes' buffer goes back for the next chunk (a fresh one
                // each time was faulted in page by page).
                if let Cut::Pending(buf) = std::mem::replace(c, Cut::Stored(id, size)) {
                    crate::buffers::shared().give(buf);
                }
            }
        }
        let cuts = &self.cuts;
        self.seen
            .retain(|_, (cut, _, _)| matches!(cuts.get(*cut), Some(Cut::Pending(_))));
        Ok(())
    }

    /// Stores every chunk not yet stored; returns every entry in lba order.
    pub fn finish(mut self) -> Result<Vec<(u64, Loc)>> {
        self.join_short_tail();
        self.cut()?;
        self.store_pending()?;
        self.entries
            .iter()
            .map(|&(lba, (cut, offset, len), tag)| {
                let Some(Cut::Stored(id, size)) = self.cuts.get(cut) else {
                    return Err(Error::internal("chunker entry names no stored chunk"));
                };
                Ok((
                    lba,
                    Loc::Data(DataRef {
                        chunk: *id,
                        chunk_size: *size,
                        offset,
                        len,
                        tag,
                    }),
                ))
            })
            .collect()
    }
}

impl Drop for Chunker<'_> {
    /// The buffer of the chunk being filled goes back for reuse (empty after `finish`).
    fn drop(&mut self) {
        crate::buffers::shared().give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    use crate::format::chunk_id::ChunkId;
    use crate::format::crypto::{DiskKey, Keys};
    use crate::format::record::seal_block;
    use crate::store::memory::MemoryStore;
    use crate::store::ChunkStore;

    #[test]
    fn a_batch_hashed_in_groups_on_several_threads_keeps_each_digest_in_its_place() -> Result<()> {
        let msgs: Vec<Vec<u8>> = (0..10)
            .map(|j| crate::format::test_noise(1000 * j + 7 * j * j, j as u64))
            .collect();
        // With helper threads, and as at a thread limit (every group on the caller).
        for (n, refuse) in (1..=msgs.len()).flat_map(|n| [(n, false), (n, true)]) {
            let refs: Vec<&[u8]> = msgs[..n].iter().map(Vec::as_slice).collect();
            let got = if refuse {
                crate::threads::with_no_threads(|| hash_in_lanes(&refs))?
            } else {
                hash_in_lanes(&refs)?
            };
            assert_eq!(got.len(), n);
            for (m, d) in msgs[..n].iter().zip(&got) {
                assert_eq!(
                    d,
                    &openssl::sha::sha512(m),
                    "{n} messages, length {}",
                    m.len()
                );
            }
        }
        Ok(())
    }

    #[test]
    fn equal_records_are_stored_once_and_both_entries_read_them() -> Result<()> {
        let keys = Keys::new(&DiskKey([7; 32]))?;
        let store = MemoryStore::default();
        let a = seal_block(&keys, &[1u8; 4096])?;
        let b = seal_block(&keys, &[2u8; 4096])?;
        let mut c = Chunker::new(&store);
        c.push(10, &a)?;
        c.push(11, &b)?;
        c.push(12, &a)?;
        let out = c.finish()?;
        let locs: Vec<DataRef> = out
            .iter()
            .filter_map(|(_, l)| match l {
                Loc::Data(d) => Some(*d),
                Loc::Zero => None,
            })
            .collect();
        assert_eq!(
            out.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![10, 11, 12]
        );
        assert_eq!(locs.len(), 3);
        assert_eq!(locs[0], locs[2], "the repeat points at the first copy");
        assert_ne!(locs[0].offset, locs[1].offset);
        let chunk = store.get(&locs[0].chunk)?;
        assert_eq!(chunk.len(), a.bytes.len() + b.bytes.len(), "stored once");
        Ok(())
    }

    /// A store on disk, so that chunk files are named by the lanes' hashes (the
    /// memory store hashes again and refuses a wrong name itself).
    #[test]
    fn chunks_hashed_together_in_lanes_are_named_by_their_bytes_and_read_back() -> Result<()> {
        let keys = Keys::new(&DiskKey([5; 32]))?;
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::local::LocalStore::open(dir.path())?;
        let mut c = Chunker::new(&store).with_pending_limit(usize::MAX);
        let mut want = Vec::new();
        // About 12 MB of records (noise, every other byte zero): a dozen chunks,
        // stored eight and then the rest together.
        for lba in 0..5000u64 {
            let mut block = crate::format::test_noise(4096, lba);
            block.iter_mut().skip(1).step_by(2).for_each(|b| *b = 0);
            let r = seal_block(&keys, &block)?;
            c.push(lba, &r)?;
            want.push(r);
        }
        let out = c.finish()?;
        let mut chunks = HashSet::new();
        for ((lba, loc), rec) in out.iter().zip(&want) {
            let Loc::Data(d) = loc else {
                panic!("block {lba} placed as zero");
            };
            chunks.insert(d.chunk);
            let bytes = store.get_range(&d.chunk, u64::from(d.offset), d.len as usize)?;
            assert_eq!(bytes, rec.bytes, "block {lba}");
        }
        assert!(chunks.len() >= 9, "{} chunks", chunks.len());
        for id in &chunks {
            assert_eq!(ChunkId::of(&store.get(id)?), *id, "file named by its bytes");
        }
        Ok(())
    }

    #[test]
    fn a_short_tail_joins_the_chunk_before_it() -> Result<()> {
        let keys = Keys::new(&DiskKey([9; 32]))?;
        let store = MemoryStore::default();
        let mut c = Chunker::new(&store);
        let block = |i: u64| crate::format::test_noise(4096, i);
        let mut records = Vec::new();
        let mut lba = 0;
        // Until the first cut, then five records more: a tail of about 20 KB.
        while c.cuts.is_empty() {
            let r = seal_block(&keys, &block(lba))?;
            c.push(lba, &r)?;
            records.push(r);
            lba += 1;
        }
        for _ in 0..5 {
            let r = seal_block(&keys, &block(lba))?;
            c.push(lba, &r)?;
            records.push(r);
            lba += 1;
        }
        let out = c.finish()?;
        let chunks: HashSet<ChunkId> = out
            .iter()
            .filter_map(|(_, l)| match l {
                Loc::Data(d) => Some(d.chunk),
                Loc::Zero => None,
            })
            .collect();
        assert_eq!(chunks.len(), 1, "the tail was stored as a chunk of its own");
        for ((_, loc), rec) in out.iter().zip(&records) {
            let Loc::Data(d) = loc else {
                panic!("a data block placed as zero");
            };
            let bytes = store.get_range(&d.chunk, u64::from(d.offset), d.len as usize)?;
            assert_eq!(bytes, rec.bytes, "a record moved with the tail reads wrong");
            assert_eq!(d.tag, rec.tag);
        }
        Ok(())
    }
}
