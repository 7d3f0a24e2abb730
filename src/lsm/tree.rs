//! The levels of sorted runs: lookups newest first, and inserting a batch by merging it
//! into the level the policy chooses.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::record::{open_record, SealedRecord};
use crate::format::root::RunDesc;
use crate::lsm::chunker::Chunker;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::Loc;
use crate::lsm::merge::{Merge, Source};
use crate::lsm::policy;
use crate::lsm::run::{Run, RunWriter};

/// Most live record bytes copied out of sparse chunks per merge (bounds memory and time).
pub const REWRITE_BUDGET: u64 = 64 << 20;
/// Which data chunks a bottom-level merge rewrites to give back the space their
/// overwritten records hold: sparsest first, at most `REWRITE_BUDGET` live bytes.
#[derive(Clone, Copy, Debug)]
struct Rewrite {
    /// Every chunk whose live fraction is below `num/den`.
    below: (u64, u64),
    /// Then chunks up to a denser fraction, while the dead bytes in this disk's chunks
    /// are more than its live bytes / the divisor: (fraction, divisor).
    goal: Option<((u64, u64), u64)>,
}

/// While writes go on: chunks less than half live. A quarter instead wrote less while
/// random writes went on (1.18 of their bytes by the time they ended instead of 1.24,
/// `bench/space.sh BIN 3 35000`: a chunk left until the writes pause is sparser then,
/// so cheaper to copy), but let the disk grow to 1.77 of its live bytes instead of 1.26
/// under writes that never pause (`tests/space.rs`): not worth it.
const SPARSE_AT_MERGE: Rewrite = Rewrite {
    below: (1, 2),
    goal: None,
};
/// At a compaction, which runs while the disk is idle and so can afford to copy more:
/// every chunk less than seven eighths live, then chunks up to fifteen sixteenths
/// while more than 1/32 of the live bytes are dead. The threshold alone left from 1.5%
/// to 5.7% of the live bytes dead, by how the random writes before it ended
/// (`bench/space.sh BIN 4 35000`: 0.530 to 0.586 of logical on disk); a goal alone
/// (1/48, sparsest first) saved 30 MiB of the 400-odd MiB copied and left 0.548,
/// since what random writes leave is mostly chunks between half and seven eighths live.
const SPARSE_AT_COMPACTION: Rewrite = Rewrite {
    below: (7, 8),
    goal: Some(((15, 16), 32)),
};

/// Levels of runs; index 0 is newest.
#[derive(Clone, Default)]
pub struct Tree {
    levels: Vec<Option<Arc<Run>>>,
}

/// Statistics of one merge.
#[derive(Clone, Copy, Debug, Default)]
pub struct MergeStats {
    /// Level written.
    pub level: usize,
    /// Entries written.
    pub entries: u64,
    /// Sparse data chunks were left for lack of rewrite budget.
    pub sparse_left: bool,
}

impl Tree {
    /// Loads the runs listed in a root.
    pub fn open(ctx: &Ctx, descs: &[RunDesc]) -> Result<Self> {
        let mut levels: Vec<Option<Arc<Run>>> = Vec::new();
        for d in descs {
            let l = d.level as usize;
            if l > 64 {
                return Err(Error::corrupt(format!("root lists level {l}")));
            }
            if levels.len() <= l {
                levels.resize(l + 1, None);
            }
            if levels.get(l).is_some_and(Option::is_some) {
                return Err(Error::corrupt(format!("root lists level {l} twice")));
            }
            if let Some(slot) = levels.get_mut(l) {
                *slot = Some(Arc::new(Run::load(ctx, d.clone())?));
            }
        }
        Ok(Self { levels })
    }

    /// Runs, newest first.
    pub fn runs(&self) -> impl Iterator<Item = &Arc<Run>> {
        self.levels.iter().flatten()
    }

    /// Descriptions for a root.
    pub fn descs(&self) -> Vec<RunDesc> {
        self.runs().map(|r| r.desc.clone()).collect()
    }

    /// For blocks `a..a+out.len()`, fills each `None` slot of `out` with the newest entry
    /// found in the levels (slots already set, by the memtable, stay).
    pub fn resolve(&self, ctx: &Ctx, a: u64, out: &mut [Option<Loc>]) -> Result<()> {
        let b = a + out.len() as u64;
        for run in self.runs() {
            let mut c = run.seek(ctx, a)?;
            while let Some((lba, loc)) = c.next_entry()? {
                if lba >= b {
                    break;
                }
                if let Some(slot) = out.get_mut((lba - a) as usize) {
                    if slot.is_none() {
                        *slot = Some(loc);
                    }
                }
            }
        }
        Ok(())
    }

    /// Index entries an [`Tree::insert`] of `batch` entries will read: the batch and
    /// every level it merges with.
    pub fn merge_reads(&self, base: u64, batch: u64) -> u64 {
        let sizes: Vec<u64> = self
            .levels
            .iter()
            .map(|l| l.as_ref().map_or(0, |r| r.desc.entries))
            .collect();
        let k = policy::choose(base, &sizes, batch);
        batch + sizes.iter().take(k + 1).sum::<u64>()
    }

