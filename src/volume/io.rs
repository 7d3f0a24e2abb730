//! Block I/O at any byte alignment: whole blocks are compressed and sealed in parallel
//! before the engine's write lock is taken; partial head and tail blocks are read before
//! it too, and modified and written inside one engine update after checking (under the
//! lock) that no other write changed them meanwhile, so overlapping sub-4 KiB writes
//! can never lose each other's bytes.

use super::{Volume, BS};
use crate::error::{Error, Result};
use crate::format::record::{is_zero, PackedRecords, SealedRecord};
use crate::format::BLOCK_SIZE;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Blocks read per window (bounds memory on huge requests).
const WINDOW: u64 = 8192;

/// Writes with at least this many whole data blocks (256 KiB) skip the log's copy of
/// their records: a chunk of this size is still worth a file of its own.
pub const DIRECT_MIN_BLOCKS: usize = 64;

/// What one range of bytes holds, for `block_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    /// Length in bytes.
    pub length: u64,
    /// False when the range reads as zeros without stored data (hole or zeroed).
    pub allocated: bool,
}

/// The bytes `[from, to)` of the request at `offset` that fall in block `lba`, as
/// (offset in the block, offset in the request, length).
fn overlap(lba: u64, offset: u64, len: u64) -> (usize, usize, usize) {
    let start = lba * BS;
    let from = offset.max(start);
    let to = (offset + len).min(start + BS);
    (
        (from - start) as usize,
        (from - offset) as usize,
        (to - from) as usize,
    )
}

