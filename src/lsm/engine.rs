//! The LSM engine of one open disk: memtable, frozen memtable, levels, write-ahead log,
//! freeze and commit, merges, garbage collection and the background checkpoint thread.
//! It speaks whole blocks and sealed records; `volume` above it speaks bytes.
//!
//! Locking: `state` (a RwLock) orders writes; readers share it. The log has its own
//! locks and fdatasyncs with neither held (group commit, see `lsm::wal`), so a FLUSH
//! never blocks readers or writers. `ckpt` serialises commits and garbage collection.
//! Lock order: ckpt, then state, then the log's.
//!
//! Checkpoints run beside writes: a full memtable is frozen (and its log segment sealed)
//! in a moment under the write lock, and the background thread turns the frozen memtable
//! into chunks and a new root while writes go on into a fresh memtable. Reads look in
//! the memtable, then the frozen one, then the levels. A writer waits only when the
//! fresh memtable fills before the frozen one is done.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::Keys;
use crate::format::record::SealedRecord;
use crate::format::root::{Root, RootRef};
use crate::format::wal::{LogBase, WalOp};
use crate::format::BLOCK_SIZE;
use crate::lsm::chunker::Chunker;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::{DataRef, Loc};
use crate::lsm::lookup::{fetch_into, lookup, read_blocks, resolve_into, Slot};
use crate::lsm::memtable::{MemEntry, Memtable};
use crate::lsm::pacer::Pacer;
use crate::lsm::tree::Tree;
use crate::lsm::wal::{SyncHook, Wal};
use crate::store::recording::RecordingStore;
use crate::store::ChunkStore;

/// The log is frozen into a checkpoint when it grows past this.
const MAX_WAL_BYTES: u64 = 256 << 20;
/// Writes paused this long let the background thread compact.
const IDLE: std::time::Duration = std::time::Duration::from_secs(3);
/// Fewest entries written since the last compaction for an idle one (32 MiB of blocks).
const COMPACT_MIN_ENTRIES: u64 = 8192;

/// Sizes of the memtable, levels and caches; tests shrink them to exercise merges.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Memtable entries that trigger a checkpoint.
    pub memtable_entries: usize,
    /// Memtable record bytes that trigger a checkpoint; writers wait when a second
    /// memtable fills while the first is being checkpointed.
    pub memtable_bytes: usize,
    /// Capacity of level 0 in entries.
    pub level_base: u64,
    /// Bytes of decoded index nodes kept.
    pub node_cache_bytes: usize,
    /// Bytes of cut chunks held before they are stored.
    pub pending_chunk_bytes: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self::for_budget(crate::memory::Budget::process())
    }
}

impl Tuning {
    /// The sizes that keep an engine within `budget` (see [`crate::memory`]).
    pub fn for_budget(budget: crate::memory::Budget) -> Self {
        Self {
            memtable_entries: crate::lsm::memtable::MAX_ENTRIES,
            memtable_bytes: budget.memtable_bytes(),
            level_base: crate::lsm::policy::BASE_ENTRIES,
            node_cache_bytes: budget.node_cache_bytes(),
            pending_chunk_bytes: budget.pending_chunk_bytes(),
        }
    }
}

/// Where a committed root is made the disk's current one (the `.swap` file).
pub trait RootSink: Send + Sync {
    /// Names `root` durably; called after every chunk it reaches is synced.
    fn publish(&self, root: &RootRef) -> Result<()>;
}

/// How the engine is opened.
pub enum Mode {
    /// Writes allowed: the log at `wal`, roots published to `sink`.
    Writable {
        /// The write-ahead log file.
        wal: PathBuf,
        /// Where new roots are named.
        sink: Box<dyn RootSink>,
        /// Called before each log fdatasync (tests).
        sync_hook: Option<SyncHook>,
    },
    /// Reads only; `wal`, when given, is replayed into memory (never written).
    ReadOnly {
        /// A log to replay.
        wal: Option<PathBuf>,
    },
}

/// The starting point: a root (None for an empty disk) and its decoded contents.
pub struct Start {
    /// The root reference.
    pub root_ref: Option<RootRef>,
    /// The root itself (a default one for an empty disk).
    pub root: Root,
}

struct State {
    mem: Memtable,
    /// The memtable a checkpoint is turning into chunks (its log segment is sealed).
    frozen: Option<Arc<Memtable>>,
    tree: Tree,
    root: Option<RootRef>,
    seq: u64,
    kept: Vec<RootRef>,
    /// The last log segment the current root holds (0: unknown).
    log_covered: u64,
    /// The log segment sealed with the frozen memtable (what its commit covers).
    frozen_segment: u64,
}

impl State {
    /// Adds the data chunks large writes stored that only the memtables name yet.
    fn stored_chunks(&self, into: &mut HashSet<ChunkId>) {
        self.mem.stored_chunks(into);
        if let Some(f) = &self.frozen {
            f.stored_chunks(into);
        }
    }
}

/// What only the checkpoint holder touches.
#[derive(Default)]
struct CkptState {
    /// Chunks reachable from each kept snapshot, computed once.
    kept_live: HashMap<ChunkId, HashSet<ChunkId>>,
    /// Chunks that may have become garbage: reached by a root this process loaded or
    /// replaced, or put by this process, and not yet found unreachable.
    candidates: HashSet<ChunkId>,
}

#[derive(Default)]
struct Wake {
    requested: bool,
    stop: bool,
}

/// Stored bytes `offset..end` of a data chunk of `chunk_size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The data chunk.
    pub chunk: ChunkId,
    /// Its size.
    pub chunk_size: u64,
    /// First byte.
    pub offset: u64,
    /// One past the last byte.
    pub end: u64,
}

/// A copy of the engine's state for `info` and `fsck`.
pub struct View {
    /// Current root.
    pub root: Option<RootRef>,
    /// Kept snapshots.
    pub kept: Vec<RootRef>,
    /// The levels.
    pub tree: Tree,
    /// Blocks not yet in chunks, sorted, newest state each: `Some(stored bytes)` for data,
    /// `None` for zero.
    pub pending: Vec<(u64, Option<usize>)>,
}

/// What [`Engine::sweep`] found in the data folder.
#[derive(Clone, Debug, Default)]
pub struct Sweep {
    /// Chunks the head, kept snapshots and writes under way reach.
    pub live: usize,
    /// Chunks in the data folder nothing reaches.
    pub garbage: Vec<ChunkId>,
    /// Their bytes.
    pub garbage_bytes: u64,
}

/// A snapshot's name and message, recorded in its root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Label {
    /// Short name (may be empty).
    pub name: String,
    /// Free text (may be empty).
    pub message: String,
}

/// An open engine; owning it owns the background checkpoint thread.
pub struct Engine {
    core: Arc<Core>,
    background: Option<std::thread::JoinHandle<()>>,
}

