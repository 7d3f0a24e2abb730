//! Snapshots: taking one, going back to one, and forgetting one.

use super::*;

impl Engine {
    /// Checkpoints, then keeps the resulting root readable as a snapshot; returns it.
    pub fn snapshot(&self) -> Result<RootRef> {
        self.snapshot_labeled(&Label::default())
    }

    /// [`Engine::snapshot`] with a name and message recorded in the snapshot's root.
    /// Costs two small roots, never a copy of data.
    pub fn snapshot_labeled(&self, label: &Label) -> Result<RootRef> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        self.core.checkpoint_all(&mut ck, false)?;
        // The snapshot: a root over the same levels that carries the label.
        self.core.commit_labeled(&mut ck, true, label)?;
        let snap = self
            .root()?
            .ok_or_else(|| Error::internal("no root after a forced checkpoint"))?;
        self.core
            .state
            .write()
            .map_err(|_| lock_err())?
            .kept
            .push(snap);
        // The snapshot stays exactly as it is; a new root records that it is kept.
        self.core.commit(&mut ck, true)?;
        Ok(snap)
    }

    /// Makes the state of kept snapshot `id` the current one, at the snapshot's size
    /// (the root and the `.swap` file's `size=` change together). The state being left
    /// is kept as a snapshot first (labeled `saved`), at its own size, so a reset to a
    /// smaller snapshot drops nothing; returns that snapshot.
    pub fn reset(&self, id: &ChunkId, saved: &Label) -> Result<RootRef> {
        let target = self
            .kept()?
            .into_iter()
            .find(|k| k.id == *id)
            .ok_or_else(|| Error::not_found(format!("snapshot {id} is not kept")))?;
        let root = load_root(self.core.ctx.store.as_ref(), &self.core.ctx.keys, &target)?;
        let tree = Tree::open(&self.core.ctx, &root.runs)?;
        let before = self.snapshot_labeled(saved)?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        self.core.checkpoint_all(&mut ck, false)?;
        let old_size = self.core.size();
        let left = {
            let mut st = self.core.state.write().map_err(|_| lock_err())?;
            let logged = self.core.wal.as_ref().is_some_and(|w| !w.is_empty());
            if !st.mem.is_empty() || st.frozen.is_some() || logged {
                return Err(Error::invalid(format!(
                    "writes arrived during reset, so the head was not moved; the state before \
                     it is kept as snapshot {} (forget it if not wanted); run reset again",
                    before.id
                )));
            }
            self.core.size.store(root.size, Ordering::Release);
            std::mem::replace(&mut st.tree, tree)
        };
        if let Err(e) = self.core.commit(&mut ck, true) {
            // The named root is still the one left: so is the state in memory.
            self.core.size.store(old_size, Ordering::Release);
            if let Ok(mut st) = self.core.state.write() {
                st.tree = left;
            }
            return Err(e.context("resetting"));
        }
        if root.size != old_size {
            tracing::info!(
                from = old_size,
                to = root.size,
                "reset: the disk takes the snapshot's size"
            );
        }
        Ok(before)
    }

    /// Stops keeping a snapshot; chunks only it reached are deleted.
    pub fn forget_snapshot(&self, id: &ChunkId) -> Result<()> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        let gone = {
            let mut st = self.core.state.write().map_err(|_| lock_err())?;
            let gone = st.kept.iter().find(|k| k.id == *id).copied();
            st.kept.retain(|k| k.id != *id);
            gone.ok_or_else(|| Error::not_found(format!("snapshot {id} is not kept")))?
        };
        let mut candidates = std::mem::take(&mut ck.candidates);
        self.core.add_kept_live(&mut ck, &gone, &mut candidates)?;
        ck.candidates = candidates;
        ck.kept_live.remove(id);
        self.core.checkpoint_all(&mut ck, true)
    }
}
