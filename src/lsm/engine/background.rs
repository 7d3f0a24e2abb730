//! The background thread: checkpoints when a memtable is frozen, compaction when
//! writes pause.

use super::*;

impl Engine {
    /// Merges every level into the bottom one, so overwritten records stop holding
    /// chunks (collected at once) and mostly dead data chunks are rewritten; returns
    /// the new root. The background thread does this by itself once writes have
    /// paused for `IDLE` and enough was written since the last time.
    pub fn compact(&self) -> Result<Option<RootRef>> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        self.core.compact(&mut ck)?;
        drop(ck);
        self.root()
    }
}

impl Core {
    /// Commits the frozen memtable, if any, then a root with every level merged into
    /// the bottom one. Caller holds `ckpt`.
    pub(super) fn compact(&self, ck: &mut CkptState) -> Result<()> {
        self.commit(ck, false)?;
        self.commit_root(ck, true, &Label::default(), true)
    }

    /// Whether the disk has been idle for `IDLE` after enough writes that a full merge
    /// pays: at least `COMPACT_MIN_ENTRIES` entries written, and at least an eighth of
    /// the entries in the tree (so its cost is at most eight merges per entry written).
    /// A tree of one run qualifies too: the merge that made it rewrote only chunks less
    /// than half live, and the ones between a half and seven eighths are what this
    /// gives back (random writes that ended just after a merge into the bottom level
    /// left a disk at 0.73 of logical where compaction brings it to 0.54).
    pub(super) fn compaction_due(&self) -> bool {
        let now = self.opened.elapsed().as_millis() as u64;
        if now.saturating_sub(self.last_write_ms.load(Ordering::Relaxed)) < IDLE.as_millis() as u64
        {
            return false;
        }
        if self.compact_again.load(Ordering::Relaxed) {
            return true;
        }
        let written = self.since_compaction.load(Ordering::Relaxed);
        if written < COMPACT_MIN_ENTRIES {
            return false;
        }
        let Ok(st) = self.state.read() else {
            return false;
        };
        let entries: u64 = st.tree.runs().map(|r| r.desc.entries).sum();
        st.tree.runs().next().is_some() && written.saturating_mul(8) >= entries
    }

    pub(super) fn request_checkpoint(&self) {
        if let Ok(mut w) = self.wake.0.lock() {
            w.requested = true;
        }
        self.wake.1.notify_one();
    }

    /// The background thread: commits frozen memtables until the engine is dropped.
    pub(super) fn background_checkpoints(&self) {
        loop {
            {
                let Ok(mut w) = self.wake.0.lock() else {
                    return;
                };
                // A compaction that ran out of rewrite budget goes on at once while
                // writes stay paused: waiting a third of `IDLE` between passes of half
                // a second left random writes' dead space for the next idle moment.
                let mut idle = !w.requested
                    && self.compact_again.load(Ordering::Relaxed)
                    && self.compaction_due();
                while !idle && !w.requested && !w.stop {
                    let (g, timeout) = match self.wake.1.wait_timeout(w, IDLE / 3) {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    w = g;
                    if timeout.timed_out() && !w.requested && self.compaction_due() {
                        idle = true;
                        break;
                    }
                }
                if w.stop {
                    return;
                }
                if !idle {
                    w.requested = false;
                }
                drop(w);
                if idle {
                    let Ok(mut ck) = self.ckpt.lock() else {
                        return;
                    };
                    if let Err(e) = self.compact(&mut ck) {
                        tracing::warn!(error = %e, "idle compaction failed; will retry");
                        // Not again until more is written (nor at once: a pass that
                        // fails fast, on a full disk, would spin).
                        self.since_compaction.store(0, Ordering::Relaxed);
                        self.compact_again.store(false, Ordering::Relaxed);
                    }
                    continue;
                }
            }
            let Ok(mut ck) = self.ckpt.lock() else {
                return;
            };
            if let Err(e) = self.commit(&mut ck, false) {
                tracing::warn!(error = %e, "background checkpoint failed; will retry");
            }
        }
    }
}
