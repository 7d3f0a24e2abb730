//! The read path: which version of each block is newest (memtable, then the frozen
//! memtable, then the levels newest first), and fetching and opening those records with
//! coalesced range reads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};
use crate::format::record::{open_record, SealedRecord};
use crate::format::BLOCK_SIZE;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::{DataRef, Loc};
use crate::lsm::memtable::{MemEntry, Memtable};
use crate::lsm::tree::Tree;

/// Largest coalesced range read.
const MAX_COALESCE: u32 = 1 << 20;
/// A read split into at least this many separate requests fetches them in parallel
/// (small reads stay on the caller's thread: no threads for a 1 MiB local read).
const PARALLEL_MIN_GROUPS: usize = 4;
/// Most requests of one read in flight at once.
const PARALLEL_FETCHES: usize = 16;

/// Where one block's newest version is.
pub enum Slot {
    /// A hole or zeroed: reads as zeros.
    Zero,
    /// A record not yet in a chunk.
    Mem(SealedRecord),
    /// A record in a data chunk.
    Disk(DataRef),
}

/// The newest version of each block in `first..first+count`.
pub fn lookup(
    ctx: &Ctx,
    mem: &Memtable,
    frozen: Option<&Memtable>,
    tree: &Tree,
    first: u64,
    count: u64,
) -> Result<Vec<Slot>> {
    let found = mem_slots(mem, frozen, first, count);
    finish_lookup(ctx, tree, first, found)
}

/// The memtables' part of a [`lookup`] (no I/O: what must be taken under the engine's
/// state lock): the newest version of each block they hold, `None` for the others.
pub fn mem_slots(
    mem: &Memtable,
    frozen: Option<&Memtable>,
    first: u64,
    count: u64,
) -> Vec<Option<Slot>> {
    let mut found: Vec<Option<Slot>> = (0..count).map(|_| None).collect();
    // The memtable first, then the frozen one for blocks it does not hold.
    for table in std::iter::once(mem).chain(frozen) {
        for (lba, e) in table.range(first, first + count) {
            if let Some(s @ None) = found.get_mut((lba - first) as usize) {
                *s = Some(match e {
                    MemEntry::Zero => Slot::Zero,
                    MemEntry::Data(r) => Slot::Mem(r.clone()),
                    MemEntry::Stored(d) => Slot::Disk(*d),
                });
            }
        }
    }
    found
}

/// The levels' part of a [`lookup`]: resolves the blocks [`mem_slots`] left open in
/// `tree`, which may read index nodes from the store. `tree` may be a clone taken
/// under the lock: its chunks can be collected meanwhile, which shows as NotFound.
pub fn finish_lookup(
    ctx: &Ctx,
    tree: &Tree,
    first: u64,
    found: Vec<Option<Slot>>,
) -> Result<Vec<Slot>> {
    let mut locs: Vec<Option<Loc>> = found
        .iter()
        .map(|s| s.as_ref().map(|_| Loc::Zero))
        .collect();
    tree.resolve(ctx, first, &mut locs)?;
    Ok(found
        .into_iter()
        .zip(locs)
        .map(|(s, l)| match (s, l) {
            (Some(s), _) => s,
            (None, Some(Loc::Data(d))) => Slot::Disk(d),
            (None, _) => Slot::Zero,
        })
        .collect())
}

/// Fills whole blocks from `first` into `out` (a multiple of the block size).
pub fn read_blocks(
    ctx: &Ctx,
    mem: &Memtable,
    frozen: Option<&Memtable>,
    tree: &Tree,
    first: u64,
    out: &mut [u8],
) -> Result<()> {
    let disk = resolve_into(ctx, mem, frozen, tree, first, out)?;
    fetch_into(ctx, first, disk, out)
}

/// The first half of a read: fills the blocks that read as zeros or are in a
/// memtable, and returns where the others are (block index in the read, record in a
/// chunk) for [`fetch_into`].
pub fn resolve_into(
    ctx: &Ctx,
    mem: &Memtable,
    frozen: Option<&Memtable>,
    tree: &Tree,
    first: u64,
    out: &mut [u8],
) -> Result<Vec<(usize, DataRef)>> {
    let count = whole_blocks(out)?;
    let slots = lookup(ctx, mem, frozen, tree, first, count)?;
    place_slots(ctx, slots, out)
}

fn whole_blocks(out: &[u8]) -> Result<u64> {
    if !out.len().is_multiple_of(BLOCK_SIZE) {
        return Err(Error::internal("read_blocks needs whole blocks"));
    }
    Ok((out.len() / BLOCK_SIZE) as u64)
}

/// Fills `out` from the slots that need no chunk; returns the others for
/// [`fetch_into`].
pub fn place_slots(ctx: &Ctx, slots: Vec<Slot>, out: &mut [u8]) -> Result<Vec<(usize, DataRef)>> {
    if slots.len() as u64 != whole_blocks(out)? {
        return Err(Error::internal("slots do not match the read"));
    }
    let mut disk: Vec<(usize, DataRef)> = Vec::new();
    for (i, s) in slots.into_iter().enumerate() {
        match s {
            Slot::Zero => block_mut(out, i)?.fill(0),
            Slot::Mem(r) => open_record(&ctx.keys, &r.bytes, &r.tag, block_mut(out, i)?)?,
            Slot::Disk(d) => disk.push((i, d)),
        }
    }
    Ok(disk)
}

