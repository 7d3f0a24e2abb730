//! Reads: where each block is (resolved under the state lock) and its bytes (fetched
//! outside it), and the index-only views `info`, read-ahead and `fsck` use.

use super::*;

impl Engine {
    /// A copy of the state for reports.
    pub fn view(&self) -> Result<View> {
        let st = self.core.state.read().map_err(|_| lock_err())?;
        let mut pending: Vec<(u64, Option<usize>)> = st
            .mem
            .range(0, u64::MAX)
            .map(|(l, e)| (*l, e.stored_len()))
            .collect();
        if let Some(f) = &st.frozen {
            pending.extend(
                f.range(0, u64::MAX)
                    .filter(|(l, _)| st.mem.get(**l).is_none())
                    .map(|(l, e)| (*l, e.stored_len())),
            );
            pending.sort_unstable_by_key(|p| p.0);
        }
        Ok(View {
            root: st.root,
            kept: st.kept.clone(),
            tree: st.tree.clone(),
            pending,
        })
    }

    /// The newest state of every block not yet in chunks, sorted: a zero marker, or a
    /// record (a `DataRef` whose only meaningful field is the tag, for comparisons).
    pub fn pending_locs(&self) -> Result<Vec<(u64, Loc)>> {
        let st = self.core.state.read().map_err(|_| lock_err())?;
        Ok(pending_locs_of(&st))
    }

    /// The blocks at or past `lba` that hold data, from the index alone (see
    /// [`crate::lsm::diff::data_blocks_from`]).
    pub fn data_blocks_from(&self, lba: u64) -> Result<Vec<u64>> {
        let (tree, pending) = {
            let st = self.core.state.read().map_err(|_| lock_err())?;
            (st.tree.clone(), pending_locs_of(&st))
        };
        crate::lsm::diff::data_blocks_from(&self.core.ctx, &tree, pending, lba)
    }

    /// Fills `out` (whole blocks) from block `lba`.
    pub fn read_blocks(&self, lba: u64, out: &mut [u8]) -> Result<()> {
        self.read_then(lba, out, false).map(|_| ())
    }

    /// [`Engine::read_blocks`], also returning which version of each block it read
    /// (for a partial-block write, which checks under the lock that the block it
    /// read outside is still the newest: [`Batch::unchanged`]).
    pub fn read_versioned(&self, lba: u64, out: &mut [u8]) -> Result<Vec<Version>> {
        self.read_then(lba, out, true)
    }

    /// Reads, noting each block's version only when `versions` (reads are the hot
    /// path: no list for them).
    fn read_then(&self, lba: u64, out: &mut [u8], versions: bool) -> Result<Vec<Version>> {
        let count = (out.len() / BLOCK_SIZE) as u64;
        self.core.check_block(lba, count)?;
        // Only the memtables are read under the state lock; the levels (index nodes)
        // and the records are read outside it from a clone of the tree, so a slow store
        // (a URL fallback) stalls neither writers nor the checkpoint. A chunk the
        // collector deleted meanwhile (a checkpoint replaced what named it) is not
        // found: the read is resolved again against the newer state. Chunks are named by
        // their hash and records checked by their tag, so a fetch never returns bytes
        // other than those resolved.
        self.retrying(
            lba,
            |found, tree| {
                let slots = finish_lookup(&self.core.ctx, tree, lba, found)?;
                let versions = if versions {
                    slots.iter().map(Version::of).collect()
                } else {
                    Vec::new()
                };
                let disk = place_slots(&self.core.ctx, slots, out)?;
                fetch_into(&self.core.ctx, lba, disk, out)?;
                Ok(versions)
            },
            count,
        )
    }

