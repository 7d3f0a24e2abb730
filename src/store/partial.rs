//! A chunk the cache holds in part: one sparse file `HEX64.part` in the cache folder
//! with the byte ranges fetched so far, at their own offsets, after a header listing
//! them. One file per chunk, since creating files is what a cold cache spends most on.
//!
//! `HEX64.part`, version 1:
//! ```text
//! offset  size  field
//! 0       8     magic "MCPART01"
//! 8       4     n, ranges held (u32 LE, at most MAX_RANGES)
//! 12      4     CRC32 of bytes 16..16+16n
//! 16      16*n  ranges held, sorted and disjoint: offset u64 LE | length u64 LE
//! 4096    ...   the chunk's bytes, each at 4096 + its offset in the chunk; holes where
//!               nothing is held
//! ```
//! A new range's bytes are written first, then the whole header is rewritten in one
//! write. Nothing is fsynced: a header that fails its CRC means nothing is held, and the
//! cache hands range bytes only to readers that authenticate them (the record or node
//! tags they hold), dropping a range that fails, so a power cut that keeps a header but
//! loses the bytes it lists costs a refetch, never data.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

const MAGIC: &[u8; 8] = b"MCPART01";
const HEADER: u64 = 4096;
const ENTRY: usize = 16;
/// Ranges one header lists.
pub const MAX_RANGES: usize = (HEADER as usize - 16) / ENTRY;
const SUFFIX: &str = ".part";

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

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn header(&self) -> Vec<u8> {
        let mut entries = Vec::with_capacity(self.0.len() * ENTRY);
        for &(a, b) in &self.0 {
            entries.extend_from_slice(&a.to_le_bytes());
            entries.extend_from_slice(&(b - a).to_le_bytes());
        }
        let mut out = Vec::with_capacity(16 + entries.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.0.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&entries).to_le_bytes());
        out.extend_from_slice(&entries);
        out
    }

    fn parse(header: &[u8]) -> Option<Self> {
        let rest = header.strip_prefix(MAGIC.as_slice())?;
        let n = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let crc = u32::from_le_bytes(rest.get(4..8)?.try_into().ok()?);
        if n > MAX_RANGES {
            return None;
        }
        let entries = rest.get(8..8 + n * ENTRY)?;
        if crc32fast::hash(entries) != crc {
            return None;
        }
        let mut r = Ranges::default();
        for e in entries.chunks_exact(ENTRY) {
            let off = u64::from_le_bytes(e.get(..8)?.try_into().ok()?);
            let len = u64::from_le_bytes(e.get(8..)?.try_into().ok()?);
            r.insert(off, off.checked_add(len)?);
        }
        Some(r)
    }
}

/// The file of partial chunk `id` in `dir` (its modification time is the chunk's
/// recency).
pub fn path(dir: &Path, id: &ChunkId) -> PathBuf {
    dir.join(format!("{}{SUFFIX}", id.to_hex()))
}

/// The chunks held in part in `dir`.
pub fn list(dir: &Path) -> Vec<ChunkId> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name();
            ChunkId::from_hex(name.to_str()?.strip_suffix(SUFFIX)?).ok()
        })
        .collect()
}

/// The ranges held for `id`; `None` when its file is missing or its header is bad.
pub fn load(dir: &Path, id: &ChunkId) -> Option<Ranges> {
    let f = fs::File::open(path(dir, id)).ok()?;
    let mut header = vec![0u8; HEADER as usize];
    let n = f.read_at(&mut header, 0).ok()?;
    Ranges::parse(header.get(..n)?)
}

/// Writes `bytes` at `offset` of `id`, then a header listing `held` (which must
/// include the new range). Callers serialize writes to one chunk.
pub fn write(dir: &Path, id: &ChunkId, offset: u64, bytes: &[u8], held: &Ranges) -> Result<()> {
    let p = path(dir, id);
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", p.display()), e);
    if held.len() > MAX_RANGES {
        return Err(Error::invalid(format!(
            "{}: more than {MAX_RANGES} separate ranges",
            p.display()
        )));
    }
    let at = HEADER
        .checked_add(offset)
        .ok_or_else(|| Error::invalid(format!("{}: range offset {offset}", p.display())))?;
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&p)
        .map_err(|e| io("opening", e))?;
    f.write_all_at(bytes, at).map_err(|e| io("writing", e))?;
    f.write_all_at(&held.header(), 0)
        .map_err(|e| io("writing the header of", e))
}

/// Reads `len` bytes at `offset` of `id`.
pub fn read(dir: &Path, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
    let p = path(dir, id);
    let io = |e: std::io::Error| Error::io(format!("reading {}", p.display()), e);
    let f = fs::File::open(&p).map_err(io)?;
    let mut buf = vec![0u8; len];
    f.read_exact_at(&mut buf, HEADER.saturating_add(offset))
        .map_err(io)?;
    Ok(buf)
}

/// Removes `id`'s file (absent is fine).
pub fn remove(dir: &Path, id: &ChunkId) {
    let _ = fs::remove_file(path(dir, id));
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
        assert_eq!((r.bytes(), r.len()), (350, 1));
    }

    #[test]
    fn written_ranges_read_back_and_a_bad_header_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let id = ChunkId::of(b"x");
        let mut held = Ranges::default();
        held.insert(4096, 4196);
        write(dir.path(), &id, 4096, &[7u8; 100], &held).unwrap();
        held.insert(0, 10);
        write(dir.path(), &id, 0, &[9u8; 10], &held).unwrap();
        assert_eq!(read(dir.path(), &id, 4100, 4).unwrap(), vec![7u8; 4]);
        assert_eq!(read(dir.path(), &id, 0, 10).unwrap(), vec![9u8; 10]);
        assert_eq!(load(dir.path(), &id).unwrap(), held);
        assert_eq!(list(dir.path()), vec![id]);
        // A flipped header byte: nothing held.
        let f = OpenOptions::new()
            .write(true)
            .open(path(dir.path(), &id))
            .unwrap();
        f.write_all_at(&[0xff], 20).unwrap();
        assert_eq!(load(dir.path(), &id), None);
        remove(dir.path(), &id);
        assert!(list(dir.path()).is_empty());
    }

    #[test]
    fn too_many_ranges_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let id = ChunkId::of(b"y");
        let mut held = Ranges::default();
        for i in 0..=MAX_RANGES as u64 {
            held.insert(i * 10, i * 10 + 1);
        }
        assert!(write(dir.path(), &id, 0, &[1], &held).is_err());
    }
}