    /// Merges a sorted batch into the levels. Chunks in `pinned` (what kept snapshots
    /// reach) are never rewritten: copying their live records would free nothing.
    /// With `pinned` unknown (None), no chunk is.
    pub fn insert(
        &mut self,
        ctx: &Ctx,
        base: u64,
        batch: Vec<(u64, Loc)>,
        pinned: Option<&HashSet<ChunkId>>,
    ) -> Result<MergeStats> {
        let sizes: Vec<u64> = self
            .levels
            .iter()
            .map(|l| l.as_ref().map_or(0, |r| r.desc.entries))
            .collect();
        let k = policy::choose(base, &sizes, batch.len() as u64);
        self.merge_into(ctx, k, batch, SPARSE_AT_MERGE, pinned)
    }

    /// Merges every level into the bottom one: entries overwritten in upper levels stop
    /// naming their chunks (which garbage collection then frees), and data chunks less
    /// than seven eighths live are rewritten (up to `REWRITE_BUDGET` bytes). None when
    /// there is nothing to merge. Chunks in `pinned` are left, as in [`Tree::insert`].
    pub fn compact(
        &mut self,
        ctx: &Ctx,
        pinned: Option<&HashSet<ChunkId>>,
    ) -> Result<Option<MergeStats>> {
        if self.levels.iter().all(Option::is_none) {
            return Ok(None);
        }
        let k = self.levels.len() - 1;
        // One run has nothing to merge: only sparse chunks make rewriting it pay (an
        // imported disk's index is not rewritten for nothing at every idle moment).
        if self.runs().count() == 1 {
            let sparse = match pinned {
                Some(p) => {
                    self.chunks_to_rewrite(ctx, k, &[], SPARSE_AT_COMPACTION, p)?
                        .0
                }
                None => HashSet::new(),
            };
            if sparse.is_empty() {
                return Ok(None);
            }
        }
        self.merge_into(ctx, k, Vec::new(), SPARSE_AT_COMPACTION, pinned)
            .map(Some)
    }

    /// Merges `batch` with levels `0..=k` into level `k`.
    fn merge_into(
        &mut self,
        ctx: &Ctx,
        k: usize,
        batch: Vec<(u64, Loc)>,
        sparse: Rewrite,
        pinned: Option<&HashSet<ChunkId>>,
    ) -> Result<MergeStats> {
        let bottom = self.levels.iter().skip(k + 1).all(Option::is_none);
        // At the bottom the output is the only run naming its chunks, so chunks that
        // mostly hold overwritten records can be rewritten to give their space back.
        let (moved, sparse_left) = if bottom {
            self.rewrite_sparse_chunks(ctx, k, &batch, sparse, pinned)?
        } else {
            (Vec::new(), false)
        };
        let mut merge = Merge::new(self.sources(ctx, k, batch)?)?;
        let mut w = RunWriter::new(ctx, k as u32);
        let mut entries = 0;
        // `moved` is in block order, as the merge is: walked alongside it.
        let mut moved = moved.into_iter().peekable();
        while let Some((lba, loc)) = merge.next_entry()? {
            // Nothing older lies below the bottom level, so zero markers can go.
            if bottom && loc == Loc::Zero {
                continue;
            }
            while moved.next_if(|(m, _)| *m < lba).is_some() {}
            match moved.next_if(|(m, _)| *m == lba) {
                Some((_, new)) => w.push(lba, &new)?,
                None => w.push(lba, &loc)?,
            }
            entries += 1;
        }
        let run = w.finish()?;
        drop(merge);
        if self.levels.len() <= k {
            self.levels.resize(k + 1, None);
        }
        for slot in self.levels.iter_mut().take(k) {
            *slot = None;
        }
        if let Some(slot) = self.levels.get_mut(k) {
            *slot = run.map(Arc::new);
        }
        while self.levels.last().is_some_and(Option::is_none) {
            self.levels.pop();
        }
        Ok(MergeStats {
            level: k,
            entries,
            sparse_left,
        })
    }

