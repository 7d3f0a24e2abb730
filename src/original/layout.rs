//! Byte layouts of the original C Mindcastle's tree chunks and records (read only).
//!
//! Every integer is little-endian (the original wrote its x86-64 structs as they sit in
//! memory). Crypto is AES-256-GCM under the disk key itself (`key=`), no AAD, 16-byte
//! tags kept by whoever points at the item.
//!
//! ```text
//! tree chunk   = node[num_nodes]                    (one level: a B-tree, 32 KiB nodes)
//! node (32768) = iv[12] | AES-256-GCM ciphertext[32756]   tag kept by the parent
//! plaintext    = type u32 (1 meta, 2 inner, 3 leaf, 4 user) | body
//! meta  (node 0): root u32 @4 | first leaf u32 @8 | first leaf tag[16] @12
//!                 | first user node tag[16] @28 | height i32 @44
//!                 | magic u32 @48 (0xfedeabe0 small values, 0xfedeabe1 large)
//!                 | num_nodes u32 @52 | user_size u32 @56 | root tag[16] @60
//!                 | user data @76 when user_size <= 32684, else in user nodes
//! inner:          count i32 @4 | key u48[1258] @8 | child u32[1259] @7556
//!                 | child tag[16][1259] @12592      (child = 0: no child)
//! leaf:           count i32 @4 | next leaf u32 @8 | next leaf tag[16] @12
//!                 | key u48[M] @28 | value[M] @28+6M
//!   small value (M = 1090, 24 bytes): u64 = chunk index (bits 0-23) | offset (24-47)
//!                 | size (48-63); tag[16]
//!   large value (M = 962, 28 bytes): chunk index u32 | offset u32 | size u32 | tag[16]
//! user node:      next user node tag[16] @4 | data @20 (32736 bytes per node; the
//!                 nodes are the last ones of the chunk, in order)
//! user data:      level u32 @0 | next level: level i32 @8, tree chunk id[32] @16,
//!                 size u32 @48, meta tag[16] @56 (level -1: none)
//!                 | fragments u32 @72 | garbage u64 @80 | bytes u64 @88
//!                 | chunk count u32 @96 | (chunk id[32] | size u32 | pad[4])... @104
//! record       = iv[12] | AES-256-GCM ciphertext   tag in the leaf value
//!                (iv = SHA-512(key || plaintext)[..12]); plaintext is the 4 KiB block
//!                LZ4-compressed (block format), or the raw block when 4096 bytes long.
//! ```
//! Keys are 4 KiB block numbers. Inner keys are the last key of the child to their
//! left; a partly filled last node may hang from any ancestor's extra child slot, so
//! a node's kind is read from its type, never from its depth. The large-value leaf
//! width and the user node capacity are derived from the struct sizes (no sample of
//! either exists); the rest is checked against a disk the original wrote.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

/// Size of every tree node in a tree chunk.
pub const NODE_SIZE: usize = 32768;
const IV: usize = 12;
const TAG: usize = 16;
const MAGIC_SMALL: u32 = 0xfede_abe0;
const MAGIC_LARGE: u32 = 0xfede_abe1;
const INNER_M: usize = 1258;
const SMALL_LEAF_M: usize = 1090;
const LARGE_LEAF_M: usize = 962;
const USER_INLINE_MAX: usize = NODE_SIZE - IV - 72;
const USER_NODE_DATA: usize = NODE_SIZE - IV - TAG - 4;

/// An AEAD tag (the original calls it the hash of what it authenticates).
pub type Tag = [u8; TAG];

/// A chunk named by the original: its id and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRef {
    /// SHA-512(bytes)[..32].
    pub id: ChunkId,
    /// Bytes.
    pub size: u32,
}

/// Node 0 of a tree chunk.
#[derive(Clone, Debug)]
pub struct Meta {
    /// Root node (0: an empty tree).
    pub root: u32,
    /// Root node's tag.
    pub root_tag: Tag,
    /// First leaf and its tag (the leaves form a linked list).
    pub first_leaf: u32,
    /// Tag of the first leaf.
    pub first_leaf_tag: Tag,
    /// True for 28-byte leaf values.
    pub large: bool,
    /// Nodes in the chunk.
    pub num_nodes: u32,
    /// Bytes of user data.
    pub user_size: u32,
    /// First user node's tag (when the user data does not fit in node 0).
    pub first_user_tag: Tag,
    /// User data when it fits in node 0.
    pub inline_user: Option<Vec<u8>>,
}

