//! What is reachable, and collecting what is not: after each checkpoint (candidates
//! only) and on request (`sweep`, the whole data folder).

use super::*;

/// `below` sorted, then the kept snapshots' roots, the current root last: the order a
/// copy must be made in, so no reader ever meets a root whose chunks are missing.
pub(super) fn roots_last(
    below: HashSet<ChunkId>,
    kept: &[RootRef],
    head: Option<RootRef>,
) -> Vec<ChunkId> {
    let roots: Vec<ChunkId> = kept
        .iter()
        .map(|k| k.id)
        .chain(head.map(|r| r.id))
        .collect();
    let mut out: Vec<ChunkId> = below.into_iter().filter(|c| !roots.contains(c)).collect();
    out.sort_unstable();
    out.extend(roots);
    out
}

impl Engine {
    /// Every chunk the current root and the kept snapshots reach: index and data
    /// chunks first, then the kept snapshots' roots, the current root last (the order a
    /// copy must be made in, so no reader ever meets a root whose chunks are missing).
    pub fn reachable(&self) -> Result<Vec<ChunkId>> {
        let mut below = HashSet::new();
        // One look at the state: the levels, and the chunks large writes stored that no
        // checkpoint has indexed yet (a checkpoint moves entries from one to the other).
        let view = {
            let st = self.core.state.read().map_err(|_| lock_err())?;
            st.stored_chunks(&mut below);
            View {
                root: st.root,
                kept: st.kept.clone(),
                tree: st.tree.clone(),
                pending: Vec::new(),
            }
        };
        view.tree.live_chunks(&mut below);
        for k in &view.kept {
            let root = load_root(self.core.ctx.store.as_ref(), &self.core.ctx.keys, k)?;
            Tree::open(&self.core.ctx, &root.runs)?.live_chunks(&mut below);
        }
        Ok(roots_last(below, &view.kept, view.root))
    }

    /// Deletes (unless `dry_run`) every chunk in the local data folder that neither the
    /// head, a kept snapshot, nor a write under way reaches; returns the live count and
    /// the garbage with its bytes. It holds the checkpoint lock (no root is being made)
    /// and keeps large writes from storing chunks meanwhile, as the collector after
    /// each checkpoint does, so it never deletes a chunk a commit or a write just made.
    pub fn sweep(&self, dry_run: bool) -> Result<Sweep> {
        let _ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        let _gate = self.core.direct_gate.write().map_err(|_| lock_err())?;
        let live: HashSet<ChunkId> = self.reachable()?.into_iter().collect();
        let store = &self.core.ctx.store;
        let mut sweep = Sweep {
            live: live.len(),
            ..Sweep::default()
        };
        // The stack lists and deletes in the local data folder only: fallbacks and the
        // cache are not this disk's to clean.
        for id in store.list()? {
            if !live.contains(&id) {
                sweep.garbage_bytes += store.size(&id).unwrap_or(0);
                sweep.garbage.push(id);
            }
        }
        if !dry_run {
            self.core.check_writable()?;
            for id in &sweep.garbage {
                store.delete(id)?;
            }
        }
        Ok(sweep)
    }

    /// What reading kept snapshot `k` needs with no fallback: the index and data chunks
    /// it reaches, the head's index chunks, then every kept root and the current root
    /// last (opening the disk reads the head's index, and finding a snapshot by name
    /// reads the kept roots). The head's own data chunks are left out.
    pub fn reachable_for(&self, k: &RootRef) -> Result<Vec<ChunkId>> {
        let (head_root, kept, tree) = {
            let st = self.core.state.read().map_err(|_| lock_err())?;
            (st.root, st.kept.clone(), st.tree.clone())
        };
        if !kept.iter().any(|r| r.id == k.id) {
            return Err(Error::not_found(format!(
                "snapshot {} is not kept by this disk",
                k.id
            )));
        }
        let mut below = HashSet::new();
        for run in tree.runs() {
            below.extend(run.desc.index_chunks.iter().map(|c| c.0));
        }
        let root = load_root(self.core.ctx.store.as_ref(), &self.core.ctx.keys, k)?;
        Tree::open(&self.core.ctx, &root.runs)?.live_chunks(&mut below);
        Ok(roots_last(below, &kept, head_root))
    }
}

impl Core {
    /// Adds the chunks kept snapshot `k` reaches to `into` (computed once per snapshot).
    pub(super) fn add_kept_live(
        &self,
        ck: &mut CkptState,
        k: &RootRef,
        into: &mut HashSet<ChunkId>,
    ) -> Result<()> {
        let set = match ck.kept_live.entry(k.id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let mut set = HashSet::from([k.id]);
                let root = load_root(self.ctx.store.as_ref(), &self.ctx.keys, k)?;
                Tree::open(&self.ctx, &root.runs)?.live_chunks(&mut set);
                slot.insert(set)
            }
        };
        into.extend(set.iter().copied());
        Ok(())
    }

    /// Deletes the candidates that neither `tree` under `root` nor a kept snapshot
    /// reaches. Candidates are only chunks a verified root reached or this process put,
    /// so a chunk nothing here knows about is never touched.
    pub(super) fn collect(
        &self,
        ck: &mut CkptState,
        tree: &Tree,
        root: RootRef,
        kept: &[RootRef],
    ) -> Result<()> {
        // No large write may store or find a chunk between the memtables being read
        // here and the deletes below.
        let _gate = self.direct_gate.write().map_err(|_| lock_err())?;
        let mut live: HashSet<ChunkId> = HashSet::from([root.id]);
        tree.live_chunks(&mut live);
        {
            let st = self.state.read().map_err(|_| lock_err())?;
            st.stored_chunks(&mut live);
        }
        for k in kept {
            self.add_kept_live(ck, k, &mut live)?;
        }
        let mut deleted = 0;
        for id in ck.candidates.iter().filter(|c| !live.contains(c)) {
            self.ctx.store.delete(id)?;
            deleted += 1;
        }
        // Dead ones are gone; live ones stop being candidates until a later root
        // replaces the one that reaches them. (On an error above they all stay.)
        ck.candidates.clear();
        if deleted > 0 {
            tracing::debug!(deleted, "collected unreferenced chunks");
        }
        Ok(())
    }
}
