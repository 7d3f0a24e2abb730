//! Import of a raw image into a disk, and export of a disk as a raw image (holes become
//! seeks when the output is a regular file, so the result is sparse).

use std::io::{Read, Seek, SeekFrom, Write};

use super::Volume;
use crate::error::{Error, Result};

/// Bytes imported per step.
pub const STEP: usize = 4 << 20;
/// Bytes exported per step: large, so a disk behind a slow store is read with many
/// requests in flight at once (see `lsm::lookup`).
pub const EXPORT_STEP: usize = 32 << 20;

impl Volume {
    /// Writes the bytes of `input` from offset 0; returns the bytes read. `progress` gets
    /// the running total. Ends with a flush and a checkpoint.
    pub fn import(&self, input: &mut dyn Read, progress: &dyn Fn(u64)) -> Result<u64> {
        let mut buf = vec![0u8; STEP];
        let mut off = 0u64;
        loop {
            let mut n = 0;
            while n < STEP {
                match input.read(buf.get_mut(n..).unwrap_or_default()) {
                    Ok(0) => break,
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("reading the image", e)),
                }
            }
            if n == 0 {
                break;
            }
            if off + n as u64 > self.size() {
                return Err(Error::invalid(format!(
                    "the image is larger than the {}-byte disk",
                    self.size()
                )));
            }
            self.write_at(off, buf.get(..n).unwrap_or_default())?;
            off += n as u64;
            progress(off);
            if n < STEP {
                break;
            }
        }
        self.flush()?;
        self.checkpoint()?;
        Ok(off)
    }

    /// Writes the whole disk to `out`. With `seekable`, unallocated ranges are skipped
    /// with a seek (and the file is extended to the disk size at the end).
    pub fn export<W: Write + Seek>(
        &self,
        out: &mut W,
        seekable: bool,
        progress: &dyn Fn(u64),
    ) -> Result<()> {
        let size = self.size();
        let mut buf = vec![0u8; EXPORT_STEP];
        let mut off = 0u64;
        let werr = |e| Error::io("writing the export", e);
        while off < size {
            let n = (size - off).min(EXPORT_STEP as u64);
            let extents = self.block_status(off, n)?;
            if seekable && extents.iter().all(|e| !e.allocated) {
                out.seek(SeekFrom::Current(n as i64)).map_err(werr)?;
            } else {
                // One read for the whole step (many requests in flight when the disk is
                // behind a slow store), then holes skipped with a seek where possible.
                let b = buf
                    .get_mut(..n as usize)
                    .ok_or_else(|| Error::internal("export buffer"))?;
                self.read_at(off, b)?;
                let mut at = 0usize;
                for e in &extents {
                    let len = e.length as usize;
                    let part = b
                        .get(at..at + len)
                        .ok_or_else(|| Error::internal("export extent past the step"))?;
                    if seekable && !e.allocated {
                        out.seek(SeekFrom::Current(len as i64)).map_err(werr)?;
                    } else {
                        out.write_all(part).map_err(werr)?;
                    }
                    at += len;
                }
            }
            off += n;
            progress(off);
        }
        out.flush().map_err(werr)?;
        Ok(())
    }
}
