//! Checkpoints: freezing the memtable (and sealing its log segment), then turning it
//! into chunks, merging it into the levels and naming a new root.

use super::*;

impl Engine {
    /// Writes everything written so far into chunks and a new root, publishes it, drops
    /// the log it covers and deletes chunks no root reaches any more. Returns the root.
    /// A disk without a root gets one even when nothing was written (so its `.swap`
    /// names a root from then on).
    pub fn checkpoint(&self) -> Result<Option<RootRef>> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        let force = self.root()?.is_none();
        self.core.checkpoint_all(&mut ck, force)?;
        self.root()
    }
}

impl Core {
    /// Commits any frozen memtable, then freezes and commits the current one (or only
    /// writes a new root when `force` and nothing is pending). Caller holds `ckpt`.
    pub(super) fn checkpoint_all(&self, ck: &mut CkptState, force: bool) -> Result<()> {
        self.commit(ck, false)?;
        let froze = {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            self.freeze(&mut st)?
        };
        if froze || force {
            self.commit(ck, force)?;
        }
        Ok(())
    }

    /// Freezes the memtable and seals its log segment when either holds anything; false
    /// when there was nothing to freeze. Fails while an earlier frozen memtable is not committed.
    pub(super) fn freeze(&self, st: &mut State) -> Result<bool> {
        // A log with ops and an empty memtable (zeroes of blocks already zero change
        // nothing, but are logged) is sealed too, so the root covers those ops: left
        // in the log, they would be replayed over whatever state a later root names (a
        // reset to a snapshot where those blocks hold data).
        let log_has_ops = self.wal.as_ref().is_some_and(|w| !w.is_empty());
        if st.mem.is_empty() && !log_has_ops {
            return Ok(false);
        }
        if st.frozen.is_some() {
            return Err(Error::invalid(
                "a frozen memtable is still being checkpointed",
            ));
        }
        if let Some(w) = &self.wal {
            let started = std::time::Instant::now();
            let sealed = w.segment()?;
            w.rotate(LogBase {
                id: st.root.map(|r| r.id),
                seq: st.seq as u32,
                segment: 0, // numbered by the log
            })?;
            st.frozen_segment = sealed;
            tracing::debug!(
                us = started.elapsed().as_micros() as u64,
                bytes = st.mem.bytes(),
                entries = st.mem.len(),
                "sealed the log segment"
            );
        }
        st.frozen = Some(Arc::new(std::mem::take(&mut st.mem)));
        Ok(true)
    }

    /// Turns the frozen memtable (if any) into chunks and merges it into the levels,
    /// writes a new root, syncs the store and publishes the root; then drops the sealed
    /// log segment and collects garbage. Writes go on meanwhile: the state lock is held
    /// only to read the starting point and to publish the result. Caller holds `ckpt`.
    pub(super) fn commit(&self, ck: &mut CkptState, force: bool) -> Result<()> {
        self.commit_labeled(ck, force, &Label::default())
    }

    /// [`Core::commit`] of a root that carries `label` (a snapshot's name and message).
    pub(super) fn commit_labeled(
        &self,
        ck: &mut CkptState,
        force: bool,
        label: &Label,
    ) -> Result<()> {
        self.commit_root(ck, force, label, false)
    }

