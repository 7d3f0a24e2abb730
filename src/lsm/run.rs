//! Sorted runs: writing one as a B+tree of sealed nodes packed into index chunks, and
//! reading it back with a cursor (seek, then iterate in block order).

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::node::{InnerEntry, LeafEntry, Node, NodeRef, TableEntry, ZERO_CHUNK};
use crate::format::root::RunDesc;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::{DataRef, Loc};

/// Entries per leaf.
pub const LEAF_ENTRIES: usize = 1024;
/// Children per inner node.
pub const FANOUT: usize = 1024;
/// Table entries per table node.
pub const TABLE_ENTRIES: usize = 1024;
/// Index chunks are cut once they reach this size.
pub const INDEX_CHUNK_TARGET: usize = 4 << 20;

/// A sorted run with its chunk table loaded.
pub struct Run {
    /// As recorded in the root.
    pub desc: RunDesc,
    /// Data chunks referenced, indexed by leaf entries.
    pub table: Vec<TableEntry>,
}

impl Run {
    /// Loads the chunk table of `desc`.
    pub fn load(ctx: &Ctx, desc: RunDesc) -> Result<Self> {
        let mut table = Vec::new();
        for t in &desc.tables {
            let chunk = index_chunk(&desc, t.chunk)?;
            match &*ctx.node(&chunk, t)? {
                Node::Table(v) => table.extend_from_slice(v),
                _ => return Err(Error::corrupt("run table reference names a non-table node")),
            }
        }
        Ok(Self { desc, table })
    }

    /// Resolves a leaf entry.
    pub fn resolve(&self, e: &LeafEntry) -> Result<Loc> {
        if e.chunk == ZERO_CHUNK {
            return Ok(Loc::Zero);
        }
        let t = self.table.get(e.chunk as usize).ok_or_else(|| {
            Error::corrupt(format!(
                "leaf entry names chunk #{} past the table",
                e.chunk
            ))
        })?;
        Ok(Loc::Data(DataRef {
            chunk: t.id,
            chunk_size: t.size,
            offset: e.offset,
            len: e.len,
            tag: e.tag,
        }))
    }

    /// A cursor at the first entry with lba >= `lba`.
    pub fn seek<'a>(&'a self, ctx: &'a Ctx, lba: u64) -> Result<Cursor<'a>> {
        let mut c = Cursor {
            run: self,
            ctx,
            stack: Vec::new(),
        };
        let mut r = self.desc.root;
        loop {
            let node = ctx.node(&index_chunk(&self.desc, r.chunk)?, &r)?;
            match &*node {
                Node::Inner(v) => {
                    let i = v.partition_point(|e| e.first_lba <= lba).saturating_sub(1);
                    let child = v.get(i).map(|e| e.child);
                    c.stack.push((node.clone(), i));
                    match child {
                        Some(ch) => r = ch,
                        None => return Err(Error::corrupt("empty inner node")),
                    }
                }
                Node::Leaf(v) => {
                    let i = v.partition_point(|e| e.lba < lba);
                    c.stack.push((node.clone(), i));
                    return Ok(c);
                }
                Node::Table(_) => return Err(Error::corrupt("tree reaches a table node")),
            }
            if c.stack.len() > 64 {
                return Err(Error::corrupt("index tree deeper than 64"));
            }
        }
    }
}

/// The chunk id of index chunk number `i` of a run.
pub fn index_chunk(desc: &RunDesc, i: u32) -> Result<ChunkId> {
    desc.index_chunks
        .get(i as usize)
        .map(|c| c.0)
        .ok_or_else(|| Error::corrupt(format!("node reference to index chunk #{i} out of range")))
}

/// Iterates a run's entries in block order.
pub struct Cursor<'a> {
    run: &'a Run,
    ctx: &'a Ctx,
    stack: Vec<(Arc<Node>, usize)>,
}

impl Cursor<'_> {
    /// The next entry, or None at the end.
    pub fn next_entry(&mut self) -> Result<Option<(u64, Loc)>> {
        loop {
            let Some((node, idx)) = self.stack.last_mut() else {
                return Ok(None);
            };
            if let Node::Leaf(v) = &**node {
                if let Some(e) = v.get(*idx) {
                    *idx += 1;
                    let e = *e;
                    return Ok(Some((e.lba, self.run.resolve(&e)?)));
                }
            }
            // This node is exhausted: climb to the next sibling, then down to its first leaf.
            self.stack.pop();
            let next = loop {
                let Some((node, idx)) = self.stack.last_mut() else {
                    return Ok(None);
                };
                *idx += 1;
                match &**node {
                    Node::Inner(v) => match v.get(*idx) {
                        Some(e) => break e.child,
                        None => {
                            self.stack.pop();
                        }
                    },
                    _ => return Err(Error::corrupt("leaf above a leaf")),
                }
            };
            let mut r = next;
            loop {
                let node = self.ctx.node(&index_chunk(&self.run.desc, r.chunk)?, &r)?;
                let child = match &*node {
                    Node::Inner(v) => v.first().map(|e| e.child),
                    _ => None,
                };
                self.stack.push((node, 0));
                if self.stack.len() > 64 {
                    return Err(Error::corrupt("index tree deeper than 64"));
                }
                match child {
                    Some(c) => r = c,
                    None => break,
                }
            }
        }
    }
}

