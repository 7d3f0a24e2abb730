//! `fsck`: checks everything reachable from the current root and every kept snapshot.
//! Each chunk's name must equal the SHA-512 prefix of its bytes; each node and record
//! must authenticate against the tag its parent holds and decompress. Problems are
//! collected, one line each, never returned as data.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use super::load_root;
use super::{Engine, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::node::{LeafEntry, Node, NodeRef, TableEntry, ZERO_CHUNK};
use crate::format::record::open_record;
use crate::format::root::{RootRef, RunDesc};
use crate::format::BLOCK_SIZE;
use crate::lsm::ctx::Ctx;

/// Outcome of a check.
#[derive(Debug, Default, Serialize)]
pub struct FsckReport {
    /// One line per problem.
    pub problems: Vec<String>,
    /// Chunks whose hash was verified.
    pub chunks_checked: usize,
    /// Index nodes opened.
    pub nodes_checked: usize,
    /// Records opened.
    pub records_checked: u64,
}

/// Leaf entries checked at once (about 40 bytes each: 40 MiB).
const RECORD_BATCH: usize = 1 << 20;

/// Chunks read and hashed together (SHA-512 lanes), and held while their records are
/// checked: at most 32 MiB.
const CHUNK_GROUP: usize = crate::format::sha512_lanes::LANES;

struct Checker<'a> {
    ctx: &'a Ctx,
    report: FsckReport,
    /// Verified chunk ids -> true when good.
    chunks: HashMap<ChunkId, bool>,
    /// Bytes of the chunks most recently verified (records are read from them).
    held: HashMap<ChunkId, Arc<Vec<u8>>>,
    runs_done: HashSet<ChunkId>,
    progress: &'a dyn Fn(u64),
}

impl Engine {
    /// Checks the disk; `progress` is called with the number of entries checked so far.
    pub fn fsck(&self, progress: &dyn Fn(u64)) -> Result<FsckReport> {
        let mut c = Checker {
            ctx: &self.core.ctx,
            report: FsckReport::default(),
            chunks: HashMap::new(),
            held: HashMap::new(),
            runs_done: HashSet::new(),
            progress,
        };
        let mut roots: Vec<(String, RootRef)> = Vec::new();
        if let Some(r) = self.root()? {
            roots.push(("current root".into(), r));
        }
        for k in self.kept()? {
            roots.push((format!("snapshot {}", k.id), k));
        }
        for (what, r) in roots {
            c.check_root(&what, &r);
        }
        Ok(c.report)
    }
}

