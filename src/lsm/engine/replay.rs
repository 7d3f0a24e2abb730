//! Replay at open: the log's ops into the memtable, checked against the root they
//! were written on.

use super::*;

/// A log segment must apply on top of the current root or an older one: a base newer
/// than the root (the `.swap` file was put back to an older state, or lost its root)
/// would replay writes onto the wrong disk.
pub(super) fn check_base(base: &LogBase, root: Option<&RootRef>, root_seq: u64) -> Result<()> {
    let Some(base_id) = base.id else {
        return Ok(());
    };
    let ok = match root {
        None => false,
        Some(r) if r.id == base_id => true,
        // An older root (seq unknown in logs of before 2026-11-30 reads as 0).
        Some(_) => u64::from(base.seq) < (root_seq & u64::from(u32::MAX)) || base.seq == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::corrupt(format!(
            "the write-ahead log was written on top of root {base_id} (seq {}), which the \
             .swap file's root ({}) does not descend from; refusing to replay it onto the \
             wrong state. Put back the .swap file that goes with this data folder",
            base.seq,
            root.map_or("none".to_string(), |r| format!("{} seq {root_seq}", r.id)),
        )))
    }
}

/// Why a log can name blocks past the end, and what to do.
const PAST_END: &str = "was size= made smaller while the log held writes? put it back; \
                        resize --shrink drops blocks safely";

impl Core {
    pub(super) fn replay(&self, ops: Vec<WalOp>) -> Result<()> {
        let mut st = self.state.write().map_err(|_| lock_err())?;
        // Whether each chunk a stored op names is whole (checked once per chunk).
        let mut whole: HashMap<ChunkId, bool> = HashMap::new();
        let mut named = Vec::new();
        for op in ops {
            match op {
                WalOp::Stored {
                    lba,
                    chunk,
                    chunk_size,
                    records,
                } => {
                    let count = records.len() as u64;
                    if lba.checked_add(count).is_none_or(|end| end > self.blocks()) {
                        return Err(Error::corrupt(format!(
                            "write-ahead log names blocks {lba}+{count}, past the end of the disk \
                             ({PAST_END})"
                        )));
                    }
                    let ok = *whole
                        .entry(chunk)
                        .or_insert_with(|| self.chunk_is_whole(&chunk, chunk_size));
                    // Once the replayed ops are checkpointed, a chunk no root reaches
                    // (overwritten, or torn) is garbage this process knows about.
                    named.push(chunk);
                    if !ok {
                        // Only a write no flush acknowledged can name a chunk that is not
                        // whole (a flush syncs the chunk before the log): it is dropped.
                        tracing::warn!(
                            chunk = %chunk,
                            first_block = lba,
                            blocks = count,
                            "the log names a data chunk that is missing or torn; that unacknowledged write is dropped"
                        );
                        continue;
                    }
                    for (i, (offset, len, tag)) in records.into_iter().enumerate() {
                        let d = DataRef {
                            chunk,
                            chunk_size,
                            offset,
                            len,
                            tag,
                        };
                        st.mem.insert(lba + i as u64, MemEntry::Stored(d));
                    }
                }
                WalOp::Data { lba, record } => {
                    if lba >= self.blocks() {
                        return Err(Error::corrupt(format!(
                            "write-ahead log names block {lba}, past the end of the disk ({PAST_END})"
                        )));
                    }
                    let rec = SealedRecord::from_stored(record).ok_or_else(|| {
                        Error::corrupt(format!("write-ahead log: record of block {lba} too short"))
                    })?;
                    st.mem.insert(lba, MemEntry::Data(rec));
                }
                WalOp::Zero { lba, count } => {
                    self.zero_locked(&mut st, lba, u64::from(count), Logging::Replaying)?
                }
            }
        }
        drop(st);
        self.ckpt
            .lock()
            .map_err(|_| lock_err())?
            .candidates
            .extend(named);
        Ok(())
    }

    /// True when data chunk `id` is in the store with `size` bytes that hash to its name.
    pub(super) fn chunk_is_whole(&self, id: &ChunkId, size: u32) -> bool {
        match self.ctx.store.get(id) {
            Ok(bytes) => bytes.len() == size as usize && ChunkId::of(&bytes) == *id,
            Err(e) => {
                tracing::debug!(chunk = %id, error = %e, "a chunk the log names is unreadable");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_base_newer_than_the_root_is_refused() {
        let r = RootRef {
            id: ChunkId([1; 32]),
            size: 10,
            tag: [0; 16],
        };
        let same = LogBase {
            id: Some(r.id),
            seq: 5,
            segment: 0,
        };
        let older = LogBase {
            id: Some(ChunkId([2; 32])),
            seq: 3,
            segment: 0,
        };
        let newer = LogBase {
            id: Some(ChunkId([3; 32])),
            seq: 9,
            segment: 0,
        };
        let legacy = LogBase {
            id: Some(ChunkId([4; 32])),
            seq: 0,
            segment: 0,
        };
        assert!(check_base(&same, Some(&r), 5).is_ok());
        assert!(check_base(&older, Some(&r), 5).is_ok());
        assert!(check_base(&legacy, Some(&r), 5).is_ok());
        assert!(check_base(&LogBase::default(), Some(&r), 5).is_ok());
        assert!(check_base(&newer, Some(&r), 5).is_err());
        assert!(check_base(&older, None, 0).is_err());
    }
}