/// The second half of a read: fetches and opens the records [`resolve_into`] found in
/// chunks, coalesced, in parallel when there are many.
pub fn fetch_into(
    ctx: &Ctx,
    first: u64,
    mut disk: Vec<(usize, DataRef)>,
    out: &mut [u8],
) -> Result<()> {
    disk.sort_unstable_by_key(|x| (x.1.chunk, x.1.offset));
    let groups = coalesce(&disk);
    if groups.len() < PARALLEL_MIN_GROUPS {
        for g in groups {
            let group = disk
                .get(g)
                .ok_or_else(|| Error::internal("group out of range"))?;
            read_group(ctx, first, group, out, |_, idx| idx)?;
        }
        return Ok(());
    }
    // Many separate reads (a large read of a disk behind a slow store): fetch them at
    // once, each group into its own buffer, then put the blocks in place. The groups of
    // one chunk go to one worker, in order: the first one's request (whole chunk or a
    // range, as the store decides) is under way or done when the next is asked for,
    // so a cache never fetches a chunk whole and a piece of it at the same time.
    let mut by_chunk: Vec<std::ops::Range<usize>> = Vec::new();
    let chunk_of = |k: usize| {
        groups
            .get(k)
            .and_then(|g| disk.get(g.start))
            .map(|x| x.1.chunk)
    };
    for k in 0..groups.len() {
        match by_chunk.last_mut() {
            Some(r) if chunk_of(r.start) == chunk_of(k) => r.end = k + 1,
            _ => by_chunk.push(k..k + 1),
        }
    }
    let group_at = |k: usize| -> Result<&[(usize, DataRef)]> {
        groups
            .get(k)
            .and_then(|g| disk.get(g.clone()))
            .ok_or_else(|| Error::internal("group out of range"))
    };
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<(usize, Result<Vec<u8>>)>> = Mutex::new(Vec::new());
    let helpers = PARALLEL_FETCHES.min(by_chunk.len()).saturating_sub(1);
    crate::threads::alongside(helpers, "parallel read", || loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let Some(ks) = by_chunk.get(n) else { return };
        for k in ks.clone() {
            let r = (|| {
                let group = group_at(k)?;
                let mut buf = vec![0u8; group.len() * BLOCK_SIZE];
                read_group(ctx, first, group, &mut buf, |pos, _| pos)?;
                Ok(buf)
            })();
            if let Ok(mut d) = done.lock() {
                d.push((k, r));
            }
        }
    })?;
    let done = done
        .into_inner()
        .map_err(|_| Error::internal("parallel read lock poisoned"))?;
    if done.len() != groups.len() {
        return Err(Error::internal("a parallel read worker stopped early"));
    }
    for (k, r) in done {
        let buf = r?;
        let group = group_at(k)?;
        for (pos, (idx, _)) in group.iter().enumerate() {
            let src = buf
                .get(pos * BLOCK_SIZE..(pos + 1) * BLOCK_SIZE)
                .ok_or_else(|| Error::internal("parallel read buffer"))?;
            block_mut(out, *idx)?.copy_from_slice(src);
        }
    }
    Ok(())
}

/// Splits records (sorted by chunk and offset) into groups that sit back to back (or
/// repeat) in one chunk, each read with one request of at most `MAX_COALESCE` bytes.
fn coalesce(disk: &[(usize, DataRef)]) -> Vec<std::ops::Range<usize>> {
    let mut groups = Vec::new();
    let mut i = 0;
    while let Some(&(_, head)) = disk.get(i) {
        let mut j = i + 1;
        let mut end = head.offset + head.len;
        while let Some((_, d)) = disk.get(j) {
            // Back to back, or the same record again (equal blocks stored once).
            let e = end.max(d.offset + d.len);
            if d.chunk != head.chunk || d.offset > end || e - head.offset > MAX_COALESCE {
                break;
            }
            end = e;
            j += 1;
        }
        groups.push(i..j);
        i = j;
    }
    groups
}

/// Reads one group with one request and opens each record into `dst` at block
/// `slot(position in group, block index in the read)`. Every record is authenticated
/// inside `accept`, so a source whose bytes fail a tag is passed over for the next one
/// (a fallback, or a refetch past the cache).
fn read_group(
    ctx: &Ctx,
    first: u64,
    group: &[(usize, DataRef)],
    dst: &mut [u8],
    slot: impl Fn(usize, usize) -> usize,
) -> Result<()> {
    let Some(&(head_index, head)) = group.first() else {
        return Ok(());
    };
    let end = group
        .iter()
        .map(|(_, d)| d.offset + d.len)
        .max()
        .unwrap_or(head.offset);
    let mut accept = |bytes: &[u8]| -> Result<()> {
        for (pos, (idx, d)) in group.iter().enumerate() {
            let rel = (d.offset - head.offset) as usize;
            let rec = bytes
                .get(rel..rel + d.len as usize)
                .ok_or_else(|| Error::internal("coalesced read shorter than its records"))?;
            open_record(&ctx.keys, rec, &d.tag, block_mut(dst, slot(pos, *idx))?).map_err(|e| {
                e.context(format!(
                    "block {} (chunk {} offset {})",
                    first + *idx as u64,
                    d.chunk,
                    d.offset
                ))
            })?;
        }
        Ok(())
    };
    ctx.store
        .read_verified(
            &head.chunk,
            u64::from(head.offset),
            (end - head.offset) as usize,
            &mut accept,
        )
        .map_err(|e| e.context(format!("reading block {}", first + head_index as u64)))
}

fn block_mut(out: &mut [u8], i: usize) -> Result<&mut [u8]> {
    out.get_mut(i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE)
        .ok_or_else(|| Error::internal("block index past the buffer"))
}
