//! The LSM engine of one open disk: memtable, frozen memtable, levels, write-ahead log,
//! freeze and commit, merges, garbage collection and the background checkpoint thread.
//! It speaks whole blocks and sealed records; `volume` above it speaks bytes.
//!
//! Locking: `state` (a RwLock) orders writes; readers share it. The log has its own
//! locks and fdatasyncs with neither held (group commit, see `lsm::wal`), so a FLUSH
//! never blocks readers or writers. `ckpt` serialises commits and garbage collection.
//! Lock order: ckpt, then state, then the log's.
//!
//! One file per concern: `write`, `read`, `replay`, `commit`, `gc`, `history`,
//! `background`; this one holds the state, the engine's face and opening it.
//!
//! Checkpoints run beside writes: a full memtable is frozen (and its log segment sealed)
//! in a moment under the write lock, and the background thread turns the frozen memtable
//! into chunks and a new root while writes go on into a fresh memtable. Reads look in
//! the memtable, then the frozen one, then the levels. A writer waits only when the
//! fresh memtable fills before the frozen one is done.

mod background;
mod combine;
mod commit;
mod fsck;
mod gc;
mod history;
mod read;
mod replay;
mod resize;
mod stats;
mod write;

pub use fsck::FsckReport;
use replay::check_base;
pub use stats::IndexStats;
use write::Logging;
pub use write::{Batch, StoredWrite};

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::Keys;
use crate::format::record::{PackedRecords, SealedRecord};
use crate::format::root::{Root, RootRef};
use crate::format::wal::{LogBase, WalOp};
use crate::format::BLOCK_SIZE;
use crate::lsm::chunker::Chunker;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::{DataRef, Loc};
use crate::lsm::lookup::{
    fetch_into, finish_lookup, lookup, mem_slots, place_slots, read_blocks, Slot,
};
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

/// Blocks a memtable holds before it is checkpointed, when set: small values make a
/// run checkpoint and merge all the time (the whole-CLI model kills servers inside
/// checkpoints this way). Read once by the command line.
pub const MEMTABLE_ENTRIES_ENV: &str = "MINDCASTLE_MEMTABLE_ENTRIES";

static MEMTABLE_ENTRIES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Reads [`MEMTABLE_ENTRIES_ENV`] for this process; a bad value is an error.
pub fn configure_memtable_entries() -> Result<()> {
    let Some(v) = std::env::var_os(MEMTABLE_ENTRIES_ENV) else {
        return Ok(());
    };
    let max = crate::lsm::memtable::MAX_ENTRIES;
    let n = v
        .to_str()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|n| (16..=max).contains(n))
        .ok_or_else(|| {
            Error::invalid(format!(
                "{MEMTABLE_ENTRIES_ENV}={}: expected a number of blocks from 16 to {max}",
                v.to_string_lossy()
            ))
        })?;
    let _ = MEMTABLE_ENTRIES.set(n);
    Ok(())
}

impl Tuning {
    /// The sizes that keep an engine within `budget` (see [`crate::memory`]).
    pub fn for_budget(budget: crate::memory::Budget) -> Self {
        Self {
            memtable_entries: MEMTABLE_ENTRIES
                .get()
                .copied()
                .unwrap_or(crate::lsm::memtable::MAX_ENTRIES),
            memtable_bytes: budget.memtable_bytes(),
            level_base: crate::lsm::policy::BASE_ENTRIES,
            node_cache_bytes: budget.node_cache_bytes(),
            pending_chunk_bytes: budget.pending_chunk_bytes(),
        }
    }
}

/// Where a committed root is made the disk's current one (the `.swap` file).
pub trait RootSink: Send + Sync {
    /// Names `root`, of a `disk_size`-byte disk, durably; called after every chunk it
    /// reaches is synced.
    fn publish(&self, root: &RootRef, disk_size: u64) -> Result<()>;
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

/// Which version of a block a read saw: its record's tag, or none when it read as
/// zeros. Equal tags mean equal bytes (the tag authenticates them under the disk key).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version(Option<[u8; 16]>);

impl Version {
    fn of(s: &Slot) -> Self {
        match s {
            Slot::Zero => Self(None),
            Slot::Mem(r) => Self(Some(r.tag)),
            Slot::Disk(d) => Self(Some(d.tag)),
        }
    }
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
    /// Disk size in bytes: changed only by [`Engine::resize`], under the checkpoint
    /// lock and the state lock.
    size: AtomicU64,
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
    /// Large writes waiting to share a chunk, and which of them stores it.
    combiner: combine::Combiner<Vec<PackedRecords>>,
    /// A large write stored a chunk that no sync has covered yet: the next log sync
    /// syncs the store first, so the log never names a chunk a power cut can lose.
    direct_unsynced: AtomicBool,
}

/// Tells the pacer a checkpoint runs, and that it ended when dropped (also on error).
struct PacedCheckpoint<'a>(&'a Pacer);