    fn sources<'a>(
        &'a self,
        ctx: &'a Ctx,
        k: usize,
        batch: Vec<(u64, Loc)>,
    ) -> Result<Vec<Source<'a>>> {
        let mut sources = vec![Source::Vec(batch.into_iter())];
        for run in self.levels.iter().take(k + 1).flatten() {
            sources.push(Source::run(ctx, run)?);
        }
        Ok(sources)
    }

    /// The data chunks to rewrite at a bottom-level merge of `batch` with levels
    /// `0..=k`, by `policy`, of those outside `pinned` whose space is this disk's to
    /// free (`ChunkStore::owns`: not a fallback's, not shared with a clone), with live
    /// fractions taken in the merged output. Also whether candidates were left for
    /// lack of budget.
    fn chunks_to_rewrite(
        &self,
        ctx: &Ctx,
        k: usize,
        batch: &[(u64, Loc)],
        policy: Rewrite,
        pinned: &HashSet<ChunkId>,
    ) -> Result<(HashSet<ChunkId>, bool)> {
        let mut live: crate::prehashed::Map<ChunkId, (u32, u64)> = Default::default();
        let mut merge = Merge::new(self.sources(ctx, k, batch.to_vec())?)?;
        while let Some((_, loc)) = merge.next_entry()? {
            if let Loc::Data(d) = loc {
                live.entry(d.chunk).or_insert((d.chunk_size, 0)).1 += u64::from(d.len);
            }
        }
        drop(merge);
        let below = |(num, den): (u64, u64), size: u64, l: u64| l * den < size * num;
        let (live_bytes, chunk_bytes) = live.values().fold((0u64, 0u64), |(l, c), (size, n)| {
            (l + n, c + u64::from(*size))
        });
        // The goal counts only dead bytes compaction could free: in chunks this disk
        // owns and no snapshot holds (a clone's shared chunks would never meet it).
        let ceiling = policy.goal.map_or(policy.below, |g| g.0);
        let mut candidates: Vec<(ChunkId, u64, u64)> = Vec::new();
        let mut dead = 0u64;
        for (id, (size, l)) in live {
            let size = u64::from(size);
            if l >= size || pinned.contains(&id) {
                continue;
            }
            let candidate = below(ceiling, size, l);
            // Last: a file system call per chunk that passed the rest.
            if (candidate || policy.goal.is_some()) && ctx.store.owns(&id) {
                dead += size - l;
                if candidate {
                    candidates.push((id, size, l));
                }
            }
        }
        // Sparsest first (live/size ascending), so each byte copied frees the most.
        candidates.sort_by(|a, b| (a.2 * b.1).cmp(&(b.2 * a.1)));
        let dead_goal = policy.goal.map_or(0, |g| live_bytes / g.1.max(1));
        let mut budget = REWRITE_BUDGET;
        let mut chosen = HashSet::new();
        let mut left = false;
        for (id, size, l) in candidates {
            if !below(policy.below, size, l) && dead <= dead_goal {
                break;
            }
            if l > budget {
                left = true;
                break;
            }
            budget -= l;
            dead = dead.saturating_sub(size - l);
            chosen.insert(id);
        }
        tracing::debug!(
            live_bytes,
            chunk_bytes,
            dead_left = dead,
            chosen = chosen.len(),
            left,
            "data chunks the merge names"
        );
        Ok((chosen, left))
    }

    /// Rewrites the chunks [`Tree::chunks_to_rewrite`] chooses: copies their live
    /// records into new chunks; returns the new location of each moved block, in block
    /// order, and whether candidates were left for lack of budget.
    fn rewrite_sparse_chunks(
        &self,
        ctx: &Ctx,
        k: usize,
        batch: &[(u64, Loc)],
        sparse: Rewrite,
        pinned: Option<&HashSet<ChunkId>>,
    ) -> Result<(Vec<(u64, Loc)>, bool)> {
        let Some(pinned) = pinned else {
            return Ok((Vec::new(), false));
        };
        let (chosen, left) = self.chunks_to_rewrite(ctx, k, batch, sparse, pinned)?;
        if chosen.is_empty() {
            return Ok((Vec::new(), left));
        }
        // Within the budget's share for cut chunks: unbounded, up to eight chunks
        // waited here (16 MiB at the peak of random writes, over a 128 MiB budget).
        let mut chunker =
            Chunker::new(ctx.store.as_ref()).with_pending_limit(ctx.pending_chunk_bytes);
        let mut merge = Merge::new(self.sources(ctx, k, batch.to_vec())?)?;
        let mut block = vec![0u8; crate::format::BLOCK_SIZE];
        while let Some((lba, loc)) = merge.next_entry()? {
            if let Loc::Data(d) = loc {
                if chosen.contains(&d.chunk) {
                    // Never copy a record that does not authenticate (a cache refetches
                    // a copy that fails here instead of failing the merge).
                    let mut bytes = Vec::new();
                    ctx.store
                        .read_verified(
                            &d.chunk,
                            u64::from(d.offset),
                            d.len as usize,
                            &mut |stored| {
                                open_record(&ctx.keys, stored, &d.tag, &mut block)?;
                                bytes = stored.to_vec();
                                Ok(())
                            },
                        )
                        .map_err(|e| {
                            e.context(format!("compacting block {lba} from chunk {}", d.chunk))
                        })?;
                    chunker.push(lba, &SealedRecord { bytes, tag: d.tag })?;
                }
            }
        }
        drop(merge);
        // In block order: records were pushed as the merge gave them. A sorted Vec, not
        // a map: 2 MiB instead of 5 for a 64 MiB rewrite, at the peak of a checkpoint.
        let moved = chunker.finish()?;
        tracing::debug!(
            chunks = chosen.len(),
            blocks = moved.len(),
            "rewrote sparse data chunks"
        );
        Ok((moved, left))
    }

    /// Adds every chunk this tree references to `live`.
    pub fn live_chunks(&self, live: &mut HashSet<ChunkId>) {
        for run in self.runs() {
            live.extend(run.desc.index_chunks.iter().map(|c| c.0));
            live.extend(run.table.iter().map(|t| t.id));
        }
    }
}
