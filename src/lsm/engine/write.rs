//! Writes: the batch a writer fills under the state lock (records, stored runs,
//! zeroes, read-modify-write of partial blocks), large writes' own chunks, flush, and
//! the back-pressure that makes a writer wait for a checkpoint.

use super::*;

/// Changes made under the write lock: whole-block reads (for read-modify-write), puts
/// and zeroes. Each put and zero is logged before it is applied.
pub struct Batch<'a> {
    core: &'a Core,
    st: RwLockWriteGuard<'a, State>,
    /// Record bytes and entries this batch added (what pacing charges it for).
    added: (usize, usize),
}

/// Whether a zero range is written to the log (replay applies ops already logged).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Logging {
    Log,
    Replaying,
}

/// A large write's records, already stored in data chunks by
/// [`Engine::store_records`] and not yet named by the memtable; hand it to
/// [`Batch::put_stored`]. Holds garbage collection off until then.
pub struct StoredWrite<'a> {
    /// (block, where its record is), in block order.
    placed: Vec<(u64, DataRef)>,
    _gate: RwLockReadGuard<'a, ()>,
}

impl Batch<'_> {
    /// Blocks of `w` become the records it stored: logged as references (one op per run
    /// of consecutive blocks in one chunk), not as the records themselves.
    pub fn put_stored(&mut self, w: StoredWrite<'_>) -> Result<()> {
        let mut rest = &w.placed[..];
        while let Some(&(lba, first)) = rest.first() {
            let run = rest
                .iter()
                .enumerate()
                .take(crate::format::wal::MAX_STORED_COUNT)
                .take_while(|(i, (l, d))| *l == lba + *i as u64 && d.chunk == first.chunk)
                .count();
            let (now, later) = rest.split_at(run);
            self.core.check_block(lba, run as u64)?;
            if let Some(wal) = &self.core.wal {
                wal.append(&WalOp::Stored {
                    lba,
                    chunk: first.chunk,
                    chunk_size: first.chunk_size,
                    records: now.iter().map(|(_, d)| (d.offset, d.len, d.tag)).collect(),
                })?;
            }
            for (l, d) in now {
                self.st.mem.insert(*l, MemEntry::Stored(*d));
            }
            self.added.1 += run;
            rest = later;
        }
        Ok(())
    }

    /// Fills `out` (whole blocks) from block `lba`.
    pub fn read_blocks(&self, lba: u64, out: &mut [u8]) -> Result<()> {
        read_blocks(
            &self.core.ctx,
            &self.st.mem,
            self.st.frozen.as_deref(),
            &self.st.tree,
            lba,
            out,
        )
    }

    /// True when block `lba` is still at `v`, the version a read outside the lock saw
    /// ([`Engine::read_versioned`]); its index nodes are in the cache by then.
    pub fn unchanged(&self, lba: u64, v: Version) -> Result<bool> {
        let slots = lookup(
            &self.core.ctx,
            &self.st.mem,
            self.st.frozen.as_deref(),
            &self.st.tree,
            lba,
            1,
        )?;
        Ok(slots.first().map(Version::of) == Some(v))
    }

    /// Block `lba` becomes `rec`.
    pub fn put(&mut self, lba: u64, rec: SealedRecord) -> Result<()> {
        self.core.check_block(lba, 1)?;
        if let Some(w) = &self.core.wal {
            w.append_data(lba, &rec.bytes)?;
        }
        self.added.0 += rec.bytes.len();
        self.added.1 += 1;
        self.st.mem.insert(lba, MemEntry::Data(rec));
        Ok(())
    }

    /// Blocks `lba..lba+count` read as zeros.
    pub fn zero(&mut self, lba: u64, count: u64) -> Result<()> {
        self.added.1 += 1;
        self.core
            .zero_locked(&mut self.st, lba, count, Logging::Log)
    }
}

