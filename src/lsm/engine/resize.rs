//! Changing the disk's size.

use super::*;

impl Engine {
    /// Makes the disk `size` bytes (a positive multiple of the block size) and
    /// checkpoints: the new root and the `.swap` file's `size=` name the new size
    /// together. A shrink drops the blocks past the new end; a grow makes the new space
    /// read as zeros (blocks an earlier shrink by an edit of `size=` only hid are
    /// dropped too). The dropped blocks are zeroed in the memtable without a log op
    /// and the size changes under the same locks, so a crash before the root is named
    /// leaves the disk as it was. A checkpoint that fails puts the old size back; its
    /// zeros may still reach a later root, dropping only blocks the resize was asked
    /// to drop or that could not be read. Returns how many blocks held data and were
    /// dropped. The caller holds the disk alone: a write racing the resize could land
    /// past the new end before the size changes.
    pub fn resize(&self, size: u64) -> Result<u64> {
        self.core.check_writable()?;
        let bs = BLOCK_SIZE as u64;
        if size == 0 || !size.is_multiple_of(bs) {
            return Err(Error::invalid(format!(
                "a disk size must be a positive multiple of {bs} bytes, not {size}"
            )));
        }
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        // What is pending goes into a root of its own first, at the old size.
        self.core.checkpoint_all(&mut ck, false)?;
        let old = self.core.size();
        let dropped = {
            let mut st = self.core.state.write().map_err(|_| lock_err())?;
            let from = size.min(old) / bs;
            let gone = crate::lsm::diff::data_blocks_from(
                &self.core.ctx,
                &st.tree,
                read::pending_locs_of(&st),
                from,
            )?;
            for lba in &gone {
                st.mem.insert(*lba, MemEntry::Zero);
            }
            self.core.size.store(size, Ordering::Release);
            gone.len() as u64
        };
        if let Err(e) = self.core.checkpoint_all(&mut ck, true) {
            self.core.size.store(old, Ordering::Release);
            return Err(e.context("resizing"));
        }
        Ok(dropped)
    }
}
