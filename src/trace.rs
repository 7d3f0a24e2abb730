//! Read trace for later prefetch work: one text line `offset length unix_nanos` per read
//! the block device served, appended to a file.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

/// An open trace file; shared by the threads serving reads.
#[derive(Debug)]
pub struct ReadTrace {
    out: Mutex<BufWriter<std::fs::File>>,
}

impl ReadTrace {
    /// Opens `path` for appending (created if missing).
    pub fn open(path: &Path) -> Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("trace file {}", path.display()), e))?;
        Ok(Self {
            out: Mutex::new(BufWriter::new(f)),
        })
    }

    /// Logs one read. A trace that cannot be written never fails the read.
    pub fn record(&self, offset: u64, length: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        if let Ok(mut w) = self.out.lock() {
            let _ = writeln!(w, "{offset} {length} {now}");
        }
    }

    /// Writes buffered lines out.
    pub fn flush(&self) {
        if let Ok(mut w) = self.out.lock() {
            let _ = w.flush();
        }
    }
}