/// Where one block's record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Value {
    /// Index into the level's chunk list.
    pub chunk: u32,
    /// Offset of the record in that chunk.
    pub offset: u32,
    /// Stored record size (iv included).
    pub size: u32,
    /// The record's tag.
    pub tag: Tag,
}

/// A decoded node.
#[derive(Clone, Debug)]
pub enum Node {
    /// Node 0.
    Meta(Meta),
    /// An inner node: `children.len() == keys.len() + 1`.
    Inner {
        /// Separator keys.
        keys: Vec<u64>,
        /// Child node numbers (0: none) and tags.
        children: Vec<(u32, Tag)>,
    },
    /// A leaf.
    Leaf {
        /// Entries in key order.
        entries: Vec<(u64, Value)>,
        /// Next leaf (0: last) and its tag.
        next: (u32, Tag),
    },
    /// A piece of user data.
    User {
        /// The next user node's tag.
        next_tag: Tag,
        /// Up to 32736 bytes of user data.
        data: Vec<u8>,
    },
}

/// What a level's tree holds besides its entries.
#[derive(Clone, Debug)]
pub struct UserData {
    /// Level number (0 newest).
    pub level: u32,
    /// The next (older) level's tree chunk and meta tag.
    pub next: Option<(ChunkRef, Tag)>,
    /// Bytes of records this level addresses.
    pub bytes: u64,
    /// Data chunks, indexed by leaf values.
    pub chunks: Vec<ChunkRef>,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| Error::corrupt(format!("original node: u32 at {at} past its end")))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| Error::corrupt(format!("original node: u64 at {at} past its end")))
}

fn u48_at(b: &[u8], at: usize) -> Result<u64> {
    let s = b
        .get(at..at + 6)
        .ok_or_else(|| Error::corrupt(format!("original node: key at {at} past its end")))?;
    let mut w = [0u8; 8];
    w[..6].copy_from_slice(s);
    Ok(u64::from_le_bytes(w))
}

fn tag_at(b: &[u8], at: usize) -> Result<Tag> {
    b.get(at..at + TAG)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::corrupt(format!("original node: tag at {at} past its end")))
}

fn count_at(b: &[u8], at: usize, max: usize) -> Result<usize> {
    let n = u32_at(b, at)? as usize;
    if n > max {
        return Err(Error::corrupt(format!(
            "original node: count {n} above the most a node holds ({max})"
        )));
    }
    Ok(n)
}

/// Opens `iv || ciphertext` with `tag` under the disk key.
pub fn open_sealed(key: &[u8; 32], stored: &[u8], tag: &Tag) -> Result<Vec<u8>> {
    let (iv, body) = stored
        .split_at_checked(IV)
        .ok_or_else(|| Error::corrupt("sealed item shorter than its 12-byte IV"))?;
    let mut ct = Vec::with_capacity(body.len() + TAG);
    ct.extend_from_slice(body);
    ct.extend_from_slice(tag);
    let cipher = Aes256Gcm::new(key.into());
    cipher
        .decrypt(Nonce::from_slice(iv), Payload { msg: &ct, aad: &[] })
        .map_err(|_| Error::corrupt("fails its AES-256-GCM tag (damaged, or another key)"))
}

