//! A disk of 4 KiB blocks with byte-granular reads and writes, zeroing, trimming, durable
//! flushes, checkpoints and snapshots, over the LSM tree.
//!
//! Locking: `state` (a RwLock) orders writes; readers share it. The log has its own
//! mutex so a FLUSH (fdatasync) never blocks readers. Lock order: state, then log.
//! Sub-block writes are read-modify-write under the state write lock, so overlapping
//! small writes can never lose each other's bytes.

mod disk_files;
pub mod fsck;
mod io;
pub mod stats;
pub mod transfer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use disk_files::{create_swap, write_atomic, DiskLock};
pub use disk_files::{data_dir, read_swap};
pub use io::Extent;

use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::{DiskKey, Keys};
use crate::format::root::{Root, RootRef};
use crate::format::swapfile::SwapFile;
use crate::format::wal::WalOp;
use crate::format::BLOCK_SIZE;
use crate::lsm::chunker::Chunker;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::Loc;
use crate::lsm::memtable::{MemEntry, Memtable};
use crate::lsm::tree::Tree;
use crate::lsm::wal::Wal;
use crate::store::local::LocalStore;
use crate::store::ChunkStore;

/// Block size as u64.
pub const BS: u64 = BLOCK_SIZE as u64;
/// The log is checkpointed when it grows past this.
const MAX_WAL_BYTES: u64 = 256 << 20;
/// Default disk size: 100 GiB.
pub const DEFAULT_SIZE: u64 = 100 << 30;

/// How to open a disk.
#[derive(Clone, Debug, Default)]
pub struct OpenOptions {
    /// Refuse writes; take a shared lock.
    pub read_only: bool,
    /// Open this kept snapshot (root id) instead of the current state; implies read-only.
    pub snapshot: Option<ChunkId>,
    /// Do not lock at all (for `info` beside a running writer).
    pub no_lock: bool,
    /// Sizes of the memtable and levels.
    pub tuning: Tuning,
}

/// Sizes of the memtable and levels; tests shrink them to exercise merges.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// Memtable entries that trigger a checkpoint.
    pub memtable_entries: usize,
    /// Capacity of level 0 in entries.
    pub level_base: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            memtable_entries: crate::lsm::memtable::MAX_ENTRIES,
            level_base: crate::lsm::policy::BASE_ENTRIES,
        }
    }
}

struct State {
    swap: SwapFile,
    mem: Memtable,
    tree: Tree,
    root: Option<RootRef>,
    seq: u64,
    kept: Vec<RootRef>,
    /// Chunks reachable from each kept snapshot, computed once.
    kept_live: HashMap<ChunkId, HashSet<ChunkId>>,
}

/// An open disk.
pub struct Volume {
    swap_path: PathBuf,
    data_dir: PathBuf,
    ctx: Arc<Ctx>,
    local: Arc<LocalStore>,
    size: u64,
    uuid: String,
    writable: bool,
    tuning: Tuning,
    state: RwLock<State>,
    wal: Mutex<Option<Wal>>,
    _lock: Option<DiskLock>,
}