struct Core {
    ctx: Arc<Ctx>,
    recorder: Arc<RecordingStore>,
    blocks: u64,
    size: u64,
    tuning: Tuning,
    state: RwLock<State>,
    wal: Option<Wal>,
    sink: Option<Box<dyn RootSink>>,
    ckpt: Mutex<CkptState>,
    wake: (Mutex<Wake>, Condvar),
    /// Spreads writers' waits over each checkpoint.
    pacer: Pacer,
    /// Entries written since the last compaction, and when the last write was (ms
    /// since `opened`): what the background thread's idle compaction looks at.
    since_compaction: AtomicU64,
    last_write_ms: AtomicU64,
    /// The last compaction ran out of rewrite budget: the next idle moment does more.
    compact_again: std::sync::atomic::AtomicBool,
    opened: std::time::Instant,
    /// Held shared by a large write from storing its chunk until the memtable names
    /// it, and exclusively by garbage collection: a chunk stored (or found already
    /// there) for a write is never deleted before the memtable makes it live.
    direct_gate: RwLock<()>,
    /// A large write stored a chunk that no sync has covered yet: the next log sync
    /// syncs the store first, so the log never names a chunk a power cut can lose.
    direct_unsynced: AtomicBool,
}

/// Tells the pacer a checkpoint runs, and that it ended when dropped (also on error).
struct PacedCheckpoint<'a>(&'a Pacer);

impl<'a> PacedCheckpoint<'a> {
    fn start(pacer: &'a Pacer, bytes: usize, entries: u64) -> Self {
        pacer.started(bytes, entries);
        Self(pacer)
    }
}

impl Drop for PacedCheckpoint<'_> {
    fn drop(&mut self) {
        self.0.finished();
    }
}

fn lock_err() -> Error {
    Error::internal("engine lock poisoned by an earlier panic")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `below` sorted, then the kept snapshots' roots, the current root last: the order a
/// copy must be made in, so no reader ever meets a root whose chunks are missing.
fn roots_last(below: HashSet<ChunkId>, kept: &[RootRef], head: Option<RootRef>) -> Vec<ChunkId> {
    let roots: Vec<ChunkId> = kept
        .iter()
        .map(|k| k.id)
        .chain(head.map(|r| r.id))
        .collect();
    let mut out: Vec<ChunkId> = below.into_iter().filter(|c| !roots.contains(c)).collect();
    out.sort_unstable();
    out.extend(roots);
    out
}

/// Reads and opens a root chunk.
pub fn load_root(store: &dyn ChunkStore, keys: &Keys, r: &RootRef) -> Result<Root> {
    let stored = store
        .get(&r.id)
        .map_err(|e| e.context(format!("root {}", r.id)))?;
    Root::open(keys, &stored, &r.tag).map_err(|e| e.context(format!("root {}", r.id)))
}

/// Changes made under the write lock: whole-block reads (for read-modify-write), puts
/// and zeroes. Each put and zero is logged before it is applied.
pub struct Batch<'a> {
    core: &'a Core,
    st: RwLockWriteGuard<'a, State>,
    /// Record bytes and entries this batch added (what pacing charges it for).
    added: (usize, usize),
}

/// Whether a zero range is written to the log (replay applies ops already logged).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Logging {
    Log,
    Replaying,
}

/// A large write's records, already stored in data chunks by
/// [`Engine::store_records`] and not yet named by the memtable; hand it to
/// [`Batch::put_stored`]. Holds garbage collection off until then.
pub struct StoredWrite<'a> {
    /// (block, where its record is), in block order.
    placed: Vec<(u64, DataRef)>,
    _gate: RwLockReadGuard<'a, ()>,
}

impl Batch<'_> {
    /// Blocks of `w` become the records it stored: logged as references (one op per run
    /// of consecutive blocks in one chunk), not as the records themselves.
    pub fn put_stored(&mut self, w: StoredWrite<'_>) -> Result<()> {
        let mut rest = &w.placed[..];
        while let Some(&(lba, first)) = rest.first() {
            let run = rest
                .iter()
                .enumerate()
                .take(crate::format::wal::MAX_STORED_COUNT)
                .take_while(|(i, (l, d))| *l == lba + *i as u64 && d.chunk == first.chunk)
                .count();
            let (now, later) = rest.split_at(run);
            self.core.check_block(lba, run as u64)?;
            if let Some(wal) = &self.core.wal {
                wal.append(&WalOp::Stored {
                    lba,
                    chunk: first.chunk,
                    chunk_size: first.chunk_size,
                    records: now.iter().map(|(_, d)| (d.offset, d.len, d.tag)).collect(),
                })?;
            }
            for (l, d) in now {
                self.st.mem.insert(*l, MemEntry::Stored(*d));
            }
            self.added.1 += run;
            rest = later;
        }
        Ok(())
    }

    /// Fills `out` (whole blocks) from block `lba`.
    pub fn read_blocks(&self, lba: u64, out: &mut [u8]) -> Result<()> {
        read_blocks(
            &self.core.ctx,
            &self.st.mem,
            self.st.frozen.as_deref(),
            &self.st.tree,
            lba,
            out,
        )
    }

    /// Block `lba` becomes `rec`.
    pub fn put(&mut self, lba: u64, rec: SealedRecord) -> Result<()> {
        self.core.check_block(lba, 1)?;
        if let Some(w) = &self.core.wal {
            w.append_data(lba, &rec.bytes)?;
        }
        self.added.0 += rec.bytes.len();
        self.added.1 += 1;
        self.st.mem.insert(lba, MemEntry::Data(rec));
        Ok(())
    }

    /// Blocks `lba..lba+count` read as zeros.
    pub fn zero(&mut self, lba: u64, count: u64) -> Result<()> {
        self.added.1 += 1;
        self.core
            .zero_locked(&mut self.st, lba, count, Logging::Log)
    }
}

