//! Roots (format version 2): the one chunk that names a whole disk state.
//!
//! Plaintext:
//! ```text
//! "MCROOT01" (8) | version u32 (1) | disk size u64 | seq u64 | unix time u64
//! | has_parent u8 | [parent RootRef (52)]
//! | run count u32 | RunDesc...          (newest level first)
//! | kept count u32 | RootRef...         (snapshots that must stay readable)
//! | name str | message str              (str = u32 length || UTF-8)
//! | log covered u64                       (version 2 only)
//! RootRef (52): chunk id [32] | chunk size u32 | tag [16]
//! RunDesc: level u32 | entries u64 | data entries u64 | record bytes u64 | height u8
//!          | tree root NodeRef (36) | index chunk count u32 | (id [32] | size u32)...
//!          | table node count u32 | NodeRef...
//! ```
//! log covered: the number of the last write-ahead log segment whose ops this root
//! holds (see `format::wal`); 0 when unknown (version 1 roots, a disk's first root).
//! Version 2 (2026-12-02) added it; version 1 roots are read as before.
//!
//! Stored form: `seal(index key, "mindcastle/root/v1", u32 plain_len || lz4(plaintext))`.
//! The chunk id of the stored root and its tag (`snapshot=` and `snaphash=` in the
//! `.swap` file) authenticate everything below: every node is linked by its tag.

use crate::error::{Error, Result};
use crate::format::bytes::{Put, Reader};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::{Keys, Purpose, AAD_ROOT};
use crate::format::node::{unpack, NodeRef};

const MAGIC: &[u8; 8] = b"MCROOT01";
/// Version of the root layout written.
pub const ROOT_VERSION: u32 = 2;
/// Oldest version read.
const OLDEST_ROOT_VERSION: u32 = 1;
const MAX_ROOT_PLAIN: usize = 64 << 20;

/// A reference to a stored root: enough to fetch and authenticate it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RootRef {
    /// Chunk holding the root.
    pub id: ChunkId,
    /// Its size.
    pub size: u32,
    /// Its AEAD tag (the `snaphash`).
    pub tag: [u8; 16],
}

impl RootRef {
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.put_u32(self.size);
        out.extend_from_slice(&self.tag);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            id: ChunkId(r.array()?),
            size: r.u32()?,
            tag: r.array()?,
        })
    }
}

/// Description of one sorted run (one level).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunDesc {
    /// Level number (0 is newest).
    pub level: u32,
    /// Leaf entries, zero markers included.
    pub entries: u64,
    /// Leaf entries that point at data.
    pub data_entries: u64,
    /// Sum of stored record lengths referenced.
    pub record_bytes: u64,
    /// Tree height: 0 when the root is a leaf.
    pub height: u8,
    /// Tree root node.
    pub root: NodeRef,
    /// Index chunks holding this run's nodes, with their sizes.
    pub index_chunks: Vec<(ChunkId, u32)>,
    /// Chunk table nodes, in order.
    pub tables: Vec<NodeRef>,
}

/// A decoded root.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Root {
    /// Disk size in bytes.
    pub size: u64,
    /// Checkpoint counter.
    pub seq: u64,
    /// Unix seconds when written.
    pub time: u64,
    /// The previous root, if any.
    pub parent: Option<RootRef>,
    /// Levels, newest first.
    pub runs: Vec<RunDesc>,
    /// Snapshots kept readable.
    pub kept: Vec<RootRef>,
    /// Optional name.
    pub name: String,
    /// Optional message.
    pub message: String,
    /// The last log segment whose ops this root holds (0: unknown).
    pub log_covered: u64,
}

