//! The write-ahead log file: append, sync on FLUSH/FUA (fdatasync), replay at open,
//! reset after a checkpoint. Byte layout in `format::wal`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::wal::{decode_header, decode_ops, encode_header, encode_op, WalOp, HEADER_LEN};

/// Buffered bytes written to the file once they exceed this.
const BUF_LIMIT: usize = 1 << 20;

/// An open log.
pub struct Wal {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    len: u64,
}

impl Wal {
    /// Opens (creating if needed) the log at `path`, returning it with the ops to replay.
    /// A torn tail is cut off so new ops follow the last good one.
    pub fn open(path: &Path, base: Option<ChunkId>) -> Result<(Self, Vec<WalOp>)> {
        let ctx = |e| Error::io(format!("write-ahead log {}", path.display()), e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(ctx)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(ctx)?;
        let mut wal = Self {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            len: 0,
        };
        if bytes.len() < HEADER_LEN {
            wal.reset(base)?;
            return Ok((wal, Vec::new()));
        }
        decode_header(&bytes).map_err(|e| e.context(path.display().to_string()))?;
        let (ops, valid) = decode_ops(&bytes);
        if valid < bytes.len() {
            tracing::info!(path = %path.display(), dropped = bytes.len() - valid, "dropping torn tail of write-ahead log");
            wal.file.set_len(valid as u64).map_err(ctx)?;
        }
        wal.file.seek(SeekFrom::Start(valid as u64)).map_err(ctx)?;
        wal.len = valid as u64;
        Ok((wal, ops))
    }

    /// Reads the ops of a log without opening it for writing (read-only disks).
    pub fn read_ops(path: &Path) -> Result<Vec<WalOp>> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= HEADER_LEN => {
                decode_header(&bytes)?;
                Ok(decode_ops(&bytes).0)
            }
            Ok(_) => Ok(Vec::new()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(Error::io(format!("write-ahead log {}", path.display()), e)),
        }
    }

    /// Appends an op (buffered; durable after `sync`).
    pub fn append(&mut self, op: &WalOp) -> Result<()> {
        encode_op(op, &mut self.buf);
        if self.buf.len() >= BUF_LIMIT {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(&self.buf)
            .map_err(|e| Error::io(format!("appending to {}", self.path.display()), e))?;
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Makes every appended op durable.
    pub fn sync(&mut self) -> Result<()> {
        self.write_out()?;
        self.file
            .sync_data()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))
    }

    /// Empties the log after a checkpoint to `base`.
    pub fn reset(&mut self, base: Option<ChunkId>) -> Result<()> {
        let ctx = |e| Error::io(format!("resetting {}", self.path.display()), e);
        self.buf.clear();
        self.file.set_len(0).map_err(ctx)?;
        self.file.seek(SeekFrom::Start(0)).map_err(ctx)?;
        let h = encode_header(base);
        self.file.write_all(&h).map_err(ctx)?;
        self.file.sync_data().map_err(ctx)?;
        self.len = h.len() as u64;
        Ok(())
    }

    /// Bytes in the log, buffered ones included.
    pub fn len(&self) -> u64 {
        self.len + self.buf.len() as u64
    }

    /// True when the log holds no op.
    pub fn is_empty(&self) -> bool {
        self.len() <= HEADER_LEN as u64
    }
}
