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

struct Checker<'a> {
    ctx: &'a Ctx,
    report: FsckReport,
    /// Verified chunk ids -> true when good.
    chunks: HashMap<ChunkId, bool>,
    /// Bytes of the data chunk most recently verified (records are read from it).
    current: Option<(ChunkId, Arc<Vec<u8>>)>,
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
            current: None,
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
        if let Some((cid, bytes)) = &self.current {
            if cid == id {
                return Some(bytes.clone());
            }
        }
        if self.chunks.get(id) == Some(&false) {
            return None;
        }
        match self.ctx.store.get(id) {
            Ok(bytes) => {
                if !self.chunks.contains_key(id) {
                    self.report.chunks_checked += 1;
                }
                self.chunks.insert(*id, true);
                let b = Arc::new(bytes);
                self.current = Some((*id, b.clone()));
                Some(b)
            }
            Err(e) => {
                self.chunks.insert(*id, false);
                self.problem(format!("{what} chunk {id}: {e}"));
                None
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
        for (id, size) in &run.index_chunks {
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

    /// Opens the records of `batch` (emptied), each data chunk read and hashed once.
    fn check_records(&mut self, lvl: u32, table: &[TableEntry], batch: &mut Vec<LeafEntry>) {
        batch.sort_unstable_by_key(|e| (e.chunk, e.offset));
        let mut out = vec![0u8; BLOCK_SIZE];
        for e in batch.drain(..) {
            let Some(t) = table.get(e.chunk as usize).copied() else {
                self.problem(format!(
                    "level {lvl} block {}: chunk #{} not in the table",
                    e.lba, e.chunk
                ));
                continue;
            };
            let Some(bytes) = self.verify_chunk(&t.id, &format!("level {lvl} data")) else {
                continue;
            };
            let rec =
                bytes.get(e.offset as usize..(e.offset as usize).saturating_add(e.len as usize));
            let res = match rec {
                Some(rec) => open_record(&self.ctx.keys, rec, &e.tag, &mut out),
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
