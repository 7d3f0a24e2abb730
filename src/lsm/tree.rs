//! The levels of sorted runs: lookups newest first, and inserting a batch by merging it
//! into the level the policy chooses.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::root::RunDesc;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::Loc;
use crate::lsm::merge::{Merge, Source};
use crate::lsm::policy;
use crate::lsm::run::{Run, RunWriter};

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

    /// Merges a sorted batch into the levels.
    pub fn insert(&mut self, ctx: &Ctx, base: u64, batch: Vec<(u64, Loc)>) -> Result<MergeStats> {
        let sizes: Vec<u64> = self
            .levels
            .iter()
            .map(|l| l.as_ref().map_or(0, |r| r.desc.entries))
            .collect();
        let k = policy::choose(base, &sizes, batch.len() as u64);
        let bottom = self.levels.iter().skip(k + 1).all(Option::is_none);
        let mut sources = vec![Source::Vec(batch.into_iter())];
        for run in self.levels.iter().take(k + 1).flatten() {
            sources.push(Source::run(ctx, run)?);
        }
        let mut merge = Merge::new(sources)?;
        let mut w = RunWriter::new(ctx, k as u32);
        let mut entries = 0;
        while let Some((lba, loc)) = merge.next_entry()? {
            // Nothing older lies below the bottom level, so zero markers can go.
            if bottom && loc == Loc::Zero {
                continue;
            }
            w.push(lba, &loc)?;
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
        Ok(MergeStats { level: k, entries })
    }

    /// Adds every chunk this tree references to `live`.
    pub fn live_chunks(&self, live: &mut HashSet<ChunkId>) {
        for run in self.runs() {
            live.extend(run.desc.index_chunks.iter().map(|c| c.0));
            live.extend(run.table.iter().map(|t| t.id));
        }
    }
}
