//! Block I/O at any byte alignment: reads resolve the memtable then the levels and fetch
//! records with coalesced range reads; writes seal whole blocks in parallel outside the
//! lock and read-modify-write partial blocks under it.

use std::sync::RwLockReadGuard;

use super::{lock_err, State, VolumeCore, BS};
use crate::error::{Error, Result};
use crate::format::record::{is_zero, open_record, seal_block, SealedRecord};
use crate::format::wal::WalOp;
use crate::format::BLOCK_SIZE;
use crate::lsm::entry::{DataRef, Loc};
use crate::lsm::memtable::MemEntry;

/// Blocks resolved per window (bounds memory on huge requests).
const WINDOW: u64 = 8192;
/// Largest coalesced range read.
const MAX_COALESCE: u32 = 1 << 20;

/// What one range of blocks holds, for `block_status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Extent {
    /// Length in bytes.
    pub length: u64,
    /// False when the range reads as zeros without stored data (hole or zeroed).
    pub allocated: bool,
}

enum Slot {
    Zero,
    Mem(SealedRecord),
    Disk(DataRef),
}

impl VolumeCore {
    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        if buf.is_empty() {
            return Ok(());
        }
        let st = self.state.read().map_err(|_| lock_err())?;
        self.read_locked(&st, offset, buf)
    }

    fn read_locked(&self, st: &State, offset: u64, buf: &mut [u8]) -> Result<()> {
        let first = offset / BS;
        let last = (offset + buf.len() as u64 - 1) / BS;
        let mut lba = first;
        while lba <= last {
            let n = (last + 1 - lba).min(WINDOW);
            let mut blocks = vec![0u8; (n * BS) as usize];
            self.read_blocks(st, lba, &mut blocks)?;
            // Copy the overlap of this window with the request.
            let win_start = lba * BS;
            let win_end = win_start + n * BS;
            let from = offset.max(win_start);
            let to = (offset + buf.len() as u64).min(win_end);
            let src = blocks
                .get((from - win_start) as usize..(to - win_start) as usize)
                .ok_or_else(|| Error::invalid("read window"))?;
            buf.get_mut((from - offset) as usize..(to - offset) as usize)
                .ok_or_else(|| Error::invalid("read window"))?
                .copy_from_slice(src);
            lba += n;
        }
        Ok(())
    }

    fn resolve(&self, st: &State, a: u64, n: u64) -> Result<Vec<Option<Slot>>> {
        let mut slots: Vec<Option<Slot>> = (0..n).map(|_| None).collect();
        // The memtable first, then the frozen one for blocks it does not hold.
        let frozen = st.frozen.as_deref().into_iter();
        for table in std::iter::once(&st.mem).chain(frozen) {
            for (lba, e) in table.range(a, a + n) {
                if let Some(s @ None) = slots.get_mut((lba - a) as usize) {
                    *s = Some(match e {
                        MemEntry::Zero => Slot::Zero,
                        MemEntry::Data(r) => Slot::Mem(r.clone()),
                    });
                }
            }
        }
        let mut locs: Vec<Option<Loc>> = slots
            .iter()
            .map(|s| s.as_ref().map(|_| Loc::Zero))
            .collect();
        st.tree.resolve(&self.ctx, a, &mut locs)?;
        for (s, l) in slots.iter_mut().zip(locs) {
            if s.is_none() {
                *s = match l {
                    None | Some(Loc::Zero) => None,
                    Some(Loc::Data(d)) => Some(Slot::Disk(d)),
                };
            }
        }
        Ok(slots)
    }

    /// Fills whole blocks `a..` into `out` (a multiple of the block size, zeroed).
    fn read_blocks(&self, st: &State, a: u64, out: &mut [u8]) -> Result<()> {
        let n = (out.len() / BLOCK_SIZE) as u64;
        let slots = self.resolve(st, a, n)?;
        let mut disk: Vec<(usize, DataRef)> = Vec::new();
        for (i, s) in slots.into_iter().enumerate() {
            match s {
                None | Some(Slot::Zero) => {}
                Some(Slot::Mem(r)) => {
                    let dst = block_mut(out, i)?;
                    open_record(&self.ctx.keys, &r.bytes, &r.tag, dst)?;
                }
                Some(Slot::Disk(d)) => disk.push((i, d)),
            }
        }
        disk.sort_unstable_by_key(|x| (x.1.chunk, x.1.offset));
        let mut i = 0;
        while i < disk.len() {
            // Coalesce records that sit back to back in one chunk into one read.
            let (_, head) = disk[i];
            let mut j = i + 1;
            let mut end = head.offset + head.len;
            while let Some((_, d)) = disk.get(j) {
                if d.chunk != head.chunk
                    || d.offset != end
                    || end - head.offset + d.len > MAX_COALESCE
                {
                    break;
                }
                end += d.len;
                j += 1;
            }
            let bytes = self
                .ctx
                .store
                .get_range(
                    &head.chunk,
                    u64::from(head.offset),
                    (end - head.offset) as usize,
                )
                .map_err(|e| e.context(format!("reading block {}", a + disk[i].0 as u64)))?;
            for (idx, d) in disk.get(i..j).unwrap_or_default() {
                let rel = (d.offset - head.offset) as usize;
                let rec = bytes
                    .get(rel..rel + d.len as usize)
                    .ok_or_else(|| Error::corrupt("short range read"))?;
                open_record(&self.ctx.keys, rec, &d.tag, block_mut(out, *idx)?).map_err(|e| {
                    e.context(format!(
                        "block {} (chunk {} offset {})",
                        a + *idx as u64,
                        d.chunk,
                        d.offset
                    ))
                })?;
            }
            i = j;
        }
        Ok(())
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.check_range(offset, data.len() as u64)?;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset + data.len() as u64;
        let first_full = offset.div_ceil(BS);
        let end_full = end / BS;
        // Seal whole blocks before taking the lock.
        let full: Vec<Option<SealedRecord>> = if first_full < end_full {
            let start = (first_full * BS - offset) as usize;
            let bytes = data
                .get(start..start + ((end_full - first_full) * BS) as usize)
                .ok_or_else(|| Error::invalid("write split"))?;
            self.seal_all(bytes)?
        } else {
            Vec::new()
        };
        let mut st = self.state.write().map_err(|_| lock_err())?;
        // Partial head and tail blocks: read-modify-write under the lock.
        let mut partial: Vec<(u64, Option<SealedRecord>)> = Vec::new();
        for lba in [offset / BS, (end - 1) / BS] {
            let covered = lba >= first_full && lba < end_full;
            if covered || partial.iter().any(|p| p.0 == lba) {
                continue;
            }
            let mut block = vec![0u8; BLOCK_SIZE];
            self.read_blocks(&st, lba, &mut block)?;
            let bstart = lba * BS;
            let from = offset.max(bstart);
            let to = end.min(bstart + BS);
            block
                .get_mut((from - bstart) as usize..(to - bstart) as usize)
                .ok_or_else(|| Error::invalid("write split"))?
                .copy_from_slice(
                    data.get((from - offset) as usize..(to - offset) as usize)
                        .ok_or_else(|| Error::invalid("write split"))?,
                );
            let rec = if is_zero(&block) {
                None
            } else {
                Some(seal_block(&self.ctx.keys, &block)?)
            };
            partial.push((lba, rec));
        }
        let blocks = full
            .into_iter()
            .enumerate()
            .map(|(i, r)| (first_full + i as u64, r))
            .chain(partial);
        for (lba, rec) in blocks {
            match rec {
                Some(r) => {
                    self.log_data(lba, &r.bytes)?;
                    st.mem.insert(lba, MemEntry::Data(r));
                }
                None => self.zero_locked(&mut st, lba, 1, Some(()))?,
            }
        }
        let wait = self.after_write(&mut st)?;
        drop(st);
        if wait {
            self.wait_for_checkpoint()?;
        }
        Ok(())
    }

    fn seal_all(&self, bytes: &[u8]) -> Result<Vec<Option<SealedRecord>>> {
        let seal = |part: &[u8]| -> Result<Vec<Option<SealedRecord>>> {
            part.chunks(BLOCK_SIZE)
                .map(|b| {
                    if is_zero(b) {
                        Ok(None)
                    } else {
                        seal_block(&self.ctx.keys, b).map(Some)
                    }
                })
                .collect()
        };
        let blocks = bytes.len() / BLOCK_SIZE;
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(8);
        if blocks < 32 || threads < 2 {
            return seal(bytes);
        }
        let per = blocks.div_ceil(threads) * BLOCK_SIZE;
        let results: Vec<Result<Vec<Option<SealedRecord>>>> = std::thread::scope(|s| {
            let handles: Vec<_> = bytes
                .chunks(per)
                .map(|p| s.spawn(move || seal(p)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::invalid("sealing thread panicked")))
                })
                .collect()
        });
        let mut out = Vec::with_capacity(blocks);
        for r in results {
            out.extend(r?);
        }
        Ok(out)
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
        let mut st = self.state.write().map_err(|_| lock_err())?;
        let mut lba = first_full;
        while lba < end_full {
            let n = (end_full - lba).min(u64::from(u32::MAX));
            self.zero_locked(&mut st, lba, n, Some(()))?;
            lba += n;
        }
        let wait = self.after_write(&mut st)?;
        drop(st);
        if wait {
            self.wait_for_checkpoint()?;
        }
        Ok(())
    }

    /// Discards a range; it reads as zeros afterwards.
    pub fn trim(&self, offset: u64, len: u64) -> Result<()> {
        self.write_zeroes(offset, len)
    }

    /// Marks blocks `a..a+n` zero where anything is stored; logs the op when `log` is set.
    pub(super) fn zero_locked(
        &self,
        st: &mut State,
        a: u64,
        n: u64,
        log: Option<()>,
    ) -> Result<()> {
        if a.checked_add(n).is_none_or(|e| e > self.size / BS) {
            return Err(Error::invalid(format!("zero range {a}+{n} past the end")));
        }
        if log.is_some() {
            self.log(&WalOp::Zero {
                lba: a,
                count: u32::try_from(n).unwrap_or(u32::MAX),
            })?;
        }
        let mut lba = a;
        while lba < a + n {
            let w = (a + n - lba).min(WINDOW);
            let slots = self.resolve(st, lba, w)?;
            for (i, s) in slots.iter().enumerate() {
                if matches!(s, Some(Slot::Mem(_)) | Some(Slot::Disk(_))) {
                    st.mem.insert(lba + i as u64, MemEntry::Zero);
                }
            }
            lba += w;
        }
        Ok(())
    }

    /// Which parts of `offset..offset+len` hold data, from the index alone.
    pub fn block_status(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.check_range(offset, len)?;
        let st: RwLockReadGuard<'_, State> = self.state.read().map_err(|_| lock_err())?;
        let mut out: Vec<Extent> = Vec::new();
        let end = offset + len;
        let mut lba = offset / BS;
        while lba * BS < end {
            let w = (end.div_ceil(BS) - lba).min(WINDOW);
            let slots = self.resolve(&st, lba, w)?;
            for (i, s) in slots.iter().enumerate() {
                let bstart = (lba + i as u64) * BS;
                let from = offset.max(bstart);
                let to = end.min(bstart + BS);
                let allocated = matches!(s, Some(Slot::Mem(_)) | Some(Slot::Disk(_)));
                match out.last_mut() {
                    Some(e) if e.allocated == allocated => e.length += to - from,
                    _ => out.push(Extent {
                        length: to - from,
                        allocated,
                    }),
                }
            }
            lba += w;
        }
        Ok(out)
    }
}

fn block_mut(out: &mut [u8], i: usize) -> Result<&mut [u8]> {
    out.get_mut(i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE)
        .ok_or_else(|| Error::invalid("block index"))
}