impl<'a> PacedCheckpoint<'a> {
    fn start(pacer: &'a Pacer, bytes: usize, blocks: u64, entries: u64) -> Self {
        pacer.started(bytes, blocks, entries);
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

/// Reads and opens a root chunk.
pub fn load_root(store: &dyn ChunkStore, keys: &Keys, r: &RootRef) -> Result<Root> {
    let stored = store
        .get(&r.id)
        .map_err(|e| e.context(format!("root {}", r.id)))?;
    Root::open(keys, &stored, &r.tag).map_err(|e| e.context(format!("root {}", r.id)))
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
        let ctx = Arc::new(Ctx::new(
            recorder.clone(),
            keys,
            tuning.node_cache_bytes,
            tuning.pending_chunk_bytes,
        ));
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
            size: AtomicU64::new(size),
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
            combiner: combine::Combiner::default(),
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

    /// One block compressed and sealed with this disk's record key, ready for
    /// [`Batch::put`] (done outside any lock, so callers seal in parallel first).
    pub fn seal_block(&self, block: &[u8]) -> Result<SealedRecord> {
        crate::format::record::seal_block(&self.core.ctx.keys, block)
    }

    /// Compresses and seals `block` onto the end of `packed`, as block `lba`.
    pub fn seal_packed(&self, packed: &mut PackedRecords, lba: u64, block: &[u8]) -> Result<()> {
        packed.seal(&self.core.ctx.keys, lba, block)
    }

    /// A stored root of this disk (a kept snapshot, or any it names), authenticated.
    pub fn load_root(&self, r: &RootRef) -> Result<Root> {
        load_root(self.core.ctx.store.as_ref(), &self.core.ctx.keys, r)
    }

    /// The levels of `root` (its index nodes read through this disk's store).
    pub fn open_tree(&self, root: &Root) -> Result<Tree> {
        Tree::open(&self.core.ctx, &root.runs)
    }

    /// Seals `root` with this disk's keys (a clone's first root, stored elsewhere).
    pub fn seal_root(&self, root: &Root) -> Result<(Vec<u8>, [u8; 16])> {
        root.seal(&self.core.ctx.keys)
    }

    /// Calls `changed` with every block whose newest entry differs between the levels
    /// `a` and `b` (plus `b_pending`, blocks not yet in `b`'s levels), from the index
    /// alone (see [`crate::lsm::diff`]).
    pub fn changed_blocks(
        &self,
        a: &Tree,
        b: &Tree,
        b_pending: Vec<(u64, Loc)>,
        changed: &mut dyn FnMut(u64),
    ) -> Result<()> {
        crate::lsm::diff::changed_blocks(&self.core.ctx, a, b, b_pending, changed)
    }

    /// True when writes are allowed.
    pub fn writable(&self) -> bool {
        self.core.wal.is_some()
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.core.size()
    }

    /// The disk's chunk files as opaque, sealed bytes (never the key): what push,
    /// pull and prefetch copy or warm without reading them. Lists and puts reach the
    /// local data folder; gets fall through the cache and fallbacks.
    pub fn chunk_files(&self) -> &dyn ChunkStore {
        self.core.ctx.store.as_ref()
    }

    /// The current root (None for a disk never checkpointed).
    pub fn root(&self) -> Result<Option<RootRef>> {
        Ok(self.core.state.read().map_err(|_| lock_err())?.root)
    }

    /// Snapshots kept readable by the current root.
    pub fn kept(&self) -> Result<Vec<RootRef>> {
        Ok(self.core.state.read().map_err(|_| lock_err())?.kept.clone())
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

impl Core {
    fn check_writable(&self) -> Result<()> {
        if self.wal.is_some() {
            Ok(())
        } else {
            Err(Error::invalid("disk is open read-only"))
        }
    }

    fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    fn blocks(&self) -> u64 {
        self.size() / BLOCK_SIZE as u64
    }

    fn check_block(&self, lba: u64, count: u64) -> Result<()> {
        match lba.checked_add(count) {
            Some(end) if end <= self.blocks() => Ok(()),
            _ => Err(Error::invalid(format!(
                "blocks {lba}+{count} lie past the end of the disk ({} blocks)",
                self.blocks()
            ))),
        }
    }
}