impl Engine {
    /// Opens the engine over `store` at `start`. A writable engine replays its log (and
    /// checkpoints what it replayed) and starts the background checkpoint thread.
    pub fn open(
        store: Arc<dyn ChunkStore>,
        keys: Keys,
        size: u64,
        start: Start,
        tuning: Tuning,
        mode: Mode,
    ) -> Result<Self> {
        let recorder = Arc::new(RecordingStore::new(store));
        let ctx = Arc::new(Ctx::new(recorder.clone(), keys, tuning.node_cache_bytes));
        let tree = Tree::open(&ctx, &start.root.runs)?;
        let mut candidates = HashSet::new();
        tree.live_chunks(&mut candidates);
        candidates.extend(start.root_ref.map(|r| r.id));
        let base = LogBase {
            id: start.root_ref.map(|r| r.id),
            seq: start.root.seq as u32,
            segment: 0, // numbered by the log
        };
        let (wal, sink, replay) = match mode {
            Mode::Writable {
                wal,
                sink,
                sync_hook,
            } => {
                let (w, replay) = Wal::open(&wal, base, start.root.log_covered, sync_hook)?;
                (Some(w), Some(sink), Some(replay))
            }
            Mode::ReadOnly { wal: Some(path) } => (
                None,
                None,
                Some(Wal::read_ops(&path, start.root.log_covered)?),
            ),
            Mode::ReadOnly { wal: None } => (None, None, None),
        };
        if let Some(r) = &replay {
            for b in &r.bases {
                check_base(b, start.root_ref.as_ref(), start.root.seq)?;
            }
        }
        let core = Core {
            ctx,
            recorder,
            blocks: size / BLOCK_SIZE as u64,
            size,
            tuning,
            state: RwLock::new(State {
                mem: Memtable::default(),
                frozen: None,
                tree,
                root: start.root_ref,
                seq: start.root.seq,
                kept: start.root.kept,
                log_covered: start.root.log_covered,
                frozen_segment: 0,
            }),
            wal,
            sink,
            ckpt: Mutex::new(CkptState {
                candidates,
                ..CkptState::default()
            }),
            wake: (Mutex::new(Wake::default()), Condvar::new()),
            pacer: Pacer::default(),
            since_compaction: AtomicU64::new(0),
            compact_again: std::sync::atomic::AtomicBool::new(false),
            last_write_ms: AtomicU64::new(0),
            opened: std::time::Instant::now(),
            direct_gate: RwLock::new(()),
            direct_unsynced: AtomicBool::new(false),
        };
        let replayed = replay.as_ref().is_some_and(|r| !r.ops.is_empty());
        if let Some(r) = replay {
            core.replay(r.ops)?;
        }
        let core = Arc::new(core);
        let mut engine = Self {
            core,
            background: None,
        };
        if engine.core.wal.is_some() {
            if replayed {
                tracing::info!("replayed write-ahead log; checkpointing");
                engine.checkpoint()?;
            }
            let c = engine.core.clone();
            engine.background = Some(
                std::thread::Builder::new()
                    .name("mindcastle-checkpoint".into())
                    .spawn(move || c.background_checkpoints())
                    .map_err(|e| Error::io("starting the checkpoint thread", e))?,
            );
        }
        Ok(engine)
    }

    /// True when writes are allowed.
    pub fn writable(&self) -> bool {
        self.core.wal.is_some()
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.core.size
    }

