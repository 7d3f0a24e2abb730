//! Figures over the index (for `info`): what the blocks hold and what they take.

use std::collections::HashMap;

use super::{Engine, Result, View};
use crate::lsm::entry::Loc;
use crate::lsm::merge::{Merge, Source};

/// Sums over every block the head reaches, pending writes included.
#[derive(Debug, Default, Clone, Copy)]
pub struct IndexStats {
    /// Bytes of blocks holding data (4096 per block).
    pub logical_bytes: u64,
    /// Stored (compressed, sealed) record bytes those blocks reference.
    pub stored_record_bytes: u64,
    /// Bytes of the distinct data chunks referenced.
    pub unique_chunk_bytes: u64,
    /// Writes in the log not yet checkpointed.
    pub pending_blocks: usize,
}

impl Engine {
    /// Walks the whole index of `view` once (a view from [`Engine::view`]).
    pub fn index_stats(&self, view: &View) -> Result<IndexStats> {
        let ctx = &self.core.ctx;
        let mut s = IndexStats {
            pending_blocks: view.pending.len(),
            ..IndexStats::default()
        };
        let mut mem = Vec::with_capacity(view.pending.len());
        for &(lba, data) in &view.pending {
            // Records not in chunks yet are counted directly; a zero marker shadows
            // older entries either way.
            if let Some(len) = data {
                s.logical_bytes += 4096;
                s.stored_record_bytes += len as u64;
            }
            mem.push((lba, Loc::Zero));
        }
        let mut sources = vec![Source::Vec(mem.into_iter())];
        for run in view.tree.runs() {
            sources.push(Source::run(ctx, run)?);
        }
        let mut merge = Merge::new(sources)?;
        let mut chunks: HashMap<_, u32> = HashMap::new();
        while let Some((_, loc)) = merge.next_entry()? {
            if let Loc::Data(d) = loc {
                s.logical_bytes += 4096;
                s.stored_record_bytes += u64::from(d.len);
                chunks.insert(d.chunk, d.chunk_size);
            }
        }
        s.unique_chunk_bytes = chunks.values().map(|&c| u64::from(c)).sum();
        Ok(s)
    }
}
