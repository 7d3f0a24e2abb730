//! Index nodes (format version 1): the B+tree of a sorted run, plus the run's chunk table.
//!
//! Plaintext of every node:
//! ```text
//! offset size field
//! 0      4    magic "MCN1"
//! 4      1    kind: 1 leaf, 2 inner, 3 chunk table
//! 5      1    version (1)
//! 6      2    reserved, zero
//! 8      4    count (u32 LE)
//! 12     ...  count entries
//! leaf entry  (36): lba u64 | chunk u32 | offset u32 | len u32 | tag [16]
//!                   chunk = 0xFFFF_FFFF marks a zero block (offset = len = 0, tag zero)
//!                   chunk otherwise indexes the run's chunk table
//! inner entry (36): first_lba u64 | child NodeRef (28)
//! table entry (40): chunk id [32] | chunk size u32 | live record bytes u32
//! NodeRef     (28): index chunk u32 (into the run's index chunk list) | offset u32 |
//!                   len u32 | tag [16] (the child's AEAD tag: a Merkle link)
//! ```
//! Stored form: `seal(index key, "mindcastle/node/v1", u32 plain_len || lz4(plaintext))`.
//! Leaf entries are sorted by strictly increasing lba; inner entries by first_lba.

use crate::error::{Error, Result};
use crate::format::bytes::{Put, Reader};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::{Keys, Purpose, AAD_NODE};

const MAGIC: &[u8; 4] = b"MCN1";
/// Version of the node layout.
pub const NODE_VERSION: u8 = 1;
/// Largest plaintext node accepted when decoding.
pub const MAX_NODE_PLAIN: usize = 1 << 20;
/// Marks a zero block in a leaf entry.
pub const ZERO_CHUNK: u32 = u32::MAX;

/// Location of a node inside a run's index chunks, plus its tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NodeRef {
    /// Index into the run's list of index chunks.
    pub chunk: u32,
    /// Byte offset in that chunk.
    pub offset: u32,
    /// Stored length.
    pub len: u32,
    /// AEAD tag of the stored node.
    pub tag: [u8; 16],
}

impl NodeRef {
    /// Bytes of an encoded NodeRef.
    pub const SIZE: usize = 28;
    /// Appends the encoding.
    pub fn put(&self, out: &mut Vec<u8>) {
        out.put_u32(self.chunk);
        out.put_u32(self.offset);
        out.put_u32(self.len);
        out.extend_from_slice(&self.tag);
    }
    /// Decodes one.
    pub fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            chunk: r.u32()?,
            offset: r.u32()?,
            len: r.u32()?,
            tag: r.array()?,
        })
    }
}

/// One block's entry in a leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeafEntry {
    /// Block number.
    pub lba: u64,
    /// Chunk table index, or `ZERO_CHUNK`.
    pub chunk: u32,
    /// Offset of the record in the data chunk.
    pub offset: u32,
    /// Stored record length.
    pub len: u32,
    /// Record tag.
    pub tag: [u8; 16],
}

/// One child of an inner node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InnerEntry {
    /// Smallest lba under the child.
    pub first_lba: u64,
    /// The child.
    pub child: NodeRef,
}

/// One data chunk used by a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry {
    /// The data chunk.
    pub id: ChunkId,
    /// Its size in bytes.
    pub size: u32,
    /// Bytes of its records the run still references.
    pub live: u32,
}

/// A decoded node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// Block entries.
    Leaf(Vec<LeafEntry>),
    /// Children.
    Inner(Vec<InnerEntry>),
    /// Part of the run's chunk table.
    Table(Vec<TableEntry>),
}

impl Node {
    /// Bytes this node takes in memory once decoded (for the cache's bound).
    pub fn mem_bytes(&self) -> usize {
        std::mem::size_of::<Node>()
            + match self {
                Node::Leaf(v) => v.capacity() * std::mem::size_of::<LeafEntry>(),
                Node::Inner(v) => v.capacity() * std::mem::size_of::<InnerEntry>(),
                Node::Table(v) => v.capacity() * std::mem::size_of::<TableEntry>(),
            }
    }

