//! `fsck`: checks everything reachable from the current root and every kept snapshot.
//! Each chunk's name must equal the SHA-512 prefix of its bytes; each node and record
//! must authenticate against the tag its parent holds and decompress. Problems are
//! collected, one line each, never returned as data.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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
    /// [`CHUNK_GROUP`] chunks together; groups are checked on up to [`CHECKERS`]
    /// threads (the hashing and the AEAD are each core's own work), and what they find
    /// is reported in group order, as one thread would report it.
    fn check_records(&mut self, lvl: u32, table: &[TableEntry], batch: &mut Vec<LeafEntry>) {
        batch.sort_unstable_by_key(|e| (e.chunk, e.offset));
        let entries = std::mem::take(batch);
        let what = format!("level {lvl} data");
        // Each group: the entries of the next CHUNK_GROUP chunks (sorted, so a chunk is
        // in one group only).
        let mut groups: Vec<std::ops::Range<usize>> = Vec::new();
        let mut start = 0;
        while start < entries.len() {
            let (mut chunks, mut last, mut end) = (0, None, start);
            for e in entries.iter().skip(start) {
                if last != Some(e.chunk) {
                    if chunks == CHUNK_GROUP {
                        break;
                    }
                    chunks += 1;
                    last = Some(e.chunk);
                }
                end += 1;
            }
            groups.push(start..end);
            start = end;
        }
        let found: Vec<Mutex<Option<GroupFindings>>> =
            groups.iter().map(|_| Mutex::new(None)).collect();
        let next = AtomicUsize::new(0);
        let (ctx, known) = (self.ctx, &self.chunks);
        let work = || {
            let mut out = vec![0u8; BLOCK_SIZE];
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let (Some(range), Some(slot)) = (groups.get(i), found.get(i)) else {
                    break;
                };
                let mine = entries.get(range.clone()).unwrap_or_default();
                let f = check_group(ctx, known, lvl, table, mine, &what, &mut out);
                if let Ok(mut s) = slot.lock() {
                    *s = Some(f);
                }
            }
        };
        let helpers = crate::cpus::available().clamp(1, CHECKERS) - 1;
        // A helper that cannot be made leaves its share to this thread; one that
        // panicked leaves its group's slot empty, reported below as not checked.
        if let Err(e) =
            crate::threads::alongside(helpers.min(groups.len().saturating_sub(1)), "fsck", work)
        {
            tracing::warn!(error = %e, "an fsck checker stopped");
        }
        for (range, slot) in groups.iter().zip(found) {
            let f = slot
                .into_inner()
                .ok()
                .flatten()
                .unwrap_or_else(|| GroupFindings {
                    problems: vec![format!(
                        "{what}: {} records not checked (a checker stopped)",
                        range.len()
                    )],
                    ..GroupFindings::default()
                });
            for (id, good) in f.chunks {
                if good && !self.chunks.contains_key(&id) {
                    self.report.chunks_checked += 1;
                }
                self.chunks.insert(id, good);
            }
            self.report.records_checked += f.records;
            self.report.problems.extend(f.problems);
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

/// Threads that check records at most.
const CHECKERS: usize = 4;

/// What checking one group of chunks' records found.
#[derive(Default)]
struct GroupFindings {
    /// Each chunk read, and whether it hashed to its name.
    chunks: Vec<(ChunkId, bool)>,
    records: u64,
    problems: Vec<String>,
}

/// Reads the group's chunks together (hashed in lanes), skipping chunks found bad
/// before, and opens each record of `entries` from them.
fn check_group(
    ctx: &Ctx,
    known: &HashMap<ChunkId, bool>,
    lvl: u32,
    table: &[TableEntry],
    entries: &[LeafEntry],
    what: &str,
    out: &mut [u8],
) -> GroupFindings {
    let mut f = GroupFindings::default();
    let mut ids: Vec<ChunkId> = Vec::with_capacity(CHUNK_GROUP);
    for e in entries {
        if let Some(t) = table.get(e.chunk as usize) {
            if ids.last() != Some(&t.id) && known.get(&t.id) != Some(&false) {
                ids.push(t.id);
            }
        }
    }
    let mut held: HashMap<ChunkId, Vec<u8>> = HashMap::with_capacity(ids.len());
    for (id, r) in ids.iter().zip(ctx.store.get_many(&ids)) {
        match r {
            Ok(bytes) => {
                f.chunks.push((*id, true));
                held.insert(*id, bytes);
            }
            Err(e) => {
                f.chunks.push((*id, false));
                f.problems.push(format!("{what} chunk {id}: {e}"));
            }
        }
    }
    for e in entries {
        let Some(t) = table.get(e.chunk as usize) else {
            f.problems.push(format!(
                "level {lvl} block {}: chunk #{} not in the table",
                e.lba, e.chunk
            ));
            continue;
        };
        // A bad chunk's problem is reported once, where it was read.
        let Some(bytes) = held.get(&t.id) else {
            continue;
        };
        let rec = bytes.get(e.offset as usize..(e.offset as usize).saturating_add(e.len as usize));
        let res = match rec {
            Some(rec) => open_record(&ctx.keys, rec, &e.tag, out),
            None => Err(crate::error::Error::corrupt(
                "record past the end of its chunk",
            )),
        };
        f.records += 1;
        if let Err(err) = res {
            f.problems.push(format!(
                "level {lvl} block {} in chunk {}: {err}",
                e.lba, t.id
            ));
        }
    }
    f
}
