//! Disks written by the original C Mindcastle, read only: told apart from v1 disks,
//! read block by block (for `export`, `serve --read-only` and `convert`), every byte
//! authenticated.
//!
//! Both formats use the same `.swap` keys and chunk names, so the format is told by
//! which cipher opens the root named by `snapshot=` with the tag in `snaphash=`: a v1
//! root opens with AES-256-GCM-SIV under the index subkey, an original root (node 0 of
//! a tree chunk, a multiple of 32 KiB long) with AES-256-GCM under the disk key. A
//! forged or accidental match of the other format's tag is a 2^-128 event, so the
//! format is never guessed. Byte layouts: [`layout`].
//!
//! Authentication: chunk names are checked by the store stack for whole chunks; every
//! node is opened with the tag its parent (or `snaphash=`) holds, every record with the
//! tag in its leaf, so no byte reaches a reader unless the root vouches for it.

pub mod layout;

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use layout::{open_node, open_record, parse_user_data, ChunkRef, Meta, Node, Tag, UserData, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::root::RootRef;
use crate::format::BLOCK_SIZE;
use crate::store::ChunkStore;

pub use layout::NODE_SIZE;

/// The original never made more levels than this.
const MAX_LEVELS: usize = 16;
/// Decoded nodes kept (32 KiB each before decoding).
const NODE_CACHE: usize = 256;
/// Largest single range read of records.
const MAX_COALESCE: u32 = 1 << 20;

/// True when a root of this size could be an original tree chunk (whole nodes).
pub fn may_be_original(root_size: u32) -> bool {
    root_size as usize >= NODE_SIZE && (root_size as usize).is_multiple_of(NODE_SIZE)
}

/// One level: a B-tree in one tree chunk.
struct Level {
    tree: ChunkRef,
    meta: Meta,
    user: UserData,
}

/// An original-format disk, open for reading.
pub struct OriginalDisk {
    store: Arc<dyn ChunkStore>,
    key: [u8; 32],
    size: u64,
    levels: Vec<Level>,
    nodes: Mutex<lru::LruCache<(ChunkId, u32), Arc<Node>>>,
}

impl OriginalDisk {
    /// Opens the disk whose newest level is `root` (`snapshot=` and `snaphash=`), or
    /// `Ok(None)` when that root is not an original tree under this key.
    pub fn probe(
        store: Arc<dyn ChunkStore>,
        key: [u8; 32],
        root: &RootRef,
        size: u64,
    ) -> Result<Option<Self>> {
        if !may_be_original(root.size) {
            return Ok(None);
        }
        let mut disk = Self {
            store,
            key,
            size,
            levels: Vec::new(),
            nodes: Mutex::new(lru::LruCache::new(
                NonZeroUsize::new(NODE_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
        };
        let top = ChunkRef {
            id: root.id,
            size: root.size,
        };
        let meta = match disk.node(&top, 0, &root.tag, false) {
            Ok(n) => match &*n {
                Node::Meta(m) => m.clone(),
                _ => return Ok(None),
            },
            Err(e) if e.kind() == ErrorKind::Corrupt => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut next = Some((top, meta));
        while let Some((tree, meta)) = next.take() {
            if disk.levels.len() == MAX_LEVELS {
                return Err(Error::corrupt(format!(
                    "original disk: more than {MAX_LEVELS} levels below root {}",
                    root.id
                )));
            }
            if u64::from(meta.num_nodes) * NODE_SIZE as u64 != u64::from(tree.size) {
                return Err(Error::corrupt(format!(
                    "original tree chunk {}: {} nodes do not make {} bytes",
                    tree.id, meta.num_nodes, tree.size
                )));
            }
            let user = parse_user_data(&disk.user_data(&tree, &meta)?)
                .map_err(|e| e.context(format!("original tree chunk {}", tree.id)))?;
            if let Some((t, tg)) = user.next {
                let m = match &*disk.node(&t, 0, &tg, false)? {
                    Node::Meta(m) => m.clone(),
                    _ => {
                        return Err(Error::corrupt(format!(
                            "original tree chunk {}: node 0 is not a meta node",
                            t.id
                        )))
                    }
                };
                next = Some((t, m));
            }
            disk.levels.push(Level { tree, meta, user });
        }
        Ok(Some(disk))
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Number of levels.
    pub fn level_count(&self) -> usize {
        self.levels.len()
    }

    /// Every chunk the disk references: tree chunks, then data chunks.
    pub fn chunks(&self) -> Vec<ChunkRef> {
        let mut out: Vec<ChunkRef> = self.levels.iter().map(|l| l.tree).collect();
        for l in &self.levels {
            for c in &l.user.chunks {
                if !out.contains(c) {
                    out.push(*c);
                }
            }
        }
        out
    }

    fn node(&self, tree: &ChunkRef, n: u32, tag: &Tag, large: bool) -> Result<Arc<Node>> {
        let key = (tree.id, n);
        if let Some(hit) = self
            .nodes
            .lock()
            .ok()
            .and_then(|mut c| c.get(&key).cloned())
        {
            return Ok(hit);
        }
        let at = u64::from(n) * NODE_SIZE as u64;
        if at + NODE_SIZE as u64 > u64::from(tree.size) {
            return Err(Error::corrupt(format!(
                "original tree chunk {}: node {n} past its {} bytes",
                tree.id, tree.size
            )));
        }
        let mut decoded = None;
        self.store
            .read_verified(&tree.id, at, NODE_SIZE, &mut |bytes| {
                decoded = Some(open_node(&self.key, bytes, tag, large)?);
                Ok(())
            })
            .map_err(|e| e.context(format!("original tree chunk {} node {n}", tree.id)))?;
        let node = Arc::new(decoded.ok_or_else(|| Error::internal("node read accepted nothing"))?);
        if let Ok(mut c) = self.nodes.lock() {
            c.put(key, node.clone());
        }
        Ok(node)
    }

    fn user_data(&self, tree: &ChunkRef, meta: &Meta) -> Result<Vec<u8>> {
        if let Some(b) = &meta.inline_user {
            return Ok(b.clone());
        }
        let want = meta.user_size as usize;
        let per = NODE_SIZE - 12 - 16 - 4;
        let count = want.div_ceil(per) as u32;
        let mut n = meta.num_nodes.checked_sub(count).ok_or_else(|| {
            Error::corrupt(format!(
                "original tree chunk {}: user data larger than the chunk",
                tree.id
            ))
        })?;
        let mut tag = meta.first_user_tag;
        let mut out = Vec::with_capacity(want);
        while out.len() < want {
            match &*self.node(tree, n, &tag, meta.large)? {
                Node::User { next_tag, data } => {
                    let take = (want - out.len()).min(data.len());
                    out.extend_from_slice(data.get(..take).unwrap_or_default());
                    tag = *next_tag;
                }
                _ => {
                    return Err(Error::corrupt(format!(
                        "original tree chunk {}: node {n} is not a user node",
                        tree.id
                    )))
                }
            }
            n += 1;
        }
        Ok(out)
    }

    /// Calls `f` for each entry of level `lvl` with key in `first..end`, in key order.
    fn scan(&self, lvl: &Level, first: u64, end: u64, f: &mut dyn FnMut(u64, Value)) -> Result<()> {
        let (tree, large) = (&lvl.tree, lvl.meta.large);
        let (mut n, mut tag) = (lvl.meta.root, lvl.meta.root_tag);
        if n == 0 {
            return Ok(());
        }
        let mut steps = 0u32;
        let mut node = self.node(tree, n, &tag, large)?;
        loop {
            steps += 1;
            if steps > lvl.meta.num_nodes {
                return Err(Error::corrupt(format!(
                    "original tree chunk {}: a cycle among its nodes",
                    tree.id
                )));
            }
            match &*node {
                Node::Inner { keys, children } => {
                    let pos = keys.partition_point(|k| *k < first);
                    let Some(&(c, t)) = children.get(pos) else {
                        return Ok(());
                    };
                    if c == 0 {
                        return Ok(());
                    }
                    (n, tag) = (c, t);
                }
                Node::Leaf { entries, next } => {
                    let start = entries.partition_point(|e| e.0 < first);
                    for &(k, v) in entries.iter().skip(start) {
                        if k >= end {
                            return Ok(());
                        }
                        f(k, v);
                    }
                    if next.0 == 0 {
                        return Ok(());
                    }
                    (n, tag) = *next;
                }
                _ => {
                    return Err(Error::corrupt(format!(
                        "original tree chunk {}: node {n} is neither inner node nor leaf",
                        tree.id
                    )))
                }
            }
            node = self.node(tree, n, &tag, large)?;
        }
    }

    /// The newest entry of each block in `first..first+count`, with its level.
    fn lookup(&self, first: u64, count: u64) -> Result<Vec<Option<(usize, Value)>>> {
        let mut found: Vec<Option<(usize, Value)>> = vec![None; count as usize];
        for (i, lvl) in self.levels.iter().enumerate() {
            self.scan(lvl, first, first + count, &mut |k, v| {
                if let Some(slot @ None) = found.get_mut((k - first) as usize) {
                    *slot = Some((i, v));
                }
            })?;
        }
        Ok(found)
    }

    /// Which blocks of `first..first+count` the disk holds a record for.
    pub fn allocated(&self, first: u64, count: u64) -> Result<Vec<bool>> {
        Ok(self
            .lookup(first, count)?
            .into_iter()
            .map(|s| s.is_some())
            .collect())
    }

    /// Fills whole blocks from `first` (holes read as zeros); returns which blocks the
    /// disk holds a record for.
    pub fn read_blocks(&self, first: u64, out: &mut [u8]) -> Result<Vec<bool>> {
        if !out.len().is_multiple_of(BLOCK_SIZE) {
            return Err(Error::internal("read_blocks needs whole blocks"));
        }
        let count = (out.len() / BLOCK_SIZE) as u64;
        if first.saturating_add(count) * BLOCK_SIZE as u64 > self.size {
            return Err(Error::invalid("read past the end of the disk"));
        }
        let found = self.lookup(first, count)?;
        let mut hits: Vec<(usize, usize, Value)> = Vec::new();
        for (i, s) in found.iter().enumerate() {
            match s {
                Some((lvl, v)) => hits.push((i, *lvl, *v)),
                None => out
                    .get_mut(i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE)
                    .ok_or_else(|| Error::internal("block past the buffer"))?
                    .fill(0),
            }
        }
        hits.sort_unstable_by_key(|h| (h.1, h.2.chunk, h.2.offset));
        let mut i = 0;
        while let Some(&(_, lvl, head)) = hits.get(i) {
            let mut j = i + 1;
            let mut end = head.offset + head.size;
            while let Some(&(_, l, v)) = hits.get(j) {
                if l != lvl || v.chunk != head.chunk || v.offset > end {
                    break;
                }
                let e = end.max(v.offset + v.size);
                if e - head.offset > MAX_COALESCE {
                    break;
                }
                end = e;
                j += 1;
            }
            let group = hits.get(i..j).unwrap_or_default();
            self.read_group(first, lvl, head, end, group, out)?;
            i = j;
        }
        Ok(found.iter().map(|s| s.is_some()).collect())
    }

    fn read_group(
        &self,
        first: u64,
        lvl: usize,
        head: Value,
        end: u32,
        group: &[(usize, usize, Value)],
        out: &mut [u8],
    ) -> Result<()> {
        let chunk = self
            .levels
            .get(lvl)
            .and_then(|l| l.user.chunks.get(head.chunk as usize))
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "original disk: a leaf names data chunk #{} past its level's list",
                    head.chunk
                ))
            })?;
        if end > chunk.size {
            return Err(Error::corrupt(format!(
                "original data chunk {}: records end at {end}, past its {} bytes",
                chunk.id, chunk.size
            )));
        }
        let mut accept = |bytes: &[u8]| -> Result<()> {
            for &(i, _, v) in group {
                let rel = (v.offset - head.offset) as usize;
                let rec = bytes
                    .get(rel..rel + v.size as usize)
                    .ok_or_else(|| Error::internal("coalesced read shorter than its records"))?;
                let dst = out
                    .get_mut(i * BLOCK_SIZE..(i + 1) * BLOCK_SIZE)
                    .ok_or_else(|| Error::internal("block past the buffer"))?;
                open_record(&self.key, rec, &v.tag, dst).map_err(|e| {
                    e.context(format!(
                        "block {} (record at offset {} of chunk {}.lvl)",
                        first + i as u64,
                        v.offset,
                        chunk.id.to_hex()
                    ))
                })?;
            }
            Ok(())
        };
        self.store
            .read_verified(
                &chunk.id,
                u64::from(head.offset),
                (end - head.offset) as usize,
                &mut accept,
            )
            .map_err(|e| e.context(format!("original data chunk {}.lvl", chunk.id.to_hex())))
    }
}