    /// Store, keys and node cache (for fsck).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.core.ctx
    }

    /// The current root (None for a disk never checkpointed).
    pub fn root(&self) -> Result<Option<RootRef>> {
        Ok(self.core.state.read().map_err(|_| lock_err())?.root)
    }

    /// Snapshots kept readable by the current root.
    pub fn kept(&self) -> Result<Vec<RootRef>> {
        Ok(self.core.state.read().map_err(|_| lock_err())?.kept.clone())
    }

    /// A copy of the state for reports.
    pub fn view(&self) -> Result<View> {
        let st = self.core.state.read().map_err(|_| lock_err())?;
        let mut pending: Vec<(u64, Option<usize>)> = st
            .mem
            .range(0, u64::MAX)
            .map(|(l, e)| (*l, e.stored_len()))
            .collect();
        if let Some(f) = &st.frozen {
            pending.extend(
                f.range(0, u64::MAX)
                    .filter(|(l, _)| st.mem.get(**l).is_none())
                    .map(|(l, e)| (*l, e.stored_len())),
            );
            pending.sort_unstable_by_key(|p| p.0);
        }
        Ok(View {
            root: st.root,
            kept: st.kept.clone(),
            tree: st.tree.clone(),
            pending,
        })
    }

    /// The newest state of every block not yet in chunks, sorted: a zero marker, or a
    /// record (a `DataRef` whose only meaningful field is the tag, for comparisons).
    pub fn pending_locs(&self) -> Result<Vec<(u64, Loc)>> {
        let st = self.core.state.read().map_err(|_| lock_err())?;
        let loc = |e: &MemEntry| {
            let (len, tag) = match e {
                MemEntry::Zero => return Loc::Zero,
                MemEntry::Data(r) => (r.bytes.len() as u32, r.tag),
                MemEntry::Stored(d) => (d.len, d.tag),
            };
            Loc::Data(DataRef {
                chunk: ChunkId([0; 32]),
                chunk_size: 0,
                offset: 0,
                len,
                tag,
            })
        };
        let mut out: Vec<(u64, Loc)> = st
            .mem
            .range(0, u64::MAX)
            .map(|(l, e)| (*l, loc(e)))
            .collect();
        if let Some(f) = &st.frozen {
            out.extend(
                f.range(0, u64::MAX)
                    .filter(|(l, _)| st.mem.get(**l).is_none())
                    .map(|(l, e)| (*l, loc(e))),
            );
            out.sort_unstable_by_key(|p| p.0);
        }
        Ok(out)
    }

    /// Every chunk the current root and the kept snapshots reach: index and data
    /// chunks first, then the kept snapshots' roots, the current root last (the order a
    /// copy must be made in, so no reader ever meets a root whose chunks are missing).
    pub fn reachable(&self) -> Result<Vec<ChunkId>> {
        let mut below = HashSet::new();
        // One look at the state: the levels, and the chunks large writes stored that no
        // checkpoint has indexed yet (a checkpoint moves entries from one to the other).
        let view = {
            let st = self.core.state.read().map_err(|_| lock_err())?;
            st.stored_chunks(&mut below);
            View {
                root: st.root,
                kept: st.kept.clone(),
                tree: st.tree.clone(),
                pending: Vec::new(),
            }
        };
        view.tree.live_chunks(&mut below);
        for k in &view.kept {
            let root = load_root(self.core.ctx.store.as_ref(), &self.core.ctx.keys, k)?;
            Tree::open(&self.core.ctx, &root.runs)?.live_chunks(&mut below);
        }
        Ok(roots_last(below, &view.kept, view.root))
    }

    /// Deletes (unless `dry_run`) every chunk in the local data folder that neither the
    /// head, a kept snapshot, nor a write under way reaches; returns the live count and
    /// the garbage with its bytes. It holds the checkpoint lock (no root is being made)
    /// and keeps large writes from storing chunks meanwhile, as the collector after
    /// each checkpoint does, so it never deletes a chunk a commit or a write just made.
    pub fn sweep(&self, dry_run: bool) -> Result<Sweep> {
        let _ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        let _gate = self.core.direct_gate.write().map_err(|_| lock_err())?;
        let live: HashSet<ChunkId> = self.reachable()?.into_iter().collect();
        let store = &self.core.ctx.store;
        let mut sweep = Sweep {
            live: live.len(),
            ..Sweep::default()
        };
        // The stack lists and deletes in the local data folder only: fallbacks and the
        // cache are not this disk's to clean.
        for id in store.list()? {
            if !live.contains(&id) {
                sweep.garbage_bytes += store.size(&id).unwrap_or(0);
                sweep.garbage.push(id);
            }
        }
        if !dry_run {
            self.core.check_writable()?;
            for id in &sweep.garbage {
                store.delete(id)?;
            }
        }
        Ok(sweep)
    }

    /// What reading kept snapshot `k` needs with no fallback: the index and data chunks
    /// it reaches, the head's index chunks, then every kept root and the current root
    /// last (opening the disk reads the head's index, and finding a snapshot by name
    /// reads the kept roots). The head's own data chunks are left out.
    pub fn reachable_for(&self, k: &RootRef) -> Result<Vec<ChunkId>> {
        let (head_root, kept, tree) = {
            let st = self.core.state.read().map_err(|_| lock_err())?;
            (st.root, st.kept.clone(), st.tree.clone())
        };
        if !kept.iter().any(|r| r.id == k.id) {
            return Err(Error::not_found(format!(
                "snapshot {} is not kept by this disk",
                k.id
            )));
        }
        let mut below = HashSet::new();
        for run in tree.runs() {
            below.extend(run.desc.index_chunks.iter().map(|c| c.0));
        }
        let root = load_root(self.core.ctx.store.as_ref(), &self.core.ctx.keys, k)?;
        Tree::open(&self.core.ctx, &root.runs)?.live_chunks(&mut below);
        Ok(roots_last(below, &kept, head_root))
    }

    /// Fills `out` (whole blocks) from block `lba`.
    pub fn read_blocks(&self, lba: u64, out: &mut [u8]) -> Result<()> {
        self.core
            .check_block(lba, (out.len() / BLOCK_SIZE) as u64)?;
        // Where each block is, under the state lock; the fetch outside it, so a slow
        // store (a URL fallback) stalls neither writers nor the checkpoint. A chunk the
        // collector deleted meanwhile (a checkpoint replaced what named it) is not
        // found: the read is resolved again against the newer state. Chunks are named by
        // their hash and records checked by their tag, so a fetch never returns bytes
        // other than those resolved.
        let mut attempt = 0;
        loop {
            let disk = {
                let st = self.core.state.read().map_err(|_| lock_err())?;
                resolve_into(
                    &self.core.ctx,
                    &st.mem,
                    st.frozen.as_deref(),
                    &st.tree,
                    lba,
                    out,
                )?
            };
            match fetch_into(&self.core.ctx, lba, disk, out) {
                Err(e) if e.kind() == crate::error::ErrorKind::NotFound && attempt < 3 => {
                    attempt += 1;
                    tracing::debug!(error = %e, lba, "a chunk went while it was read; resolving again");
                }
                other => return other,
            }
        }
    }

    /// Where the newest version of each block in `lba..lba+count` is (index only).
    fn slots(&self, lba: u64, count: u64) -> Result<Vec<Slot>> {
        self.core.check_block(lba, count)?;
        let st = self.core.state.read().map_err(|_| lock_err())?;
        lookup(
            &self.core.ctx,
            &st.mem,
            st.frozen.as_deref(),
            &st.tree,
            lba,
            count,
        )
    }

    /// The data chunks holding blocks `lba..lba+count`, each once, in block order (for
    /// read-ahead: index only, no data read).
    pub fn data_chunks(&self, lba: u64, count: u64) -> Result<Vec<ChunkId>> {
        let mut seen = HashSet::new();
        Ok(self
            .slots(lba, count)?
            .iter()
            .filter_map(|s| match s {
                Slot::Disk(d) => Some(d.chunk),
                _ => None,
            })
            .filter(|c| seen.insert(*c))
            .collect())
    }

    /// The stored bytes behind blocks `lba..lba+count`, in block order, neighbouring
    /// records of one chunk joined (for prefetching: index only, no data read).
    pub fn data_extents(&self, lba: u64, count: u64) -> Result<Vec<Extent>> {
        let mut out: Vec<Extent> = Vec::new();
        for s in self.slots(lba, count)? {
            let Slot::Disk(d) = s else { continue };
            let (offset, end) = (u64::from(d.offset), u64::from(d.offset) + u64::from(d.len));
            match out.last_mut() {
                Some(e) if e.chunk == d.chunk && e.end == offset => e.end = end,
                _ => out.push(Extent {
                    chunk: d.chunk,
                    chunk_size: u64::from(d.chunk_size),
                    offset,
                    end,
                }),
            }
        }
        Ok(out)
    }

    /// For blocks `lba..lba+count`: true where stored data (not a hole or zeroes) is.
    pub fn allocated(&self, lba: u64, count: u64) -> Result<Vec<bool>> {
        Ok(self
            .slots(lba, count)?
            .iter()
            .map(|s| matches!(s, Slot::Mem(_) | Slot::Disk(_)))
            .collect())
    }

    /// Runs `f` with the write lock held (reads inside see its own changes), then
    /// freezes a full memtable; waits for a checkpoint when memory would grow too far.
    /// Stores the sealed records of a large write (`(block, record)` in increasing
    /// block order) straight into data chunks cut as a checkpoint cuts them, so the log
    /// holds references instead of the records and no checkpoint copies them again.
    /// The chunks are synced by the next log sync (a flush) or checkpoint.
    pub fn store_records(&self, records: &[(u64, &SealedRecord)]) -> Result<StoredWrite<'_>> {
        self.core.check_writable()?;
        let gate = self.core.direct_gate.read().map_err(|_| lock_err())?;
        let mut chunker = Chunker::new(self.core.ctx.store.as_ref())
            .with_pending_limit(self.core.tuning.pending_chunk_bytes);
        for (lba, rec) in records {
            chunker.push(*lba, rec)?;
        }
        let placed = chunker
            .finish()?
            .into_iter()
            .map(|(lba, loc)| match loc {
                Loc::Data(d) => Ok((lba, d)),
                Loc::Zero => Err(Error::internal("the chunker placed a zero block")),
            })
            .collect::<Result<Vec<_>>>()?;
        self.core.direct_unsynced.store(true, Ordering::SeqCst);
        Ok(StoredWrite {
            placed,
            _gate: gate,
        })
    }

    pub fn update<T>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<T>) -> Result<T> {
        if self.core.wal.is_none() {
            return Err(Error::invalid("disk is open read-only"));
        }
        let mut batch = Batch {
            core: &self.core,
            st: self.core.state.write().map_err(|_| lock_err())?,
            added: (0, 0),
        };
        let out = f(&mut batch)?;
        let wait = self.core.after_write(&mut batch.st)?;
        let (share, room) = self.core.pace_share(&batch);
        if batch.added.1 > 0 {
            self.core.note_write(batch.added.1);
        }
        drop(batch);
        // The write is in the kernel's hands before the caller acknowledges it: a
        // process killed after the reply loses nothing (a power cut still loses what no
        // FLUSH or FUA made durable, as on any disk with a write cache).
        if let Some(w) = &self.core.wal {
            w.hand_off()?;
        }
        if wait {
            self.core.wait_for_checkpoint()?;
        } else if share > 0 {
            self.core.pacer.pace(share, room);
        }
        Ok(out)
    }

    /// Merges every level into the bottom one, so overwritten records stop holding
    /// chunks (collected at once) and mostly dead data chunks are rewritten; returns
    /// the new root. The background thread does this by itself once writes have
    /// paused for `IDLE` and enough was written since the last time.
    pub fn compact(&self) -> Result<Option<RootRef>> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        self.core.compact(&mut ck)?;
        drop(ck);
        self.root()
    }

    /// Whether a write now may have to wait for a checkpoint; see [`Core::may_wait`].
    pub fn write_may_wait(&self) -> bool {
        self.core.may_wait()
    }

    /// Makes every completed write durable (an fdatasync of the log, shared with
    /// concurrent flushes).
    pub fn flush(&self) -> Result<()> {
        let Some(w) = &self.core.wal else {
            return Ok(());
        };
        // Chunks of large writes first: the log must never durably name a chunk that
        // is not. (The flag is set before the log names a chunk, so every chunk the
        // log has named by now is covered.)
        if self.core.direct_unsynced.swap(false, Ordering::SeqCst) {
            if let Err(e) = self.core.ctx.store.sync() {
                self.core.direct_unsynced.store(true, Ordering::SeqCst);
                return Err(e);
            }
        }
        w.sync()
    }

    /// Writes everything written so far into chunks and a new root, publishes it, drops
    /// the log it covers and deletes chunks no root reaches any more. Returns the root.
    /// A disk without a root gets one even when nothing was written (so its `.swap`
    /// names a root from then on).
    pub fn checkpoint(&self) -> Result<Option<RootRef>> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        let force = self.root()?.is_none();
        self.core.checkpoint_all(&mut ck, force)?;
        self.root()
    }

    /// Checkpoints, then keeps the resulting root readable as a snapshot; returns it.
    pub fn snapshot(&self) -> Result<RootRef> {
        self.snapshot_labeled(&Label::default())
    }

    /// [`Engine::snapshot`] with a name and message recorded in the snapshot's root.
    /// Costs two small roots, never a copy of data.
    pub fn snapshot_labeled(&self, label: &Label) -> Result<RootRef> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        self.core.checkpoint_all(&mut ck, false)?;
        // The snapshot: a root over the same levels that carries the label.
        self.core.commit_labeled(&mut ck, true, label)?;
        let snap = self
            .root()?
            .ok_or_else(|| Error::internal("no root after a forced checkpoint"))?;
        self.core
            .state
            .write()
            .map_err(|_| lock_err())?
            .kept
            .push(snap);
        // The snapshot stays exactly as it is; a new root records that it is kept.
        self.core.commit(&mut ck, true)?;
        Ok(snap)
    }

    /// Makes the state of kept snapshot `id` the current one. The state being left is
    /// kept as a snapshot first (labeled `saved`); returns that snapshot.
    pub fn reset(&self, id: &ChunkId, saved: &Label) -> Result<RootRef> {
        let target = self
            .kept()?
            .into_iter()
            .find(|k| k.id == *id)
            .ok_or_else(|| Error::not_found(format!("snapshot {id} is not kept")))?;
        let root = load_root(self.core.ctx.store.as_ref(), &self.core.ctx.keys, &target)?;
        if root.size != self.core.size {
            return Err(Error::invalid(format!(
                "snapshot {id} is of a {}-byte disk, this disk is {} bytes",
                root.size, self.core.size
            )));
        }
        let tree = Tree::open(&self.core.ctx, &root.runs)?;
        let before = self.snapshot_labeled(saved)?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        self.core.checkpoint_all(&mut ck, false)?;
        {
            let mut st = self.core.state.write().map_err(|_| lock_err())?;
            if !st.mem.is_empty() || st.frozen.is_some() {
                return Err(Error::invalid(format!(
                    "writes arrived during reset, so the head was not moved; the state before \
                     it is kept as snapshot {} (forget it if not wanted); run reset again",
                    before.id
                )));
            }
            st.tree = tree;
        }
        self.core.commit(&mut ck, true)?;
        Ok(before)
    }

    /// Stops keeping a snapshot; chunks only it reached are deleted.
    pub fn forget_snapshot(&self, id: &ChunkId) -> Result<()> {
        self.core.check_writable()?;
        let mut ck = self.core.ckpt.lock().map_err(|_| lock_err())?;
        let gone = {
            let mut st = self.core.state.write().map_err(|_| lock_err())?;
            let gone = st.kept.iter().find(|k| k.id == *id).copied();
            st.kept.retain(|k| k.id != *id);
            gone.ok_or_else(|| Error::not_found(format!("snapshot {id} is not kept")))?
        };
        let mut candidates = std::mem::take(&mut ck.candidates);
        self.core.add_kept_live(&mut ck, &gone, &mut candidates)?;
        ck.candidates = candidates;
        ck.kept_live.remove(id);
        self.core.checkpoint_all(&mut ck, true)
    }

    /// Flushes and checkpoints (a writable engine), then stops the background thread.
    pub fn close(self) -> Result<()> {
        if self.writable() {
            self.flush()?;
            self.checkpoint()?;
        }
        Ok(())
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Ok(mut w) = self.core.wake.0.lock() {
            w.stop = true;
        }
        self.core.wake.1.notify_all();
        if let Some(h) = self.background.take() {
            let _ = h.join();
        }
    }
}