    /// [`Core::commit_labeled`], with every level merged into the bottom one first
    /// when `compact`.
    pub(super) fn commit_root(
        &self,
        ck: &mut CkptState,
        force: bool,
        label: &Label,
        compact: bool,
    ) -> Result<()> {
        let sink = self
            .sink
            .as_ref()
            .ok_or_else(|| Error::invalid("disk is open read-only"))?;
        let (frozen, mut tree, parent, seq, kept, log_covered) = {
            let st = self.state.read().map_err(|_| lock_err())?;
            if st.frozen.is_none() && !force {
                return Ok(());
            }
            (
                st.frozen.clone(),
                st.tree.clone(),
                st.root,
                st.seq,
                st.kept.clone(),
                // With a frozen memtable, the new root holds its sealed segment.
                if st.frozen.is_some() {
                    st.frozen_segment
                } else {
                    st.log_covered
                },
            )
        };
        let started = std::time::Instant::now();
        // What kept snapshots reach stays whatever the head does: merges must not copy
        // it (cached per snapshot, as the collector uses it). When a snapshot's index
        // cannot be read now (a fallback out of reach), this checkpoint rewrites nothing
        // rather than fail: the space comes back at a later one.
        let mut pinned = Some(HashSet::new());
        for k in &kept {
            let Some(set) = pinned.as_mut() else { break };
            if let Err(e) = self.add_kept_live(ck, k, set) {
                tracing::warn!(error = %e, snapshot = %k.id, "reading a kept snapshot's index failed; no chunk is rewritten at this checkpoint");
                pinned = None;
            }
        }
        let pinned = pinned.as_ref();
        // What the replaced root reached may become garbage.
        tree.live_chunks(&mut ck.candidates);
        ck.candidates.extend(parent.map(|r| r.id));
        // Writers are paced over this checkpoint while it runs (see `lsm::pacer`).
        let pacing = frozen.as_ref().filter(|m| !m.is_empty()).map(|m| {
            let entries = tree.merge_reads(self.tuning.level_base, m.len() as u64);
            PacedCheckpoint::start(&self.pacer, m.bytes(), m.len() as u64, entries)
        });
        if let Some(mem) = frozen.as_ref().filter(|m| !m.is_empty()) {
            let mut chunker = Chunker::new(self.ctx.store.as_ref())
                .with_pending_limit(self.ctx.pending_chunk_bytes);
            let mut zeros = Vec::new();
            for (lba, e) in mem.range(0, u64::MAX) {
                match e {
                    MemEntry::Data(r) => chunker.push(*lba, r)?,
                    MemEntry::Zero => zeros.push((*lba, Loc::Zero)),
                    // Already in a chunk: only the index entry is new.
                    MemEntry::Stored(d) => zeros.push((*lba, Loc::Data(*d))),
                }
            }
            let mut batch = chunker.finish()?;
            let chunked = started.elapsed();
            self.pacer.chunked();
            batch.extend(zeros);
            batch.sort_unstable_by_key(|e| e.0);
            // The data chunks stored so far (this memtable's and large writes') are
            // synced on another thread while the merge runs: the merge is CPU work and
            // the fsyncs wait on the device, and the root below still waits for both.
            // Syncs are serialized by the store, so the one after the merge syncs
            // only what was put since (the index chunks, the root).
            let store = self.ctx.store.as_ref();
            // How long the sync beside took, for the debug log: a merge that waits
            // for it is bound by the device, not by its own work.
            let timed_sync = || {
                let t = std::time::Instant::now();
                store.sync().map(|()| t.elapsed())
            };
            let (stats, synced_beside) = std::thread::scope(|s| {
                // A thread that cannot be made (out of threads or memory) is no error:
                // the sync then runs here, before the merge.
                let beside = crate::threads::spawn_named(s, "mindcastle-sync", timed_sync);
                let synced_here = match &beside {
                    Some(_) => Ok(std::time::Duration::ZERO),
                    None => timed_sync(),
                };
                let merge_started = std::time::Instant::now();
                let stats = tree
                    .insert(&self.ctx, self.tuning.level_base, batch, pinned)
                    .map(|st| (st, merge_started.elapsed()));
                let synced = match beside {
                    Some(h) => crate::threads::join(h, "chunk sync"),
                    None => synced_here,
                };
                (stats, synced)
            });
            let sync_took = synced_beside?;
            let (stats, merge_took) = stats?;
            if !compact {
                // (A checkpoint that also compacts would teach the pacer the
                // compaction's time as every checkpoint's.)
                self.pacer.merged(crate::lsm::pacer::MergeTimes {
                    merge: merge_took,
                    sync: sync_took,
                });
            }
            tracing::debug!(
                level = stats.level,
                entries = stats.entries,
                chunked_ms = chunked.as_millis() as u64,
                merged_ms = (started.elapsed() - chunked).as_millis() as u64,
                merge_work_ms = merge_took.as_millis() as u64,
                data_sync_ms = sync_took.as_millis() as u64,
                "merged memtable"
            );
        }
        if compact {
            let before = started.elapsed();
            let left = match tree.compact(&self.ctx, pinned)? {
                Some(stats) => {
                    tracing::debug!(
                        level = stats.level,
                        entries = stats.entries,
                        sparse_left = stats.sparse_left,
                        ms = (started.elapsed() - before).as_millis() as u64,
                        "compacted every level into the bottom one"
                    );
                    stats.sparse_left
                }
                None => false,
            };
            self.since_compaction.store(0, Ordering::Relaxed);
            // Another pass at the next idle moment takes the chunks this one left.
            self.compact_again.store(left, Ordering::Relaxed);
        }
        let root = Root {
            size: self.size(),
            seq: seq + 1,
            time: now(),
            parent,
            runs: tree.descs(),
            kept: kept.clone(),
            name: label.name.clone(),
            message: label.message.clone(),
            log_covered,
        };
        let (stored, tag) = root.seal(&self.ctx.keys)?;
        let id = self.ctx.store.put(&stored)?;
        let rref = RootRef {
            id,
            size: stored.len() as u32,
            tag,
        };
        ck.candidates.extend(self.recorder.take_put()?);
        // Every chunk the root reaches is durable before anything names it.
        let before_sync = started.elapsed();
        self.ctx.store.sync()?;
        let synced = started.elapsed();
        sink.publish(&rref, root.size)?;
        tracing::debug!(
            sync_ms = (synced - before_sync).as_millis() as u64,
            publish_ms = (started.elapsed() - synced).as_millis() as u64,
            "root named"
        );
        {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            st.tree = tree.clone();
            st.root = Some(rref);
            st.seq = root.seq;
            st.log_covered = log_covered;
            // The new root is durable and named: the sealed segment's ops are all in
            // it. Dropped before the frozen memtable is let go, so a writer never finds
            // "nothing frozen" while the sealed segment still exists.
            if frozen.is_some() {
                if let Some(w) = &self.wal {
                    w.drop_old()?;
                }
            }
            st.frozen = None;
        }
        drop(pacing);
        if let Some(mem) = frozen {
            // Its records were the largest allocation; hand the memory back now. Not
            // after a memtable of large writes' references: it freed little, and the
            // trim's cost is in what follows it (the freed pages of the request and
            // chunk buffers faulted in again, and a TLB flush on every core).
            let held = mem.bytes();
            drop(mem);
            if held >= self.tuning.memtable_bytes / 4 {
                crate::memory::release_free_memory();
            }
        }
        if let Err(e) = self.collect(ck, &tree, rref, &kept) {
            tracing::warn!(error = %e, "garbage collection failed; will retry at the next checkpoint");
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, root = %id, "checkpoint");
        Ok(())
    }
}