impl Volume {
    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(Error::invalid(format!(
                "range {offset}+{len} is past the end of the {}-byte disk",
                self.size()
            ))),
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let len = buf.len() as u64;
        if let (Some(ra), Ok(engine)) = (&self.readahead, self.engine()) {
            ra.observe(engine, offset, len);
        }
        let last = (offset + len - 1) / BS;
        let mut lba = offset / BS;
        let aligned = offset.is_multiple_of(BS) && len.is_multiple_of(BS);
        let mut window = Vec::new();
        while lba <= last {
            let n = (last + 1 - lba).min(WINDOW);
            if aligned {
                // Straight into the caller's buffer.
                let at = ((lba * BS) - offset) as usize;
                let dst = buf
                    .get_mut(at..at + (n * BS) as usize)
                    .ok_or_else(|| Error::internal("aligned read window"))?;
                self.read_blocks(lba, dst)?;
            } else {
                window.resize((n * BS) as usize, 0);
                self.read_blocks(lba, &mut window)?;
                let (from, to) = (offset.max(lba * BS), (offset + len).min((lba + n) * BS));
                let src = window
                    .get((from - lba * BS) as usize..(to - lba * BS) as usize)
                    .ok_or_else(|| Error::internal("read window"))?;
                buf.get_mut((from - offset) as usize..(to - offset) as usize)
                    .ok_or_else(|| Error::internal("read window"))?
                    .copy_from_slice(src);
            }
            lba += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset`. Whole blocks of a write with at least
    /// [`DIRECT_MIN_BLOCKS`] of data are stored in data chunks before the log names
    /// them ([`crate::lsm::engine::Engine::store_records`]); the rest are logged.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_then(offset, data, true)
    }

    /// [`Volume::write_at`] that leaves the log's new ops buffered: acknowledge the
    /// write only after [`Volume::hand_off`], which hands every write so far to the
    /// kernel in one write(2) (the NBD server's batches of small writes).
    pub fn write_held(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.write_then(offset, data, false)
    }

    /// Writes buffered log ops to the log file (no fsync): every write so far then
    /// survives a crash of this process, though not a power cut.
    pub fn hand_off(&self) -> Result<()> {
        match self.engine() {
            Ok(e) => e.hand_off(),
            Err(_) => Ok(()),
        }
    }

    fn write_then(&self, offset: u64, data: &[u8], hand_off: bool) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let len = data.len() as u64;
        let end = offset + len;
        let first_full = offset.div_ceil(BS);
        let end_full = end / BS;
        // Seal whole blocks before taking the lock.
        let sealed = if first_full < end_full {
            let start = (first_full * BS - offset) as usize;
            let bytes = data
                .get(start..start + ((end_full - first_full) * BS) as usize)
                .ok_or_else(|| Error::internal("write split"))?;
            self.seal_all(bytes, first_full)?
        } else {
            SealedBlocks::Each(Vec::new())
        };
        let engine = self.engine()?;
        // Partial head and tail blocks: read outside the lock (a slow store stalls no
        // one), then under it checked to be still the newest version, read again there
        // in the rare case another write changed them meanwhile. So overlapping
        // sub-4 KiB writes never lose each other's bytes. Read before a large write's
        // chunks are stored: those hold collection off until the update names them.
        let mut partial = [offset / BS, (end - 1) / BS];
        if partial[0] == partial[1] {
            partial[1] = u64::MAX;
        }
        let mut heads = Vec::with_capacity(2);
        for lba in partial {
            if lba == u64::MAX || (lba >= first_full && lba < end_full) {
                continue;
            }
            let mut block = vec![0u8; BLOCK_SIZE];
            let seen = engine
                .read_versioned(lba, &mut block)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::internal("a one-block read saw no version"))?;
            heads.push((lba, block, seen));
        }
        // A large write's records go straight into data chunks, and the log names them.
        // Which blocks hold data: a stored write's records are in its chunks.
        let (is_data, full, stored) = match sealed {
            SealedBlocks::Each(full) => (full.iter().map(Option::is_some).collect(), full, None),
            SealedBlocks::Packed { parts, zero } => {
                let is_data: Vec<bool> = zero.iter().map(|z| !z).collect();
                let mut full: Vec<Option<SealedRecord>> = vec![None; zero.len()];
                let data_blocks: usize = parts.iter().map(PackedRecords::len).sum();
                let stored = if data_blocks >= DIRECT_MIN_BLOCKS {
                    Some(engine.store_records(parts)?)
                } else {
                    // Mostly zeroes: the few records go to the memtable, each its own.
                    for (lba, r) in parts.iter().flat_map(PackedRecords::to_records) {
                        let slot = lba
                            .checked_sub(first_full)
                            .and_then(|i| full.get_mut(i as usize))
                            .ok_or_else(|| Error::internal("packed record outside its write"))?;
                        *slot = Some(r);
                    }
                    None
                };
                (is_data, full, stored)
            }
        };
        let update = |batch: &mut crate::lsm::engine::Batch<'_>| -> Result<()> {
            if let Some(w) = stored {
                batch.put_stored(w)?;
            }
            for (i, rec) in full.into_iter().enumerate() {
                let lba = first_full + i as u64;
                match rec {
                    Some(r) => batch.put(lba, r)?,
                    // Stored in a chunk above.
                    None if is_data.get(i) == Some(&true) => {}
                    None => batch.zero(lba, 1)?,
                }
            }
            for (lba, mut block, seen) in heads {
                if !batch.unchanged(lba, seen)? {
                    batch.read_blocks(lba, &mut block)?;
                }
                let (in_block, in_data, n) = overlap(lba, offset, len);
                block
                    .get_mut(in_block..in_block + n)
                    .ok_or_else(|| Error::internal("write split"))?
                    .copy_from_slice(
                        data.get(in_data..in_data + n)
                            .ok_or_else(|| Error::internal("write split"))?,
                    );
                if is_zero(&block) {
                    batch.zero(lba, 1)?;
                } else {
                    batch.put(lba, engine.seal_block(&block)?)?;
                }
            }
            Ok(())
        };
        if hand_off {
            engine.update(update)
        } else {
            engine.update_held(update)
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable() {
            Ok(())
        } else {
            Err(Error::invalid("disk is open read-only"))
        }
    }

    /// Seals the whole blocks `bytes` (the first is block `first_lba`): each its own
    /// record for a write too small to be stored in chunks directly, packed otherwise.
    fn seal_all(&self, bytes: &[u8], first_lba: u64) -> Result<SealedBlocks> {
        let engine = self.engine()?;
        let blocks = bytes.len() / BLOCK_SIZE;
        if blocks < DIRECT_MIN_BLOCKS {
            let seal = |_first: usize, part: &[u8]| -> Result<Vec<Option<SealedRecord>>> {
                part.chunks(BLOCK_SIZE)
                    .map(|b| {
                        if is_zero(b) {
                            Ok(None)
                        } else {
                            engine.seal_block(b).map(Some)
                        }
                    })
                    .collect()
            };
            let parts = in_parallel(bytes, seal)?;
            return Ok(SealedBlocks::Each(parts.into_iter().flatten().collect()));
        }
        let zero: Vec<bool> = bytes.chunks(BLOCK_SIZE).map(is_zero).collect();
        // Each part is sealed into one buffer, not an allocation per record.
        let seal = |first: usize, part: &[u8]| -> Result<PackedRecords> {
            let mut packed = PackedRecords::for_blocks(part.len() / BLOCK_SIZE);
            for (k, b) in part.chunks(BLOCK_SIZE).enumerate() {
                if zero.get(first + k) == Some(&false) {
                    engine.seal_packed(&mut packed, first_lba + (first + k) as u64, b)?;
                }
            }
            Ok(packed)
        };
        let parts = in_parallel(bytes, seal)?;
        Ok(SealedBlocks::Packed { parts, zero })
    }

    /// Makes `len` bytes at `offset` read as zeros (partial blocks are written).
    pub fn write_zeroes(&self, offset: u64, len: u64) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        let end = offset + len;
        let first_full = offset.div_ceil(BS);
        let end_full = end / BS;
        if first_full >= end_full {
            return self.write_at(offset, &vec![0u8; len as usize]);
        }
        if offset < first_full * BS {
            self.write_at(offset, &vec![0u8; (first_full * BS - offset) as usize])?;
        }
        if end > end_full * BS {
            self.write_at(end_full * BS, &vec![0u8; (end - end_full * BS) as usize])?;
        }
        let engine = self.engine()?;
        // Behind a URL, the index nodes the zero resolves are read before the lock is
        // taken (a local disk reads them under it at no wait: no need to walk twice).
        if !self.local_only {
            engine.warm_index(first_full, end_full - first_full)?;
        }
        engine.update(|batch| batch.zero(first_full, end_full - first_full))
    }

    /// Discards a range; it reads as zeros afterwards.
    pub fn trim(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    /// Which parts of `offset..offset+len` hold data, from the index alone.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.check_range(offset, len)?;
        let mut out: Vec<Extent> = Vec::new();
        let end = offset + len;
        let mut lba = offset / BS;
        while lba * BS < end {
            let n = (end.div_ceil(BS) - lba).min(WINDOW);
            for (i, allocated) in self.allocated(lba, n)?.into_iter().enumerate() {
                let (_, _, length) = overlap(lba + i as u64, offset, len);
                let length = length as u64;
                match out.last_mut() {
                    Some(e) if e.allocated == allocated => e.length += length,
                    _ => out.push(Extent { length, allocated }),
                }
            }
            lba += n;
        }
        Ok(out)
    }
}

/// A write's whole blocks, sealed.
enum SealedBlocks {
    /// One record each (None for a zero block): writes of fewer than
    /// [`DIRECT_MIN_BLOCKS`] blocks, whose records go to the memtable.
    Each(Vec<Option<SealedRecord>>),
    /// Records packed, one buffer per sealing thread in block order, and which blocks
    /// are zero.
    Packed {
        parts: Vec<PackedRecords>,
        zero: Vec<bool>,
    },
}

/// Runs `f` on pieces of `bytes` (whole blocks; `f` gets the index of the piece's first
/// block and the piece) and returns its results in order: on the caller's thread, or
/// for 32 blocks and more on up to one thread per core while other writes sealing at
/// once leave cores free.
fn in_parallel<T: Send>(
    bytes: &[u8],
    f: impl Fn(usize, &[u8]) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let blocks = bytes.len() / BLOCK_SIZE;
    let threads = crate::cpus::available().min(8);
    // Small writes never split, so they skip the shared counter (two atomic
    // operations on one cache line per 4 KiB write, for nothing).
    if blocks < 32 || threads < 2 {
        return Ok(vec![f(0, bytes)?]);
    }
    // Large writes sealing at once: while they already keep the cores busy, a
    // write seals on its own thread. A thread spawned per write (two per 256 KiB
    // write of an `nbdcopy` with 64 in flight) cost 6-7% of the server's samples
    // in thread creation, exit and the stack unmap's TLB shootdowns, for no
    // parallelism.
    let sealing = Sealing::enter();
    if sealing.others >= threads - 1 {
        return Ok(vec![f(0, bytes)?]);
    }
    let per_blocks = blocks.div_ceil(threads);
    // The caller seals the first share itself: one thread fewer to spawn.
    crate::threads::in_groups(bytes, per_blocks * BLOCK_SIZE, "sealing", |k, p| {
        f(k * per_blocks, p)
    })
}

/// Counts large writes sealing their blocks now (process-wide), for as long as it
/// lives.
struct Sealing {
    /// Writes that were sealing when this one began.
    others: usize,
}

static SEALING: AtomicUsize = AtomicUsize::new(0);

impl Sealing {
    fn enter() -> Self {
        Self {
            others: SEALING.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Drop for Sealing {
    fn drop(&mut self) {
        SEALING.fetch_sub(1, Ordering::Relaxed);
    }
}