/// A log segment must apply on top of the current root or an older one: a base newer
/// than the root (the `.swap` file was put back to an older state, or lost its root)
/// would replay writes onto the wrong disk.
fn check_base(base: &LogBase, root: Option<&RootRef>, root_seq: u64) -> Result<()> {
    let Some(base_id) = base.id else {
        return Ok(());
    };
    let ok = match root {
        None => false,
        Some(r) if r.id == base_id => true,
        // An older root (seq unknown in logs of before 2026-11-30 reads as 0).
        Some(_) => u64::from(base.seq) < (root_seq & u64::from(u32::MAX)) || base.seq == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::corrupt(format!(
            "the write-ahead log was written on top of root {base_id} (seq {}), which the \
             .swap file's root ({}) does not descend from; refusing to replay it onto the \
             wrong state. Put back the .swap file that goes with this data folder",
            base.seq,
            root.map_or("none".to_string(), |r| format!("{} seq {root_seq}", r.id)),
        )))
    }
}

impl Core {
    fn check_writable(&self) -> Result<()> {
        if self.wal.is_some() {
            Ok(())
        } else {
            Err(Error::invalid("disk is open read-only"))
        }
    }

    fn check_block(&self, lba: u64, count: u64) -> Result<()> {
        match lba.checked_add(count) {
            Some(end) if end <= self.blocks => Ok(()),
            _ => Err(Error::invalid(format!(
                "blocks {lba}+{count} lie past the end of the disk ({} blocks)",
                self.blocks
            ))),
        }
    }

