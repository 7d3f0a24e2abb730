//! A chunk the cache holds in part: the byte ranges fetched so far, at their own
//! offsets in a sparse file `HEX64.part`, and the list of those ranges in
//! `HEX64.ranges`, both in the cache folder.
//!
//! `HEX64.ranges`, version 1:
//! ```text
//! offset  size  field
//! 0       8     magic "MCRANGE1"
//! 8       16*n  entries, appended as ranges arrive: offset u64 LE | length u64 LE
//! ```
//! A torn tail (a length that is not 8 + 16n) is ignored. Neither file is fsynced: the
//! cache hands out range bytes only to readers that authenticate them (the record or
//! node tags they hold), and a range that fails is dropped and fetched again, so a
//! power cut that keeps an entry but loses its bytes costs one refetch, never data.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

const MAGIC: &[u8; 8] = b"MCRANGE1";
const ENTRY: usize = 16;
const DATA_SUFFIX: &str = ".part";
const RANGES_SUFFIX: &str = ".ranges";

/// Sorted, disjoint byte ranges `[start, end)` of one chunk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// Adds `[start, end)`, merging it with the ranges it touches.
    pub fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        self.0.retain(|&(a, b)| {
            let touches = a <= e && s <= b;
            if touches {
                s = s.min(a);
                e = e.max(b);
            }
            !touches
        });
        let at = self.0.partition_point(|&(a, _)| a < s);
        self.0.insert(at, (s, e));
    }

    /// True when every byte of `[start, end)` is present.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        let at = self.0.partition_point(|&(a, _)| a <= start);
        at > 0 && self.0.get(at - 1).is_some_and(|&(_, b)| b >= end)
    }

    /// Bytes present.
    pub fn bytes(&self) -> u64 {
        self.0.iter().map(|&(a, b)| b - a).sum()
    }
}

/// The two files of a partial chunk `id` in `dir`.
fn paths(dir: &Path, id: &ChunkId) -> (PathBuf, PathBuf) {
    let hex = id.to_hex();
    (
        dir.join(format!("{hex}{DATA_SUFFIX}")),
        dir.join(format!("{hex}{RANGES_SUFFIX}")),
    )
}

/// The ranges file of `id` (its modification time is the chunk's recency).
pub fn ranges_path(dir: &Path, id: &ChunkId) -> PathBuf {
    paths(dir, id).1
}

/// The chunks held in part in `dir`.
pub fn list(dir: &Path) -> Vec<ChunkId> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let hex = name.to_str()?.strip_suffix(RANGES_SUFFIX)?.to_string();
            ChunkId::from_hex(&hex).ok()
        })
        .collect()
}

/// Reads the ranges present for `id`; `None` when there is no usable ranges file.
pub fn load(dir: &Path, id: &ChunkId) -> Option<Ranges> {
    let bytes = fs::read(paths(dir, id).1).ok()?;
    let body = bytes.strip_prefix(MAGIC.as_slice())?;
    let mut r = Ranges::default();
    for e in body.chunks_exact(ENTRY) {
        let (o, l) = e.split_at(8);
        let off = u64::from_le_bytes(o.try_into().ok()?);
        let len = u64::from_le_bytes(l.try_into().ok()?);
        r.insert(off, off.checked_add(len)?);
    }
    Some(r)
}

/// Writes `bytes` at `offset` of `id`'s data file, then records the range. Callers
/// serialize writes to one chunk (the ranges file is appended to).
pub fn write(dir: &Path, id: &ChunkId, offset: u64, bytes: &[u8]) -> Result<()> {
    let (data, ranges) = paths(dir, id);
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", data.display()), e);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&data)
        .map_err(|e| io("opening", e))?;
    f.write_all_at(bytes, offset)
        .map_err(|e| io("writing", e))?;
    let mut r = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&ranges)
        .map_err(|e| io("opening the ranges of", e))?;
    let mut entry = Vec::with_capacity(MAGIC.len() + ENTRY);
    if r.metadata().map_err(|e| io("reading", e))?.len() == 0 {
        entry.extend_from_slice(MAGIC);
    }
    entry.extend_from_slice(&offset.to_le_bytes());
    entry.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    r.write_all(&entry)
        .map_err(|e| io("recording a range of", e))
}

/// Reads `len` bytes at `offset` of `id`'s data file.
pub fn read(dir: &Path, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
    let data = paths(dir, id).0;
    let f =
        fs::File::open(&data).map_err(|e| Error::io(format!("opening {}", data.display()), e))?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, offset)
        .map_err(|e| Error::io(format!("reading {}", data.display()), e))?;
    Ok(buf)
}

/// Removes both files of `id` (absent is fine).
pub fn remove(dir: &Path, id: &ChunkId) {
    let (data, ranges) = paths(dir, id);
    // The ranges file first: without it the data file is ignored.
    let _ = fs::remove_file(ranges);
    let _ = fs::remove_file(data);
}

/// Removes data files whose ranges file is gone (a removal cut short).
pub fn remove_orphans(dir: &Path) {
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(DATA_SUFFIX)) else {
            continue;
        };
        if !dir.join(format!("{hex}{RANGES_SUFFIX}")).exists() {
            let _ = fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_merge_and_cover() {
        let mut r = Ranges::default();
        r.insert(100, 200);
        r.insert(300, 400);
        assert!(r.covers(120, 200) && !r.covers(150, 250) && !r.covers(0, 10));
        r.insert(200, 300);
        assert_eq!(r, Ranges(vec![(100, 400)]));
        r.insert(50, 60);
        r.insert(55, 120);
        assert_eq!(r, Ranges(vec![(50, 400)]));
        assert_eq!(r.bytes(), 350);
        r.insert(500, 500);
        assert_eq!(r.bytes(), 350);
    }

    #[test]
    fn written_ranges_read_back_and_survive_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let id = ChunkId::of(b"x");
        write(dir.path(), &id, 4096, &[7u8; 100]).unwrap();
        write(dir.path(), &id, 0, &[9u8; 10]).unwrap();
        assert_eq!(read(dir.path(), &id, 4100, 4).unwrap(), vec![7u8; 4]);
        assert_eq!(read(dir.path(), &id, 0, 10).unwrap(), vec![9u8; 10]);
        let r = load(dir.path(), &id).unwrap();
        assert!(r.covers(4096, 4196) && r.covers(0, 10) && !r.covers(0, 11));
        // Half an entry more: ignored.
        let mut f = OpenOptions::new()
            .append(true)
            .open(ranges_path(dir.path(), &id))
            .unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(load(dir.path(), &id).unwrap(), r);
        assert_eq!(list(dir.path()), vec![id]);
        // A data file alone is an orphan.
        let _ = fs::remove_file(ranges_path(dir.path(), &id));
        remove_orphans(dir.path());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