    /// Plaintext encoding.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, count) = match self {
            Node::Leaf(v) => (1u8, v.len()),
            Node::Inner(v) => (2, v.len()),
            Node::Table(v) => (3, v.len()),
        };
        let mut out = Vec::with_capacity(12 + count * 44);
        out.extend_from_slice(MAGIC);
        out.push(kind);
        out.push(NODE_VERSION);
        out.put_u16(0);
        out.put_u32(u32::try_from(count).unwrap_or(u32::MAX));
        match self {
            Node::Leaf(v) => {
                for e in v {
                    out.put_u64(e.lba);
                    out.put_u32(e.chunk);
                    out.put_u32(e.offset);
                    out.put_u32(e.len);
                    out.extend_from_slice(&e.tag);
                }
            }
            Node::Inner(v) => {
                for e in v {
                    out.put_u64(e.first_lba);
                    e.child.put(&mut out);
                }
            }
            Node::Table(v) => {
                for e in v {
                    out.extend_from_slice(&e.id.0);
                    out.put_u32(e.size);
                    out.put_u32(e.live);
                }
            }
        }
        out
    }

    /// Decodes and validates a plaintext node.
    pub fn decode(plain: &[u8]) -> Result<Self> {
        let mut r = Reader::new(plain, "index node");
        if r.take(4)? != MAGIC {
            return Err(Error::corrupt("index node: bad magic"));
        }
        let kind = r.u8()?;
        let version = r.u8()?;
        if version != NODE_VERSION {
            return Err(Error::corrupt(format!(
                "index node: version {version}, expected {NODE_VERSION}"
            )));
        }
        let _reserved = r.u16()?;
        let node = match kind {
            1 => {
                let n = r.count(36)?;
                let mut v: Vec<LeafEntry> = Vec::with_capacity(n);
                for _ in 0..n {
                    let e = LeafEntry {
                        lba: r.u64()?,
                        chunk: r.u32()?,
                        offset: r.u32()?,
                        len: r.u32()?,
                        tag: r.array()?,
                    };
                    if v.last().is_some_and(|p| p.lba >= e.lba) {
                        return Err(Error::corrupt("leaf entries out of order"));
                    }
                    v.push(e);
                }
                Node::Leaf(v)
            }
            2 => {
                let n = r.count(36)?;
                let mut v: Vec<InnerEntry> = Vec::with_capacity(n);
                for _ in 0..n {
                    let e = InnerEntry {
                        first_lba: r.u64()?,
                        child: NodeRef::get(&mut r)?,
                    };
                    if v.last().is_some_and(|p| p.first_lba >= e.first_lba) {
                        return Err(Error::corrupt("inner entries out of order"));
                    }
                    v.push(e);
                }
                if v.is_empty() {
                    return Err(Error::corrupt("empty inner node"));
                }
                Node::Inner(v)
            }
            3 => {
                let n = r.count(40)?;
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(TableEntry {
                        id: ChunkId(r.array()?),
                        size: r.u32()?,
                        live: r.u32()?,
                    });
                }
                Node::Table(v)
            }
            k => return Err(Error::corrupt(format!("index node: unknown kind {k}"))),
        };
        r.finish()?;
        Ok(node)
    }

    /// Compresses and seals; returns stored bytes and tag.
    pub fn seal(&self, keys: &Keys) -> Result<(Vec<u8>, [u8; 16])> {
        let plain = self.encode();
        let packed = lz4_flex::block::compress_prepend_size(&plain);
        keys.seal(Purpose::Index, AAD_NODE, packed)
    }

    /// Opens stored bytes, checking the tag against the parent's reference.
    pub fn open(keys: &Keys, stored: &[u8], tag: &[u8; 16]) -> Result<Self> {
        let packed = keys.open(Purpose::Index, AAD_NODE, stored, Some(tag))?;
        let plain = unpack(&packed, MAX_NODE_PLAIN)?;
        Self::decode(&plain)
    }
}

/// Undoes `compress_prepend_size`, refusing sizes above `max`.
pub fn unpack(packed: &[u8], max: usize) -> Result<Vec<u8>> {
    let mut r = Reader::new(packed, "compressed item");
    let n = r.u32()? as usize;
    if n > max {
        return Err(Error::corrupt(format!("compressed item claims {n} bytes")));
    }
    lz4_flex::block::decompress_size_prepended(packed)
        .map_err(|e| Error::corrupt(format!("item does not decompress: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::DiskKey;

    #[test]
    fn nodes_round_trip() -> Result<()> {
        let keys = Keys::new(&DiskKey([3; 32]))?;
        let leaf = Node::Leaf(vec![
            LeafEntry {
                lba: 1,
                chunk: 0,
                offset: 0,
                len: 100,
                tag: [9; 16],
            },
            LeafEntry {
                lba: 5,
                chunk: ZERO_CHUNK,
                offset: 0,
                len: 0,
                tag: [0; 16],
            },
        ]);
        let (stored, tag) = leaf.seal(&keys)?;
        assert_eq!(Node::open(&keys, &stored, &tag)?, leaf);
        let table = Node::Table(vec![TableEntry {
            id: ChunkId([4; 32]),
            size: 10,
            live: 5,
        }]);
        assert_eq!(Node::decode(&table.encode())?, table);
        let inner = Node::Inner(vec![InnerEntry {
            first_lba: 0,
            child: NodeRef::default(),
        }]);
        assert_eq!(Node::decode(&inner.encode())?, inner);
        Ok(())
    }

    #[test]
    fn out_of_order_leaf_is_refused() {
        // The same lba twice: entries must strictly increase.
        let e = LeafEntry {
            lba: 5,
            chunk: 0,
            offset: 0,
            len: 1,
            tag: [0; 16],
        };
        let bad = Node::Leaf(vec![e, e]);
        assert!(Node::decode(&bad.encode()).is_err());
        assert!(Node::decode(b"MCN1").is_err());
        assert!(Node::decode(&[]).is_err());
    }
}

#[cfg(test)]
mod inner_tests {
    use super::*;
    use crate::format::crypto::DiskKey;

    #[test]
    fn inner_with_many_children() -> Result<()> {
        let keys = Keys::new(&DiskKey([3; 32]))?;
        let v: Vec<InnerEntry> = (0..16)
            .map(|i| InnerEntry {
                first_lba: i * 1024,
                child: NodeRef {
                    chunk: 0,
                    offset: i as u32 * 100,
                    len: 50,
                    tag: [i as u8; 16],
                },
            })
            .collect();
        let n = Node::Inner(v);
        let (s, t) = n.seal(&keys)?;
        assert_eq!(Node::open(&keys, &s, &t)?, n);
        Ok(())
    }
}