    fn replay(&self, ops: Vec<WalOp>) -> Result<()> {
        let mut st = self.state.write().map_err(|_| lock_err())?;
        // Whether each chunk a stored op names is whole (checked once per chunk).
        let mut whole: HashMap<ChunkId, bool> = HashMap::new();
        let mut named = Vec::new();
        for op in ops {
            match op {
                WalOp::Stored {
                    lba,
                    chunk,
                    chunk_size,
                    records,
                } => {
                    let count = records.len() as u64;
                    if lba.checked_add(count).is_none_or(|end| end > self.blocks) {
                        return Err(Error::corrupt(format!(
                            "write-ahead log names blocks {lba}+{count}, past the end of the disk"
                        )));
                    }
                    let ok = *whole
                        .entry(chunk)
                        .or_insert_with(|| self.chunk_is_whole(&chunk, chunk_size));
                    // Once the replayed ops are checkpointed, a chunk no root reaches
                    // (overwritten, or torn) is garbage this process knows about.
                    named.push(chunk);
                    if !ok {
                        // Only a write no flush acknowledged can name a chunk that is not
                        // whole (a flush syncs the chunk before the log): it is dropped.
                        tracing::warn!(
                            chunk = %chunk,
                            first_block = lba,
                            blocks = count,
                            "the log names a data chunk that is missing or torn; that unacknowledged write is dropped"
                        );
                        continue;
                    }
                    for (i, (offset, len, tag)) in records.into_iter().enumerate() {
                        let d = DataRef {
                            chunk,
                            chunk_size,
                            offset,
                            len,
                            tag,
                        };
                        st.mem.insert(lba + i as u64, MemEntry::Stored(d));
                    }
                }
                WalOp::Data { lba, record } => {
                    if lba >= self.blocks {
                        return Err(Error::corrupt(format!(
                            "write-ahead log names block {lba}, past the end of the disk"
                        )));
                    }
                    let rec = SealedRecord::from_stored(record).ok_or_else(|| {
                        Error::corrupt(format!("write-ahead log: record of block {lba} too short"))
                    })?;
                    st.mem.insert(lba, MemEntry::Data(rec));
                }
                WalOp::Zero { lba, count } => {
                    self.zero_locked(&mut st, lba, u64::from(count), Logging::Replaying)?
                }
            }
        }
        drop(st);
        self.ckpt
            .lock()
            .map_err(|_| lock_err())?
            .candidates
            .extend(named);
        Ok(())
    }

    /// True when data chunk `id` is in the store with `size` bytes that hash to its name.
    fn chunk_is_whole(&self, id: &ChunkId, size: u32) -> bool {
        match self.ctx.store.get(id) {
            Ok(bytes) => bytes.len() == size as usize && ChunkId::of(&bytes) == *id,
            Err(e) => {
                tracing::debug!(chunk = %id, error = %e, "a chunk the log names is unreadable");
                false
            }
        }
    }

    /// Marks blocks `lba..lba+count` zero where anything is stored.
    fn zero_locked(&self, st: &mut State, lba: u64, count: u64, logging: Logging) -> Result<()> {
        self.check_block(lba, count)?;
        const WINDOW: u64 = 8192;
        let mut at = lba;
        while at < lba + count {
            let n = (lba + count - at).min(WINDOW).min(u64::from(u32::MAX));
            if logging == Logging::Log {
                if let Some(w) = &self.wal {
                    w.append(&WalOp::Zero {
                        lba: at,
                        count: n as u32,
                    })?;
                }
            }
            let slots = lookup(&self.ctx, &st.mem, st.frozen.as_deref(), &st.tree, at, n)?;
            for (i, s) in slots.iter().enumerate() {
                if matches!(s, Slot::Mem(_) | Slot::Disk(_)) {
                    st.mem.insert(at + i as u64, MemEntry::Zero);
                }
            }
            at += n;
        }
        Ok(())
    }