/// Decrypts and decodes one node (`stored` is its 32 KiB).
pub fn open_node(key: &[u8; 32], stored: &[u8], tag: &Tag, large: bool) -> Result<Node> {
    if stored.len() != NODE_SIZE {
        return Err(Error::corrupt(format!(
            "original tree node of {} bytes, not {NODE_SIZE}",
            stored.len()
        )));
    }
    let p = open_sealed(key, stored, tag)?;
    match u32_at(&p, 0)? {
        1 => {
            let magic = u32_at(&p, 48)?;
            let large = match magic {
                MAGIC_SMALL => false,
                MAGIC_LARGE => true,
                m => {
                    return Err(Error::corrupt(format!(
                        "original tree: meta node magic {m:#x}, not 0xfedeabe0 or 0xfedeabe1"
                    )))
                }
            };
            let user_size = u32_at(&p, 56)?;
            let inline_user = if (user_size as usize) <= USER_INLINE_MAX {
                Some(
                    p.get(76..76 + user_size as usize)
                        .ok_or_else(|| Error::corrupt("original tree: user data past node 0"))?
                        .to_vec(),
                )
            } else {
                None
            };
            Ok(Node::Meta(Meta {
                root: u32_at(&p, 4)?,
                first_leaf: u32_at(&p, 8)?,
                first_leaf_tag: tag_at(&p, 12)?,
                first_user_tag: tag_at(&p, 28)?,
                large,
                num_nodes: u32_at(&p, 52)?,
                user_size,
                root_tag: tag_at(&p, 60)?,
                inline_user,
            }))
        }
        2 => {
            let count = count_at(&p, 4, INNER_M)?;
            let keys = (0..count)
                .map(|i| u48_at(&p, 8 + 6 * i))
                .collect::<Result<Vec<_>>>()?;
            let children = (0..=count)
                .map(|i| Ok((u32_at(&p, 7556 + 4 * i)?, tag_at(&p, 12592 + TAG * i)?)))
                .collect::<Result<Vec<_>>>()?;
            Ok(Node::Inner { keys, children })
        }
        3 => {
            let m = if large { LARGE_LEAF_M } else { SMALL_LEAF_M };
            let count = count_at(&p, 4, m)?;
            let values = 28 + 6 * m;
            let mut entries = Vec::with_capacity(count);
            for i in 0..count {
                let key = u48_at(&p, 28 + 6 * i)?;
                let value = if large {
                    let at = values + 28 * i;
                    Value {
                        chunk: u32_at(&p, at)?,
                        offset: u32_at(&p, at + 4)?,
                        size: u32_at(&p, at + 8)?,
                        tag: tag_at(&p, at + 12)?,
                    }
                } else {
                    let at = values + 24 * i;
                    let w = u64_at(&p, at)?;
                    Value {
                        chunk: (w & 0xff_ffff) as u32,
                        offset: ((w >> 24) & 0xff_ffff) as u32,
                        size: (w >> 48) as u32,
                        tag: tag_at(&p, at + 8)?,
                    }
                };
                entries.push((key, value));
            }
            Ok(Node::Leaf {
                entries,
                next: (u32_at(&p, 8)?, tag_at(&p, 12)?),
            })
        }
        4 => Ok(Node::User {
            next_tag: tag_at(&p, 4)?,
            data: p
                .get(20..20 + USER_NODE_DATA)
                .ok_or_else(|| Error::corrupt("original tree: short user node"))?
                .to_vec(),
        }),
        t => Err(Error::corrupt(format!("original tree: node type {t}"))),
    }
}

/// Decodes a level's user data.
pub fn parse_user_data(b: &[u8]) -> Result<UserData> {
    let next_level = u32_at(b, 8)? as i32;
    let next = if next_level >= 0 {
        let mut id = [0u8; 32];
        id.copy_from_slice(
            b.get(16..48)
                .ok_or_else(|| Error::corrupt("original tree: short user data"))?,
        );
        Some((
            ChunkRef {
                id: ChunkId(id),
                size: u32_at(b, 48)?,
            },
            tag_at(b, 56)?,
        ))
    } else {
        None
    };
    let n = u32_at(b, 96)? as usize;
    if 104 + 40 * n > b.len() {
        return Err(Error::corrupt(format!(
            "original tree: {n} chunk ids do not fit in {} bytes of user data",
            b.len()
        )));
    }
    let chunks = (0..n)
        .map(|i| {
            let at = 104 + 40 * i;
            let mut id = [0u8; 32];
            id.copy_from_slice(
                b.get(at..at + 32)
                    .ok_or_else(|| Error::corrupt("original tree: short chunk id"))?,
            );
            Ok(ChunkRef {
                id: ChunkId(id),
                size: u32_at(b, at + 32)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(UserData {
        level: u32_at(b, 0)?,
        next,
        bytes: u64_at(b, 88)?,
        chunks,
    })
}

/// Opens one stored record into a 4 KiB block.
pub fn open_record(key: &[u8; 32], stored: &[u8], tag: &Tag, out: &mut [u8]) -> Result<()> {
    crate::format::record::unpack_block(&open_sealed(key, stored, tag)?, out)
}