/// Builds a run from entries given in increasing lba order.
pub struct RunWriter<'a> {
    ctx: &'a Ctx,
    level: u32,
    buf: Vec<u8>,
    index_chunks: Vec<(ChunkId, u32)>,
    leaf: Vec<LeafEntry>,
    parents: Vec<InnerEntry>,
    table: Vec<TableEntry>,
    table_pos: crate::prehashed::Map<ChunkId, u32>,
    entries: u64,
    data_entries: u64,
    record_bytes: u64,
    last: Option<u64>,
    last_chunk: Option<(ChunkId, u32)>,
}

impl<'a> RunWriter<'a> {
    /// A writer for a run at `level`.
    pub fn new(ctx: &'a Ctx, level: u32) -> Self {
        Self {
            ctx,
            level,
            buf: Vec::new(),
            index_chunks: Vec::new(),
            leaf: Vec::with_capacity(LEAF_ENTRIES),
            parents: Vec::new(),
            table: Vec::new(),
            table_pos: crate::prehashed::Map::default(),
            entries: 0,
            data_entries: 0,
            record_bytes: 0,
            last: None,
            last_chunk: None,
        }
    }

    /// Adds an entry.
    pub fn push(&mut self, lba: u64, loc: &Loc) -> Result<()> {
        if self.last.is_some_and(|l| l >= lba) {
            return Err(Error::invalid("run entries out of order"));
        }
        self.last = Some(lba);
        let e = match loc {
            Loc::Zero => LeafEntry {
                lba,
                chunk: ZERO_CHUNK,
                offset: 0,
                len: 0,
                tag: [0; 16],
            },
            Loc::Data(d) => {
                let next = self.table.len() as u32;
                // Neighbouring blocks are mostly in one chunk: the last one's position
                // is checked before the map (a hash of 32 bytes per entry otherwise).
                let i = match self.last_chunk {
                    Some((id, i)) if id == d.chunk => i,
                    _ => *self.table_pos.entry(d.chunk).or_insert(next),
                };
                self.last_chunk = Some((d.chunk, i));
                if i == next {
                    self.table.push(TableEntry {
                        id: d.chunk,
                        size: d.chunk_size,
                        live: 0,
                    });
                }
                if let Some(t) = self.table.get_mut(i as usize) {
                    t.live = t.live.saturating_add(d.len);
                }
                self.data_entries += 1;
                self.record_bytes += u64::from(d.len);
                LeafEntry {
                    lba,
                    chunk: i,
                    offset: d.offset,
                    len: d.len,
                    tag: d.tag,
                }
            }
        };
        self.entries += 1;
        self.leaf.push(e);
        if self.leaf.len() >= LEAF_ENTRIES {
            self.flush_leaf()?;
        }
        Ok(())
    }

    fn flush_leaf(&mut self) -> Result<()> {
        let Some(first) = self.leaf.first().map(|e| e.lba) else {
            return Ok(());
        };
        let node = Node::Leaf(std::mem::take(&mut self.leaf));
        let r = self.write_node(&node)?;
        self.parents.push(InnerEntry {
            first_lba: first,
            child: r,
        });
        Ok(())
    }

    fn write_node(&mut self, node: &Node) -> Result<NodeRef> {
        let (stored, tag) = node.seal(&self.ctx.keys)?;
        if !self.buf.is_empty() && self.buf.len() + stored.len() > INDEX_CHUNK_TARGET {
            self.cut_chunk()?;
        }
        let r = NodeRef {
            chunk: self.index_chunks.len() as u32,
            offset: self.buf.len() as u32,
            len: stored.len() as u32,
            tag,
        };
        let need = self.buf.len() + stored.len();
        if need > self.buf.capacity() {
            // Doubling, but never past what one index chunk holds: a doubled 4 MiB
            // buffer held 8 MiB through every large merge.
            let grown = (self.buf.capacity() * 2).clamp(need, INDEX_CHUNK_TARGET.max(need));
            self.buf.reserve_exact(grown - self.buf.len());
        }
        self.buf.extend_from_slice(&stored);
        Ok(r)
    }

    fn cut_chunk(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let id = self.ctx.store.put(&self.buf)?;
        self.index_chunks.push((id, self.buf.len() as u32));
        self.buf.clear();
        Ok(())
    }

    /// Writes the tree and table; None when no entry was pushed.
    pub fn finish(mut self) -> Result<Option<Run>> {
        self.flush_leaf()?;
        if self.parents.is_empty() {
            return Ok(None);
        }
        let mut level = std::mem::take(&mut self.parents);
        let mut height = 0u8;
        while level.len() > 1 {
            let mut up = Vec::with_capacity(level.len() / FANOUT + 1);
            for group in level.chunks(FANOUT) {
                let first = group.first().map(|e| e.first_lba).unwrap_or(0);
                let r = self.write_node(&Node::Inner(group.to_vec()))?;
                up.push(InnerEntry {
                    first_lba: first,
                    child: r,
                });
            }
            level = up;
            height += 1;
        }
        let root = level
            .first()
            .map(|e| e.child)
            .ok_or_else(|| Error::invalid("empty run"))?;
        let table = std::mem::take(&mut self.table);
        let mut tables = Vec::new();
        for group in table.chunks(TABLE_ENTRIES) {
            tables.push(self.write_node(&Node::Table(group.to_vec()))?);
        }
        self.cut_chunk()?;
        Ok(Some(Run {
            desc: RunDesc {
                level: self.level,
                entries: self.entries,
                data_entries: self.data_entries,
                record_bytes: self.record_bytes,
                height,
                root,
                index_chunks: self.index_chunks,
                tables,
            },
            table,
        }))
    }
}