    /// Adds the chunks kept snapshot `k` reaches to `into` (computed once per snapshot).
    fn add_kept_live(
        &self,
        ck: &mut CkptState,
        k: &RootRef,
        into: &mut HashSet<ChunkId>,
    ) -> Result<()> {
        let set = match ck.kept_live.entry(k.id) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(slot) => {
                let mut set = HashSet::from([k.id]);
                let root = load_root(self.ctx.store.as_ref(), &self.ctx.keys, k)?;
                Tree::open(&self.ctx, &root.runs)?.live_chunks(&mut set);
                slot.insert(set)
            }
        };
        into.extend(set.iter().copied());
        Ok(())
    }

    /// Commits any frozen memtable, then freezes and commits the current one (or only
    /// writes a new root when `force` and nothing is pending). Caller holds `ckpt`.
    fn checkpoint_all(&self, ck: &mut CkptState, force: bool) -> Result<()> {
        self.commit(ck, false)?;
        let froze = {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            self.freeze(&mut st)?
        };
        if froze || force {
            self.commit(ck, force)?;
        }
        Ok(())
    }

    /// Freezes a non-empty memtable and seals its log segment; false when there was
    /// nothing to freeze. Fails while an earlier frozen memtable is not committed.
    fn freeze(&self, st: &mut State) -> Result<bool> {
        if st.mem.is_empty() {
            return Ok(false);
        }
        if st.frozen.is_some() {
            return Err(Error::invalid(
                "a frozen memtable is still being checkpointed",
            ));
        }
        if let Some(w) = &self.wal {
            let started = std::time::Instant::now();
            let sealed = w.segment()?;
            w.rotate(LogBase {
                id: st.root.map(|r| r.id),
                seq: st.seq as u32,
                segment: 0, // numbered by the log
            })?;
            st.frozen_segment = sealed;
            tracing::debug!(
                us = started.elapsed().as_micros() as u64,
                bytes = st.mem.bytes(),
                entries = st.mem.len(),
                "sealed the log segment"
            );
        }
        st.frozen = Some(Arc::new(std::mem::take(&mut st.mem)));
        Ok(true)
    }

    /// Turns the frozen memtable (if any) into chunks and merges it into the levels,
    /// writes a new root, syncs the store and publishes the root; then drops the sealed
    /// log segment and collects garbage. Writes go on meanwhile: the state lock is held
    /// only to read the starting point and to publish the result. Caller holds `ckpt`.
    fn commit(&self, ck: &mut CkptState, force: bool) -> Result<()> {
        self.commit_labeled(ck, force, &Label::default())
    }

    /// [`Core::commit`] of a root that carries `label` (a snapshot's name and message).
    fn commit_labeled(&self, ck: &mut CkptState, force: bool, label: &Label) -> Result<()> {
        self.commit_root(ck, force, label, false)
    }

    /// [`Core::commit_labeled`], with every level merged into the bottom one first
    /// when `compact`.
    fn commit_root(
        &self,
        ck: &mut CkptState,
        force: bool,
        label: &Label,
        compact: bool,
    ) -> Result<()> {
        let sink = self
            .sink
            .as_ref()
            .ok_or_else(|| Error::invalid("disk is open read-only"))?;
        let (frozen, mut tree, parent, seq, kept, log_covered) = {
            let st = self.state.read().map_err(|_| lock_err())?;
            if st.frozen.is_none() && !force {
                return Ok(());
            }
            (
                st.frozen.clone(),
                st.tree.clone(),
                st.root,
                st.seq,
                st.kept.clone(),
                // With a frozen memtable, the new root holds its sealed segment.
                if st.frozen.is_some() {
                    st.frozen_segment
                } else {
                    st.log_covered
                },
            )
        };
        let started = std::time::Instant::now();
        // What the replaced root reached may become garbage.
        tree.live_chunks(&mut ck.candidates);
        ck.candidates.extend(parent.map(|r| r.id));
        // Writers are paced over this checkpoint while it runs (see `lsm::pacer`).
        let pacing = frozen.as_ref().filter(|m| !m.is_empty()).map(|m| {
            let entries = tree.merge_reads(self.tuning.level_base, m.len() as u64);
            PacedCheckpoint::start(&self.pacer, m.bytes(), entries)
        });
        if let Some(mem) = frozen.as_ref().filter(|m| !m.is_empty()) {
            let mut chunker = Chunker::new(self.ctx.store.as_ref())
                .with_pending_limit(self.tuning.pending_chunk_bytes);
            let mut zeros = Vec::new();
            for (lba, e) in mem.range(0, u64::MAX) {
                match e {
                    MemEntry::Data(r) => chunker.push(*lba, r)?,
                    MemEntry::Zero => zeros.push((*lba, Loc::Zero)),
                    // Already in a chunk: only the index entry is new.
                    MemEntry::Stored(d) => zeros.push((*lba, Loc::Data(*d))),
                }
            }
            let mut batch = chunker.finish()?;
            let chunked = started.elapsed();
            self.pacer.chunked();
            batch.extend(zeros);
            batch.sort_unstable_by_key(|e| e.0);
            let stats = tree.insert(&self.ctx, self.tuning.level_base, batch)?;
            tracing::debug!(
                level = stats.level,
                entries = stats.entries,
                chunked_ms = chunked.as_millis() as u64,
                merged_ms = (started.elapsed() - chunked).as_millis() as u64,
                "merged memtable"
            );
        }
        if compact {
            let before = started.elapsed();
            let left = match tree.compact(&self.ctx)? {
                Some(stats) => {
                    tracing::debug!(
                        level = stats.level,
                        entries = stats.entries,
                        sparse_left = stats.sparse_left,
                        ms = (started.elapsed() - before).as_millis() as u64,
                        "compacted every level into the bottom one"
                    );
                    stats.sparse_left
                }
                None => false,
            };
            self.since_compaction.store(0, Ordering::Relaxed);
            // Another pass at the next idle moment takes the chunks this one left.
            self.compact_again.store(left, Ordering::Relaxed);
        }
        let root = Root {
            size: self.size,
            seq: seq + 1,
            time: now(),
            parent,
            runs: tree.descs(),
            kept: kept.clone(),
            name: label.name.clone(),
            message: label.message.clone(),
            log_covered,
        };
        let (stored, tag) = root.seal(&self.ctx.keys)?;
        let id = self.ctx.store.put(&stored)?;
        let rref = RootRef {
            id,
            size: stored.len() as u32,
            tag,
        };
        ck.candidates.extend(self.recorder.take_put()?);
        // Every chunk the root reaches is durable before anything names it.
        let before_sync = started.elapsed();
        self.ctx.store.sync()?;
        let synced = started.elapsed();
        sink.publish(&rref)?;
        tracing::debug!(
            sync_ms = (synced - before_sync).as_millis() as u64,
            publish_ms = (started.elapsed() - synced).as_millis() as u64,
            "root named"
        );
        {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            st.tree = tree.clone();
            st.root = Some(rref);
            st.seq = root.seq;
            st.log_covered = log_covered;
            // The new root is durable and named: the sealed segment's ops are all in
            // it. Dropped before the frozen memtable is let go, so a writer never finds
            // "nothing frozen" while the sealed segment still exists.
            if frozen.is_some() {
                if let Some(w) = &self.wal {
                    w.drop_old()?;
                }
            }
            st.frozen = None;
        }
        drop(pacing);
        if let Some(mem) = frozen {
            // Its records were the largest allocation; hand the memory back now.
            drop(mem);
            crate::memory::release_free_memory();
        }
        if let Err(e) = self.collect(ck, &tree, rref, &kept) {
            tracing::warn!(error = %e, "garbage collection failed; will retry at the next checkpoint");
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, root = %id, "checkpoint");
        Ok(())
    }

    /// Deletes the candidates that neither `tree` under `root` nor a kept snapshot
    /// reaches. Candidates are only chunks a verified root reached or this process put,
    /// so a chunk nothing here knows about is never touched.
    fn collect(
        &self,
        ck: &mut CkptState,
        tree: &Tree,
        root: RootRef,
        kept: &[RootRef],
    ) -> Result<()> {
        // No large write may store or find a chunk between the memtables being read
        // here and the deletes below.
        let _gate = self.direct_gate.write().map_err(|_| lock_err())?;
        let mut live: HashSet<ChunkId> = HashSet::from([root.id]);
        tree.live_chunks(&mut live);
        {
            let st = self.state.read().map_err(|_| lock_err())?;
            st.stored_chunks(&mut live);
        }
        for k in kept {
            self.add_kept_live(ck, k, &mut live)?;
        }
        let mut deleted = 0;
        for id in ck.candidates.iter().filter(|c| !live.contains(c)) {
            self.ctx.store.delete(id)?;
            deleted += 1;
        }
        // Dead ones are gone; live ones stop being candidates until a later root
        // replaces the one that reaches them. (On an error above they all stay.)
        ck.candidates.clear();
        if deleted > 0 {
            tracing::debug!(deleted, "collected unreferenced chunks");
        }
        Ok(())
    }

    /// After a write, with the state write lock held: freezes a full memtable and wakes
    /// the background thread. Returns true when the writer must wait for a checkpoint
    /// (the fresh memtable filled before the frozen one was committed).
    fn after_write(&self, st: &mut State) -> Result<bool> {
        let wal_len = self.wal.as_ref().map_or(0, Wal::len);
        let full = st
            .mem
            .full(self.tuning.memtable_entries, self.tuning.memtable_bytes)
            || wal_len > MAX_WAL_BYTES;
        if !full {
            return Ok(false);
        }
        if st.frozen.is_none() {
            match self.freeze(st) {
                Ok(_) => self.request_checkpoint(),
                Err(e) => {
                    tracing::warn!(error = %e, "freezing the memtable failed; retrying later")
                }
            }
            return Ok(false);
        }
        self.request_checkpoint();
        // Both memtables are full: the writer waits, which is what bounds memory.
        Ok(true)
    }

    /// Commits the frozen memtable, if any, then a root with every level merged into
    /// the bottom one. Caller holds `ckpt`.
    fn compact(&self, ck: &mut CkptState) -> Result<()> {
        self.commit(ck, false)?;
        self.commit_root(ck, true, &Label::default(), true)
    }

    fn note_write(&self, entries: usize) {
        self.since_compaction
            .fetch_add(entries as u64, Ordering::Relaxed);
        self.last_write_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Whether the disk has been idle for `IDLE` after enough writes that a full merge
    /// pays: at least `COMPACT_MIN_ENTRIES` entries written, and at least an eighth of
    /// the entries in the tree (so its cost is at most eight merges per entry written).
    fn compaction_due(&self) -> bool {
        let now = self.opened.elapsed().as_millis() as u64;
        if now.saturating_sub(self.last_write_ms.load(Ordering::Relaxed)) < IDLE.as_millis() as u64
        {
            return false;
        }
        if self.compact_again.load(Ordering::Relaxed) {
            return true;
        }
        let written = self.since_compaction.load(Ordering::Relaxed);
        if written < COMPACT_MIN_ENTRIES {
            return false;
        }
        let Ok(st) = self.state.read() else {
            return false;
        };
        let entries: u64 = st.tree.runs().map(|r| r.desc.entries).sum();
        st.tree.runs().count() > 1 && written.saturating_mul(8) >= entries
    }

    /// Whether a write now may have to wait for a checkpoint (a memtable is frozen and
    /// the fresh one is three quarters full): callers that must not block long (a
    /// request run inline on an async task) hand the write to a thread instead.
    fn may_wait(&self) -> bool {
        let Ok(st) = self.state.read() else {
            return true;
        };
        st.frozen.is_some()
            && (st.mem.bytes() >= self.tuning.memtable_bytes / 4 * 3
                || st.mem.len() >= self.tuning.memtable_entries / 4 * 3
                || self.pacer.holding())
    }

    /// What a batch is charged for pacing, and the room left it is a share of: bytes
    /// or entries, whichever limit the batch brings nearer.
    fn pace_share(&self, batch: &Batch<'_>) -> (usize, usize) {
        if batch.st.frozen.is_none() {
            return (0, 0);
        }
        let bytes_room = self
            .tuning
            .memtable_bytes
            .saturating_sub(batch.st.mem.bytes());
        let entries_room = self
            .tuning
            .memtable_entries
            .saturating_sub(batch.st.mem.len());
        // Compare added.0 / bytes_room with added.1 / entries_room without dividing.
        if batch.added.0 as u128 * entries_room as u128
            >= batch.added.1 as u128 * bytes_room as u128
        {
            (batch.added.0, bytes_room)
        } else {
            (batch.added.1, entries_room)
        }
    }

    /// Called by writers after releasing the state lock when `after_write` said so:
    /// waits for the background checkpoint of the frozen memtable (committing it here
    /// if it is still there), then freezes the full one and hands it to the background
    /// thread. The writer waits for at most the rest of one checkpoint, never for its
    /// own. A failure is returned only once memory would otherwise grow without bound.
    fn wait_for_checkpoint(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let mut ck = self.ckpt.lock().map_err(|_| lock_err())?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "writer waited for the background checkpoint"
        );
        let due = |st: &State| {
            st.mem
                .full(self.tuning.memtable_entries, self.tuning.memtable_bytes)
                || self.wal.as_ref().map_or(0, Wal::len) > MAX_WAL_BYTES
        };
        let result = (|| {
            let still_frozen = {
                let st = self.state.read().map_err(|_| lock_err())?;
                st.frozen.is_some() && due(&st)
            };
            if still_frozen {
                self.commit(&mut ck, false)?;
            }
            let mut st = self.state.write().map_err(|_| lock_err())?;
            if st.frozen.is_none() && due(&st) {
                self.freeze(&mut st)
            } else {
                Ok(false)
            }
        })();
        drop(ck);
        match result {
            Ok(froze) => {
                if froze {
                    self.request_checkpoint();
                }
                Ok(())
            }
            Err(e) => {
                let (entries, bytes) = {
                    let st = self.state.read().map_err(|_| lock_err())?;
                    (st.mem.len(), st.mem.bytes())
                };
                if entries > 2 * self.tuning.memtable_entries
                    || bytes > 2 * self.tuning.memtable_bytes
                {
                    return Err(e);
                }
                tracing::warn!(error = %e, "checkpoint failed; retrying later");
                Ok(())
            }
        }
    }

    fn request_checkpoint(&self) {
        if let Ok(mut w) = self.wake.0.lock() {
            w.requested = true;
        }
        self.wake.1.notify_one();
    }

    /// The background thread: commits frozen memtables until the engine is dropped.
    fn background_checkpoints(&self) {
        loop {
            {
                let Ok(mut w) = self.wake.0.lock() else {
                    return;
                };
                let mut idle = false;
                while !w.requested && !w.stop {
                    let (g, timeout) = match self.wake.1.wait_timeout(w, IDLE / 3) {
                        Ok(r) => r,
                        Err(_) => return,
                    };
                    w = g;
                    if timeout.timed_out() && !w.requested && self.compaction_due() {
                        idle = true;
                        break;
                    }
                }
                if w.stop {
                    return;
                }
                if !idle {
                    w.requested = false;
                }
                drop(w);
                if idle {
                    let Ok(mut ck) = self.ckpt.lock() else {
                        return;
                    };
                    if let Err(e) = self.compact(&mut ck) {
                        tracing::warn!(error = %e, "idle compaction failed; will retry");
                        // Not again until more is written.
                        self.since_compaction.store(0, Ordering::Relaxed);
                    }
                    continue;
                }
            }
            let Ok(mut ck) = self.ckpt.lock() else {
                return;
            };
            if let Err(e) = self.commit(&mut ck, false) {
                tracing::warn!(error = %e, "background checkpoint failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_base_newer_than_the_root_is_refused() {
        let r = RootRef {
            id: ChunkId([1; 32]),
            size: 10,
            tag: [0; 16],
        };
        let same = LogBase {
            id: Some(r.id),
            seq: 5,
            segment: 0,
        };
        let older = LogBase {
            id: Some(ChunkId([2; 32])),
            seq: 3,
            segment: 0,
        };
        let newer = LogBase {
            id: Some(ChunkId([3; 32])),
            seq: 9,
            segment: 0,
        };
        let legacy = LogBase {
            id: Some(ChunkId([4; 32])),
            seq: 0,
            segment: 0,
        };
        assert!(check_base(&same, Some(&r), 5).is_ok());
        assert!(check_base(&older, Some(&r), 5).is_ok());
        assert!(check_base(&legacy, Some(&r), 5).is_ok());
        assert!(check_base(&LogBase::default(), Some(&r), 5).is_ok());
        assert!(check_base(&newer, Some(&r), 5).is_err());
        assert!(check_base(&older, None, 0).is_err());
    }
}