    /// Runs `f` on the memtables' slots and a clone of the tree taken under the state
    /// lock, outside it; again (up to 3 times) when a chunk went meanwhile.
    fn retrying<T>(
        &self,
        lba: u64,
        mut f: impl FnMut(Vec<Option<Slot>>, &Tree) -> Result<T>,
        count: u64,
    ) -> Result<T> {
        let mut attempt = 0;
        loop {
            let (found, tree, root) = {
                let st = self.core.state.read().map_err(|_| lock_err())?;
                (
                    mem_slots(&st.mem, st.frozen.as_deref(), lba, count),
                    st.tree.clone(),
                    st.root.map(|r| r.id),
                )
            };
            match f(found, &tree) {
                Err(e) if e.kind() == crate::error::ErrorKind::NotFound && attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(error = %e, lba, "a chunk went while it was read; resolving again");
                }
                // The collector writes new chunks over the files of dead ones (see
                // `LocalStore::recycle`): bytes read from a file opened before a newer
                // root made it dead fail their tag. Resolved again only when a root
                // came meanwhile; bytes that fail under the same root are corrupt.
                Err(e)
                    if e.kind() == crate::error::ErrorKind::Corrupt
                        && attempt < 3
                        && self.root_id()? != root =>
                {
                    attempt += 1;
                    tracing::debug!(error = %e, lba, "a chunk was recycled while it was read; resolving again");
                }
                other => return other,
            }
        }
    }

    fn root_id(&self) -> Result<Option<crate::format::chunk_id::ChunkId>> {
        Ok(self
            .core
            .state
            .read()
            .map_err(|_| lock_err())?
            .root
            .map(|r| r.id))
    }

    /// Reads the index nodes that resolving `lba..lba+count` needs into the node cache,
    /// outside the state lock, so an update that resolves them under the lock (a zero
    /// range) finds them there instead of waiting on the store.
    pub fn warm_index(&self, lba: u64, count: u64) -> Result<()> {
        self.core.check_block(lba, count)?;
        const WINDOW: u64 = 8192;
        let mut at = lba;
        while at < lba + count {
            let n = (lba + count - at).min(WINDOW);
            self.retrying(
                at,
                |found, tree| finish_lookup(&self.core.ctx, tree, at, found).map(|_| ()),
                n,
            )?;
            at += n;
        }
        Ok(())
    }

    /// Where the newest version of each block in `lba..lba+count` is (index only).
    pub(super) fn slots(&self, lba: u64, count: u64) -> Result<Vec<Slot>> {
        self.core.check_block(lba, count)?;
        self.retrying(
            lba,
            |found, tree| finish_lookup(&self.core.ctx, tree, lba, found),
            count,
        )
    }

    /// The data chunks holding blocks `lba..lba+count`, each once, in block order (for
    /// read-ahead: index only, no data read).
    pub fn data_chunks(&self, lba: u64, count: u64) -> Result<Vec<ChunkId>> {
        let mut seen = HashSet::new();
        Ok(self
            .slots(lba, count)?
            .iter()
            .filter_map(|s| match s {
                Slot::Disk(d) => Some(d.chunk),
                _ => None,
            })
            .filter(|c| seen.insert(*c))
            .collect())
    }

    /// The stored bytes behind blocks `lba..lba+count`, in block order, neighbouring
    /// records of one chunk joined (for prefetching: index only, no data read).
    pub fn data_extents(&self, lba: u64, count: u64) -> Result<Vec<Extent>> {
        let mut out: Vec<Extent> = Vec::new();
        for s in self.slots(lba, count)? {
            let Slot::Disk(d) = s else { continue };
            let (offset, end) = (u64::from(d.offset), u64::from(d.offset) + u64::from(d.len));
            match out.last_mut() {
                Some(e) if e.chunk == d.chunk && e.end == offset => e.end = end,
                _ => out.push(Extent {
                    chunk: d.chunk,
                    chunk_size: u64::from(d.chunk_size),
                    offset,
                    end,
                }),
            }
        }
        Ok(out)
    }

    /// For blocks `lba..lba+count`: true where stored data (not a hole or zeroes) is.
    pub fn allocated(&self, lba: u64, count: u64) -> Result<Vec<bool>> {
        Ok(self
            .slots(lba, count)?
            .iter()
            .map(|s| matches!(s, Slot::Mem(_) | Slot::Disk(_)))
            .collect())
    }
}

/// [`Engine::pending_locs`] of a locked state.
pub(super) fn pending_locs_of(st: &State) -> Vec<(u64, Loc)> {
    let loc = |e: &MemEntry| {
        let (len, tag) = match e {
            MemEntry::Zero => return Loc::Zero,
            MemEntry::Data(r) => (r.bytes.len() as u32, r.tag),
            MemEntry::Stored(d) => (d.len, d.tag),
        };
        Loc::Data(DataRef {
            chunk: ChunkId([0; 32]),
            chunk_size: 0,
            offset: 0,
            len,
            tag,
        })
    };
    let mut out: Vec<(u64, Loc)> = st
        .mem
        .range(0, u64::MAX)
        .map(|(l, e)| (*l, loc(e)))
        .collect();
    if let Some(f) = &st.frozen {
        out.extend(
            f.range(0, u64::MAX)
                .filter(|(l, _)| st.mem.get(**l).is_none())
                .map(|(l, e)| (*l, loc(e))),
        );
        out.sort_unstable_by_key(|p| p.0);
    }
    out
}