fn lock_err() -> Error {
    Error::new(ErrorKind::Io, "internal lock poisoned by an earlier panic")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads and opens a root chunk.
pub fn load_root(ctx: &Ctx, r: &RootRef) -> Result<Root> {
    let stored = ctx
        .store
        .get(&r.id)
        .map_err(|e| e.context(format!("root {}", r.id)))?;
    Root::open(&ctx.keys, &stored, &r.tag).map_err(|e| e.context(format!("root {}", r.id)))
}

impl Volume {
    /// Creates `NAME.swap` (mode 0600) and its data folder, and opens it.
    pub fn create(path: &Path, size: u64) -> Result<Self> {
        if size == 0 || !size.is_multiple_of(BS) {
            return Err(Error::invalid(format!(
                "size {size} is not a positive multiple of 4096"
            )));
        }
        let swap = SwapFile::new(uuid::Uuid::new_v4().to_string(), size, DiskKey::random().0);
        create_swap(path, &swap)?;
        Self::open(path, &OpenOptions::default())
    }

    /// Opens a disk.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let mut swap = read_swap(path)?;
        let dir = data_dir(path, &swap);
        let writable = !opts.read_only && opts.snapshot.is_none();
        if !dir.is_dir() {
            if swap.snapshot.is_some() && swap.fallbacks.is_empty() {
                return Err(Error::not_found(format!(
                    "{}: data folder {} is missing and the disk has no fallback=",
                    path.display(),
                    dir.display()
                )));
            }
            if !writable {
                return Err(Error::not_found(format!(
                    "data folder {} is missing",
                    dir.display()
                )));
            }
        }
        let local = Arc::new(LocalStore::open(&dir)?);
        let lock = if opts.no_lock {
            None
        } else {
            Some(DiskLock::take(&dir, writable)?)
        };
        if swap.key.is_none() {
            // A hand-written .swap without a key and without data: make the key now.
            swap.key = Some(DiskKey::random().0);
            if writable {
                write_atomic(path, &swap.render())?;
            }
        }
        let key = DiskKey(swap.key.unwrap_or_default());
        let store: Arc<dyn ChunkStore> = local.clone();
        let ctx = Arc::new(Ctx::new(store, Keys::new(&key)));
        let (root_ref, root) = match opts.snapshot {
            None => match &swap.snapshot {
                Some(r) => (Some(*r), load_root(&ctx, r)?),
                None => (
                    None,
                    Root {
                        size: swap.size,
                        ..Root::default()
                    },
                ),
            },
            Some(id) => {
                let cur = swap
                    .snapshot
                    .ok_or_else(|| Error::not_found(format!("snapshot {id}: disk has no root")))?;
                let cur_root = load_root(&ctx, &cur)?;
                let r = if cur.id == id {
                    cur
                } else {
                    *cur_root.kept.iter().find(|k| k.id == id).ok_or_else(|| {
                        Error::not_found(format!("snapshot {id} is not kept by this disk"))
                    })?
                };
                (Some(r), load_root(&ctx, &r)?)
            }
        };
        let tree = Tree::open(&ctx, &root.runs)?;
        let size = if opts.snapshot.is_some() {
            root.size
        } else {
            swap.size
        };
        let state = State {
            mem: Memtable::default(),
            tree,
            root: root_ref,
            seq: root.seq,
            kept: root.kept,
            kept_live: HashMap::new(),
            swap,
        };
        let vol = Self {
            swap_path: path.to_path_buf(),
            data_dir: dir.clone(),
            ctx,
            local,
            uuid: state.swap.uuid.clone(),
            size,
            writable,
            tuning: opts.tuning,
            state: RwLock::new(state),
            wal: Mutex::new(None),
            _lock: lock,
        };
        let wal_path = dir.join("wal");
        if writable {
            // Collect first: a chunk name left by a power cut before its fsync must go
            // before any put could mistake it for a stored copy.
            vol.collect_garbage()?;
            let base = vol.root_ref()?.map(|r| r.id);
            let (wal, ops) = Wal::open(&wal_path, base)?;
            let replay = !ops.is_empty();
            vol.replay(ops)?;
            *vol.wal.lock().map_err(|_| lock_err())? = Some(wal);
            if replay {
                tracing::info!("replayed write-ahead log; checkpointing");
                vol.checkpoint()?;
            }
        } else if opts.snapshot.is_none() {
            vol.replay(Wal::read_ops(&wal_path)?)?;
        }
        Ok(vol)
    }

    fn replay(&self, ops: Vec<WalOp>) -> Result<()> {
        let mut st = self.state.write().map_err(|_| lock_err())?;
        for op in ops {
            match op {
                WalOp::Data { lba, record } => {
                    if lba >= self.size / BS || record.len() < 16 {
                        return Err(Error::corrupt(format!("write-ahead log names block {lba}")));
                    }
                    let mut tag = [0u8; 16];
                    tag.copy_from_slice(record.get(record.len() - 16..).unwrap_or(&[0; 16]));
                    st.mem.insert(
                        lba,
                        MemEntry::Data(crate::format::record::SealedRecord { bytes: record, tag }),
                    );
                }
                WalOp::Zero { lba, count } => {
                    self.zero_locked(&mut st, lba, u64::from(count), None)?
                }
            }
        }
        Ok(())
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }
    /// Disk UUID.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }
    /// The data folder.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// The `.swap` file.
    pub fn swap_path(&self) -> &Path {
        &self.swap_path
    }
    /// True when writes are allowed.
    pub fn writable(&self) -> bool {
        self.writable
    }
    /// The current root (None for a disk never checkpointed).
    pub fn root_ref(&self) -> Result<Option<RootRef>> {
        Ok(self.state.read().map_err(|_| lock_err())?.root)
    }
    /// Snapshots kept readable by the current root.
    pub fn kept(&self) -> Result<Vec<RootRef>> {
        Ok(self.state.read().map_err(|_| lock_err())?.kept.clone())
    }
    /// Shared tree context (for fsck and stats).
    pub fn ctx(&self) -> &Arc<Ctx> {
        &self.ctx
    }
    /// A copy of the current tree.
    pub fn tree(&self) -> Result<Tree> {
        Ok(self.state.read().map_err(|_| lock_err())?.tree.clone())
    }

    fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Error::invalid(format!(
                "range {offset}+{len} is past the end of the {}-byte disk",
                self.size
            ))),
        }
    }

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::invalid("disk is open read-only"))
        }
    }

    /// Makes every completed write durable (fdatasync of the log).
    pub fn flush(&self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        let mut wal = self.wal.lock().map_err(|_| lock_err())?;
        match wal.as_mut() {
            Some(w) => w.sync(),
            None => Ok(()),
        }
    }

    fn log(&self, op: &WalOp) -> Result<()> {
        let mut wal = self.wal.lock().map_err(|_| lock_err())?;
        match wal.as_mut() {
            Some(w) => w.append(op),
            // During open, replayed ops are already in the log.
            None => Ok(()),
        }
    }

    /// Writes the memtable into chunks and a new root, updates the `.swap` file, resets
    /// the log and deletes chunks nothing references. Returns the current root.
    pub fn checkpoint(&self) -> Result<Option<RootRef>> {
        self.check_writable()?;
        let mut st = self.state.write().map_err(|_| lock_err())?;
        self.checkpoint_locked(&mut st, false)?;
        Ok(st.root)
    }

    /// Checkpoints, then keeps the resulting root readable as a snapshot; returns it.
    pub fn snapshot(&self) -> Result<RootRef> {
        self.check_writable()?;
        let mut st = self.state.write().map_err(|_| lock_err())?;
        let force = st.root.is_none();
        self.checkpoint_locked(&mut st, force)?;
        let snap = st
            .root
            .ok_or_else(|| Error::invalid("no root to snapshot"))?;
        if !st.kept.contains(&snap) {
            st.kept.push(snap);
            // The snapshot stays exactly as it is; a new root records that it is kept.
            self.checkpoint_locked(&mut st, true)?;
        }
        Ok(snap)
    }

    /// Stops keeping a snapshot; its chunks go at the next checkpoint.
    pub fn forget_snapshot(&self, id: &ChunkId) -> Result<()> {
        self.check_writable()?;
        let mut st = self.state.write().map_err(|_| lock_err())?;
        let before = st.kept.len();
        st.kept.retain(|k| k.id != *id);
        if st.kept.len() == before {
            return Err(Error::not_found(format!("snapshot {id} is not kept")));
        }
        st.kept_live.remove(id);
        self.checkpoint_locked(&mut st, true)
    }

    /// Flushes, checkpoints and releases the disk.
    pub fn close(self) -> Result<()> {
        if self.writable {
            self.flush()?;
            self.checkpoint()?;
        }
        Ok(())
    }

    fn checkpoint_locked(&self, st: &mut State, force: bool) -> Result<()> {
        if st.mem.is_empty() && !force {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut tree = st.tree.clone();
        if !st.mem.is_empty() {
            let mut chunker = Chunker::new(self.ctx.store.as_ref());
            let mut zeros = Vec::new();
            for (lba, e) in st.mem.range(0, u64::MAX) {
                match e {
                    MemEntry::Data(r) => chunker.push(*lba, r)?,
                    MemEntry::Zero => zeros.push((*lba, Loc::Zero)),
                }
            }
            let mut batch = chunker.finish()?;
            batch.extend(zeros);
            batch.sort_unstable_by_key(|e| e.0);
            let stats = tree.insert(&self.ctx, self.tuning.level_base, batch)?;
            tracing::debug!(
                level = stats.level,
                entries = stats.entries,
                "merged memtable"
            );
        }
        let root = Root {
            size: self.size,
            seq: st.seq + 1,
            time: now(),
            parent: st.root,
            runs: tree.descs(),
            kept: st.kept.clone(),
            name: String::new(),
            message: String::new(),
        };
        let (stored, tag) = root.seal(&self.ctx.keys)?;
        let id = self.ctx.store.put(&stored)?;
        let rref = RootRef {
            id,
            size: stored.len() as u32,
            tag,
        };
        self.ctx.store.sync()?;
        let mut swap = st.swap.clone();
        swap.snapshot = Some(rref);
        write_atomic(&self.swap_path, &swap.render())?;
        // The new root is durable and named: the log's ops are all in it.
        if let Some(w) = self.wal.lock().map_err(|_| lock_err())?.as_mut() {
            w.reset(Some(id))?;
        }
        st.swap = swap;
        st.tree = tree;
        st.root = Some(rref);
        st.seq = root.seq;
        st.mem.drain();
        drop(stored);
        if let Err(e) = self.collect_locked(st) {
            tracing::warn!(error = %e, "garbage collection failed; will retry at the next checkpoint");
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, root = %id, "checkpoint");
        Ok(())
    }

    fn collect_garbage(&self) -> Result<()> {
        let mut st = self.state.write().map_err(|_| lock_err())?;
        self.collect_locked(&mut st)
    }

    /// Deletes local chunks that neither the current root nor a kept snapshot reaches.
    fn collect_locked(&self, st: &mut State) -> Result<()> {
        let mut live = HashSet::new();
        st.tree.live_chunks(&mut live);
        live.extend(st.root.map(|r| r.id));
        for k in st.kept.clone() {
            if let std::collections::hash_map::Entry::Vacant(slot) = st.kept_live.entry(k.id) {
                let mut set = HashSet::new();
                set.insert(k.id);
                let root = load_root(&self.ctx, &k)?;
                Tree::open(&self.ctx, &root.runs)?.live_chunks(&mut set);
                slot.insert(set);
            }
            if let Some(set) = st.kept_live.get(&k.id) {
                live.extend(set.iter().copied());
            }
        }
        let mut deleted = 0;
        for id in self.local.list()? {
            if !live.contains(&id) {
                self.local.delete(&id)?;
                deleted += 1;
            }
        }
        if let Ok(rd) = std::fs::read_dir(self.local.dir()) {
            for ent in rd.flatten() {
                if ent.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(ent.path());
                }
            }
        }
        if deleted > 0 {
            tracing::debug!(deleted, "collected unreferenced chunks");
        }
        Ok(())
    }

    fn after_write(&self, st: &mut State) -> Result<()> {
        let wal_len = self
            .wal
            .lock()
            .map_err(|_| lock_err())?
            .as_ref()
            .map_or(0, Wal::len);
        if st.mem.full(self.tuning.memtable_entries) || wal_len > MAX_WAL_BYTES {
            if let Err(e) = self.checkpoint_locked(st, false) {
                // The write itself is in the log and the memtable; only refuse more when
                // memory would grow without bound.
                if st.mem.len() > 4 * self.tuning.memtable_entries || wal_len > 4 * MAX_WAL_BYTES {
                    return Err(e);
                }
                tracing::warn!(error = %e, "checkpoint failed; retrying later");
            }
        }
        Ok(())
    }
}