impl Checker<'_> {
    fn problem(&mut self, s: String) {
        self.report.problems.push(s);
    }

    /// Verifies a whole chunk once; returns its bytes when good.
    fn verify_chunk(&mut self, id: &ChunkId, what: &str) -> Option<Arc<Vec<u8>>> {
        if let Some(bytes) = self.held.get(id) {
            return Some(bytes.clone());
        }
        if self.chunks.get(id) == Some(&false) {
            return None; // its problem is already reported
        }
        self.hold_chunks(std::slice::from_ref(id), what);
        self.held.get(id).cloned()
    }

    /// Reads and verifies `ids` together (hashed in lanes), holding the good ones'
    /// bytes instead of whatever was held; a chunk found bad before is not read again.
    fn hold_chunks(&mut self, ids: &[ChunkId], what: &str) {
        self.held.clear();
        let wanted: Vec<ChunkId> = ids
            .iter()
            .filter(|id| self.chunks.get(id) != Some(&false))
            .copied()
            .collect();
        let got = self.ctx.store.get_many(&wanted);
        for (id, r) in wanted.iter().zip(got) {
            match r {
                Ok(bytes) => {
                    if !self.chunks.contains_key(id) {
                        self.report.chunks_checked += 1;
                    }
                    self.chunks.insert(*id, true);
                    self.held.insert(*id, Arc::new(bytes));
                }
                Err(e) => {
                    self.chunks.insert(*id, false);
                    self.problem(format!("{what} chunk {id}: {e}"));
                }
            }
        }
    }

    fn check_root(&mut self, what: &str, r: &RootRef) {
        let root = match load_root(self.ctx.store.as_ref(), &self.ctx.keys, r) {
            Ok(root) => {
                self.report.chunks_checked += 1;
                root
            }
            Err(e) => return self.problem(format!("{what}: {e}")),
        };
        for run in &root.runs {
            let Some((first, _)) = run.index_chunks.first() else {
                self.problem(format!("{what}: level {} has no index chunks", run.level));
                continue;
            };
            if !self.runs_done.insert(*first) {
                continue;
            }
            self.check_run(run);
        }
    }

    fn check_run(&mut self, run: &RunDesc) {
        let lvl = run.level;
        let mut bad_index = false;
        for group in run.index_chunks.chunks(CHUNK_GROUP) {
            let ids: Vec<ChunkId> = group.iter().map(|(id, _)| *id).collect();
            self.hold_chunks(&ids, &format!("level {lvl} index"));
            for (id, size) in group {
                match self.verify_chunk(id, &format!("level {lvl} index")) {
                    Some(b) if b.len() as u64 != u64::from(*size) => {
                        self.problem(format!(
                            "level {lvl} index chunk {id}: size {} != {size}",
                            b.len()
                        ));
                    }
                    Some(_) => {}
                    None => bad_index = true,
                }
            }
        }
        self.held.clear();
        if bad_index {
            return;
        }
        let mut table = Vec::new();
        for t in &run.tables {
            match self.node(run, t) {
                Some(Node::Table(v)) => table.extend(v),
                Some(_) => self.problem(format!(
                    "level {lvl}: table reference names another node kind"
                )),
                None => {}
            }
        }
        let mut stack: Vec<(NodeRef, u8)> = vec![(run.root, run.height)];
        let mut checked = 0u64;
        // Leaf entries are in block order, and after random writes neighbouring blocks
        // sit in different chunks: checking them in that order fetched and hashed a
        // chunk again at every switch (81x the folder's bytes on a disk made by random
        // writes). They are checked a batch at a time, grouped by chunk, so each chunk
        // is read and hashed once per batch; a batch bounds the memory.
        let mut batch: Vec<LeafEntry> = Vec::new();
        while let Some((r, h)) = stack.pop() {
            match self.node(run, &r) {
                Some(Node::Inner(v)) if h > 0 => {
                    stack.extend(v.iter().rev().map(|e| (e.child, h - 1)));
                }
                Some(Node::Leaf(v)) if h == 0 => {
                    checked += v.len() as u64;
                    batch.extend(v.iter().filter(|e| e.chunk != ZERO_CHUNK).copied());
                    if batch.len() >= RECORD_BATCH {
                        self.check_records(lvl, &table, &mut batch);
                    }
                    (self.progress)(checked);
                }
                Some(_) => {
                    self.problem(format!("level {lvl}: node kind does not match tree height"))
                }
                None => {}
            }
        }
        self.check_records(lvl, &table, &mut batch);
        if checked != run.entries {
            self.problem(format!(
                "level {lvl}: {checked} entries found, root says {}",
                run.entries
            ));
        }
    }

    /// Opens the records of `batch` (emptied), each data chunk read and hashed once,
    /// [`CHUNK_GROUP`] chunks together.
    fn check_records(&mut self, lvl: u32, table: &[TableEntry], batch: &mut Vec<LeafEntry>) {
        batch.sort_unstable_by_key(|e| (e.chunk, e.offset));
        let entries = std::mem::take(batch);
        let mut out = vec![0u8; BLOCK_SIZE];
        let what = format!("level {lvl} data");
        let mut start = 0;
        while start < entries.len() {
            // The next group: the entries of the next CHUNK_GROUP chunks.
            let mut chunks: Vec<u32> = Vec::with_capacity(CHUNK_GROUP);
            let mut end = start;
            for e in &entries[start..] {
                if chunks.last() != Some(&e.chunk) {
                    if chunks.len() == CHUNK_GROUP {
                        break;
                    }
                    chunks.push(e.chunk);
                }
                end += 1;
            }
            let ids: Vec<ChunkId> = chunks
                .iter()
                .filter_map(|c| table.get(*c as usize).map(|t| t.id))
                .collect();
            self.hold_chunks(&ids, &what);
            for e in &entries[start..end] {
                self.check_record(lvl, table, e, &what, &mut out);
            }
            start = end;
        }
        self.held.clear();
    }

    /// Opens one record from a held chunk.
    fn check_record(
        &mut self,
        lvl: u32,
        table: &[TableEntry],
        e: &LeafEntry,
        what: &str,
        out: &mut [u8],
    ) {
        let Some(t) = table.get(e.chunk as usize).copied() else {
            self.problem(format!(
                "level {lvl} block {}: chunk #{} not in the table",
                e.lba, e.chunk
            ));
            return;
        };
        let Some(bytes) = self.verify_chunk(&t.id, what) else {
            return;
        };
        let rec = bytes.get(e.offset as usize..(e.offset as usize).saturating_add(e.len as usize));
        let res = match rec {
            Some(rec) => open_record(&self.ctx.keys, rec, &e.tag, out),
            None => Err(crate::error::Error::corrupt(
                "record past the end of its chunk",
            )),
        };
        self.report.records_checked += 1;
        if let Err(err) = res {
            self.problem(format!(
                "level {lvl} block {} in chunk {}: {err}",
                e.lba, t.id
            ));
        }
    }

    fn node(&mut self, run: &RunDesc, r: &NodeRef) -> Option<Node> {
        let Some((id, _)) = run.index_chunks.get(r.chunk as usize) else {
            self.problem(format!(
                "level {}: node in index chunk #{} out of range",
                run.level, r.chunk
            ));
            return None;
        };
        self.report.nodes_checked += 1;
        match self.ctx.node(id, r) {
            Ok(n) => Some((*n).clone()),
            Err(e) => {
                self.problem(format!("level {}: {e}", run.level));
                None
            }
        }
    }
}