impl Root {
    /// Plaintext encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.put_u32(ROOT_VERSION);
        out.put_u64(self.size);
        out.put_u64(self.seq);
        out.put_u64(self.time);
        match &self.parent {
            Some(p) => {
                out.push(1);
                p.put(&mut out);
            }
            None => out.push(0),
        }
        out.put_u32(self.runs.len() as u32);
        for run in &self.runs {
            out.put_u32(run.level);
            out.put_u64(run.entries);
            out.put_u64(run.data_entries);
            out.put_u64(run.record_bytes);
            out.push(run.height);
            run.root.put(&mut out);
            out.put_u32(run.index_chunks.len() as u32);
            for (id, size) in &run.index_chunks {
                out.extend_from_slice(&id.0);
                out.put_u32(*size);
            }
            out.put_u32(run.tables.len() as u32);
            for t in &run.tables {
                t.put(&mut out);
            }
        }
        out.put_u32(self.kept.len() as u32);
        for k in &self.kept {
            k.put(&mut out);
        }
        out.put_str(&self.name);
        out.put_str(&self.message);
        out.put_u64(self.log_covered);
        out
    }

    /// Decodes and validates a plaintext root.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let mut r = Reader::new(plain, "root");
        if r.take(8)? != MAGIC {
            return Err(Error::corrupt("root: bad magic"));
        }
        let version = r.u32()?;
        if !(OLDEST_ROOT_VERSION..=ROOT_VERSION).contains(&version) {
            return Err(Error::corrupt(format!(
                "root: version {version}, this build reads {OLDEST_ROOT_VERSION} to {ROOT_VERSION}"
            )));
        }
        let size = r.u64()?;
        let seq = r.u64()?;
        let time = r.u64()?;
        let parent = match r.u8()? {
            0 => None,
            1 => Some(RootRef::get(&mut r)?),
            x => return Err(Error::corrupt(format!("root: parent flag {x}"))),
        };
        let n = r.count(4 + 24 + 1 + NodeRef::SIZE + 8)?;
        let mut runs = Vec::with_capacity(n);
        for _ in 0..n {
            let level = r.u32()?;
            let entries = r.u64()?;
            let data_entries = r.u64()?;
            let record_bytes = r.u64()?;
            let height = r.u8()?;
            let root = NodeRef::get(&mut r)?;
            let ni = r.count(36)?;
            let mut index_chunks = Vec::with_capacity(ni);
            for _ in 0..ni {
                index_chunks.push((ChunkId(r.array()?), r.u32()?));
            }
            let nt = r.count(NodeRef::SIZE)?;
            let mut tables = Vec::with_capacity(nt);
            for _ in 0..nt {
                tables.push(NodeRef::get(&mut r)?);
            }
            if root.chunk as usize >= index_chunks.len() {
                return Err(Error::corrupt(
                    "root: run tree root outside its index chunks",
                ));
            }
            runs.push(RunDesc {
                level,
                entries,
                data_entries,
                record_bytes,
                height,
                root,
                index_chunks,
                tables,
            });
        }
        let nk = r.count(52)?;
        let mut kept = Vec::with_capacity(nk);
        for _ in 0..nk {
            kept.push(RootRef::get(&mut r)?);
        }
        let name = r.string(4096)?;
        let message = r.string(1 << 20)?;
        let log_covered = if version >= 2 { r.u64()? } else { 0 };
        r.finish()?;
        Ok(Self {
            size,
            seq,
            time,
            parent,
            runs,
            kept,
            name,
            message,
            log_covered,
        })
    }

    /// Compresses and seals; returns stored bytes and tag.
    pub fn seal(&self, keys: &Keys) -> Result<(Vec<u8>, [u8; 16])> {
        let packed = lz4_flex::block::compress_prepend_size(&self.encode());
        keys.seal(Purpose::Index, AAD_ROOT, packed)
    }

    /// Opens a stored root, checking its tag.
    pub fn open(keys: &Keys, stored: &[u8], tag: &[u8; 16]) -> Result<Self> {
        let packed = keys.open(Purpose::Index, AAD_ROOT, stored, Some(tag))?;
        Self::decode(&unpack(&packed, MAX_ROOT_PLAIN)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::DiskKey;

    #[test]
    fn root_round_trip() -> Result<()> {
        let keys = Keys::new(&DiskKey([5; 32]))?;
        let root = Root {
            log_covered: 9,
            size: 1 << 30,
            seq: 3,
            time: 17,
            parent: Some(RootRef {
                id: ChunkId([1; 32]),
                size: 9,
                tag: [2; 16],
            }),
            runs: vec![RunDesc {
                level: 0,
                entries: 2,
                data_entries: 1,
                record_bytes: 100,
                height: 0,
                root: NodeRef::default(),
                index_chunks: vec![(ChunkId([3; 32]), 77)],
                tables: vec![NodeRef::default()],
            }],
            kept: vec![RootRef {
                id: ChunkId([4; 32]),
                size: 1,
                tag: [0; 16],
            }],
            name: "n".into(),
            message: "m".into(),
        };
        let (stored, tag) = root.seal(&keys)?;
        assert_eq!(Root::open(&keys, &stored, &tag)?, root);
        let mut bad = stored;
        bad[3] ^= 0x40;
        assert!(Root::open(&keys, &bad, &tag).is_err());
        // Version 1 (no log covered field) still reads, as "unknown".
        let mut v1 = root.encode();
        v1.truncate(v1.len() - 8);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        let old = Root::decode(&v1)?;
        assert_eq!(old.log_covered, 0);
        assert_eq!(old.runs, root.runs);
        let mut v3 = root.encode();
        v3[8..12].copy_from_slice(&3u32.to_le_bytes());
        assert!(Root::decode(&v3).is_err());
        Ok(())
    }
}