impl Engine {
    /// Runs `f` with the write lock held (reads inside see its own changes), then
    /// freezes a full memtable; waits for a checkpoint when memory would grow too far.
    /// Stores the sealed records of a large write (`(block, record)` in increasing
    /// block order) straight into data chunks cut as a checkpoint cuts them, so the log
    /// holds references instead of the records and no checkpoint copies them again.
    /// The chunks are synced by the next log sync (a flush) or checkpoint.
    /// The records come packed (one buffer per sealing thread, in block order across
    /// them): an allocation per record contended for the allocator's locks.
    pub fn store_records(&self, records: Vec<PackedRecords>) -> Result<StoredWrite<'_>> {
        self.core.check_writable()?;
        let gate = self.core.direct_gate.read().map_err(|_| lock_err())?;
        // Large writes in flight together share chunks (`combine`): fewer files. One
        // that fills half a chunk by itself stores alone, on its own thread.
        let bytes: usize = records.iter().map(PackedRecords::bytes_len).sum();
        let placed = if bytes >= combine::ALONE_BYTES {
            self.store_group(std::slice::from_ref(&records))?
                .pop()
                .ok_or_else(|| Error::internal("a stored write has no places"))?
        } else {
            self.core
                .combiner
                .store(records, bytes, |groups| self.store_group(groups))?
        };
        self.core.direct_unsynced.store(true, Ordering::SeqCst);
        Ok(StoredWrite {
            placed,
            _gate: gate,
        })
    }

    /// Packs several writes' records into data chunks through one chunker; returns
    /// each write's places, in the order given.
    fn store_group(&self, groups: &[Vec<PackedRecords>]) -> Result<Vec<Vec<(u64, DataRef)>>> {
        let mut chunker = Chunker::new(self.core.ctx.store.as_ref())
            .with_pending_limit(self.core.tuning.pending_chunk_bytes);
        for (lba, bytes, tag) in groups.iter().flatten().flat_map(PackedRecords::iter) {
            chunker.push_bytes(lba, bytes, tag)?;
        }
        // Entries come back in the order pushed: each write's, one after another.
        let mut entries = chunker.finish()?.into_iter();
        groups
            .iter()
            .map(|g| {
                let count: usize = g.iter().map(PackedRecords::len).sum();
                let placed = entries
                    .by_ref()
                    .take(count)
                    .map(|(lba, loc)| match loc {
                        Loc::Data(d) => Ok((lba, d)),
                        Loc::Zero => Err(Error::internal("the chunker placed a zero block")),
                    })
                    .collect::<Result<Vec<_>>>()?;
                if placed.len() == count {
                    Ok(placed)
                } else {
                    Err(Error::internal(
                        "the chunker placed fewer blocks than pushed",
                    ))
                }
            })
            .collect()
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<T>) -> Result<T> {
        self.update_then(f, true)
    }

    /// [`Engine::update`] that leaves the log's new ops in its buffer: the caller
    /// acknowledges the write only after [`Engine::hand_off`] (the NBD server hands a
    /// whole batch of small writes to the kernel in one write(2) before their replies).
    pub fn update_held<T>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<T>) -> Result<T> {
        self.update_then(f, false)
    }

    /// Writes the log's buffered ops to the log file (no fsync): after this, every
    /// write done so far survives the process being killed.
    pub fn hand_off(&self) -> Result<()> {
        match &self.core.wal {
            Some(w) => w.hand_off(),
            None => Ok(()),
        }
    }

    fn update_then<T>(
        &self,
        f: impl FnOnce(&mut Batch<'_>) -> Result<T>,
        hand_off: bool,
    ) -> Result<T> {
        if self.core.wal.is_none() {
            return Err(Error::invalid("disk is open read-only"));
        }
        let mut batch = Batch {
            core: &self.core,
            st: self.core.state.write().map_err(|_| lock_err())?,
            added: (0, 0),
        };
        let out = f(&mut batch)?;
        let wait = self.core.after_write(&mut batch.st)?;
        let (share, room) = self.core.pace_share(&batch);
        if batch.added.1 > 0 {
            self.core.note_write(batch.added.1);
        }
        drop(batch);
        // The write is in the kernel's hands before the caller acknowledges it: a
        // process killed after the reply loses nothing (a power cut still loses what no
        // FLUSH or FUA made durable, as on any disk with a write cache).
        if hand_off {
            self.hand_off()?;
        }
        if wait {
            self.core.wait_for_checkpoint()?;
        } else if share > 0 {
            self.core.pacer.pace(share, room);
        }
        Ok(out)
    }

    /// Whether a write now may have to wait for a checkpoint; see [`Core::may_wait`].
    pub fn write_may_wait(&self) -> bool {
        self.core.may_wait()
    }

    /// Makes every completed write durable (an fdatasync of the log, shared with
    /// concurrent flushes).
    pub fn flush(&self) -> Result<()> {
        let Some(w) = &self.core.wal else {
            return Ok(());
        };
        // Chunks of large writes first: the log must never durably name a chunk that
        // is not. (The flag is set before the log names a chunk, so every chunk the
        // log has named by now is covered.)
        if self.core.direct_unsynced.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.core.ctx.store.sync() {
                self.core.direct_unsynced.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        w.sync()
    }
}

impl Core {
    /// Marks blocks `lba..lba+count` zero where anything is stored.
    pub(super) fn zero_locked(
        &self,
        st: &mut State,
        lba: u64,
        count: u64,
        logging: Logging,
    ) -> Result<()> {
        self.check_block(lba, count)?;
        const WINDOW: u64 = 8192;
        let mut at = lba;
        while at < lba + count {
            let n = (lba + count - at).min(WINDOW).min(u64::from(u32::MAX));
            if logging == Logging::Log {
                if let Some(w) = &self.wal {
                    w.append(&WalOp::Zero {
                        lba: at,
                        count: n as u32,
                    })?;
                }
            }
            let slots = lookup(&self.ctx, &st.mem, st.frozen.as_deref(), &st.tree, at, n)?;
            for (i, s) in slots.iter().enumerate() {
                if matches!(s, Slot::Mem(_) | Slot::Disk(_)) {
                    st.mem.insert(at + i as u64, MemEntry::Zero);
                }
            }
            at += n;
        }
        Ok(())
    }

    /// After a write, with the state write lock held: freezes a full memtable and wakes
    /// the background thread. Returns true when the writer must wait for a checkpoint
    /// (the fresh memtable filled before the frozen one was committed).
    pub(super) fn after_write(&self, st: &mut State) -> Result<bool> {
        let wal_len = self.wal.as_ref().map_or(0, Wal::len);
        let full = st
            .mem
            .full(self.tuning.memtable_entries, self.tuning.memtable_bytes)
            || wal_len > MAX_WAL_BYTES;
        if !full {
            return Ok(false);
        }
        if st.frozen.is_none() {
            match self.freeze(st) {
                Ok(_) => self.request_checkpoint(),
                Err(e) => {
                    tracing::warn!(error = %e, "freezing the memtable failed; retrying later")
                }
            }
            return Ok(false);
        }
        self.request_checkpoint();
        // Both memtables are full: the writer waits, which is what bounds memory.
        Ok(true)
    }

    pub(super) fn note_write(&self, entries: usize) {
        self.since_compaction
            .fetch_add(entries as u64, Ordering::Relaxed);
        self.last_write_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether a write now may have to wait for a checkpoint (a memtable is frozen and
    /// the fresh one is three quarters full): callers that must not block long (a
    /// request run inline on an async task) hand the write to a thread instead.
    pub(super) fn may_wait(&self) -> bool {
        let Ok(st) = self.state.read() else {
            return true;
        };
        st.frozen.is_some()
            && (st.mem.bytes() >= self.tuning.memtable_bytes / 4 * 3
                || st.mem.len() >= self.tuning.memtable_entries / 4 * 3
                || self.pacer.holding())
    }

    /// What a batch is charged for pacing, and the room left it is a share of: bytes
    /// or entries, whichever limit the batch brings nearer.
    pub(super) fn pace_share(&self, batch: &Batch<'_>) -> (usize, usize) {
        if batch.st.frozen.is_none() {
            return (0, 0);
        }
        let bytes_room = self
            .tuning
            .memtable_bytes
            .saturating_sub(batch.st.mem.bytes());
        let entries_room = self
            .tuning
            .memtable_entries
            .saturating_sub(batch.st.mem.len());
        // Compare added.0 / bytes_room with added.1 / entries_room without dividing.
        if batch.added.0 as u128 * entries_room as u128
            >= batch.added.1 as u128 * bytes_room as u128
        {
            (batch.added.0, bytes_room)
        } else {
            (batch.added.1, entries_room)
        }
    }

    /// Called by writers after releasing the state lock when `after_write` said so:
    /// waits for the background checkpoint of the frozen memtable (committing it here
    /// if it is still there), then freezes the full one and hands it to the background
    /// thread. The writer waits for at most the rest of one checkpoint, never for its
    /// own. A failure is returned only once memory would otherwise grow without bound.
    pub(super) fn wait_for_checkpoint(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let mut ck = self.ckpt.lock().map_err(|_| lock_err())?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "writer waited for the background checkpoint"
        );
        let due = |st: &State| {
            st.mem
                .full(self.tuning.memtable_entries, self.tuning.memtable_bytes)
                || self.wal.as_ref().map_or(0, Wal::len) > MAX_WAL_BYTES
        };
        let result = (|| {
            let still_frozen = {
                let st = self.state.read().map_err(|_| lock_err())?;
                st.frozen.is_some() && due(&st)
            };
            if still_frozen {
                self.commit(&mut ck, false)?;
            }
            let mut st = self.state.write().map_err(|_| lock_err())?;
            if st.frozen.is_none() && due(&st) {
                self.freeze(&mut st)
            } else {
                Ok(false)
            }
        })();
        drop(ck);
        match result {
            Ok(froze) => {
                if froze {
                    self.request_checkpoint();
                }
                Ok(())
            }
            Err(e) => {
                let (entries, bytes) = {
                    let st = self.state.read().map_err(|_| lock_err())?;
                    (st.mem.len(), st.mem.bytes())
                };
                if entries > 2 * self.tuning.memtable_entries
                    || bytes > 2 * self.tuning.memtable_bytes
                {
                    return Err(e);
                }
                tracing::warn!(error = %e, "checkpoint failed; retrying later");
                Ok(())
            }
        }
    }
}
