//! A disk of 4 KiB blocks with byte-granular reads and writes, zeroing, trimming, durable
//! flushes, checkpoints and snapshots, over the LSM tree.
//!
//! Locking: `state` (a RwLock) orders writes; readers share it. The log has its own
//! mutex so a FLUSH (fdatasync) never blocks readers. `ckpt` serialises checkpoints and
//! garbage collection. Lock order: ckpt, then state, then log. Sub-block writes are
//! read-modify-write under the state write lock, so overlapping small writes can never
//! lose each other's bytes.
//!
//! Checkpoints run beside writes: a full memtable is frozen (and its log segment sealed)
//! in a moment under the write lock, and a background thread turns the frozen memtable
//! into chunks and a new root while writes go on into a fresh memtable. Reads look in
//! the memtable, then the frozen one, then the levels. A writer waits only when the
//! fresh memtable fills before the frozen one is done.

mod disk_files;
pub mod fsck;
mod io;
pub mod stats;
pub mod transfer;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};
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
    /// The memtable a checkpoint is turning into chunks (its log segment is sealed).
    frozen: Option<Arc<Memtable>>,
    tree: Tree,
    root: Option<RootRef>,
    seq: u64,
    kept: Vec<RootRef>,
}

impl State {
    /// Entries not yet in chunks with lba in `[a, b)`, sorted, newest per block.
    fn pending_range(&self, a: u64, b: u64) -> Vec<(u64, &MemEntry)> {
        let mut out: Vec<(u64, &MemEntry)> = self.mem.range(a, b).map(|(l, e)| (*l, e)).collect();
        if let Some(f) = &self.frozen {
            out.extend(
                f.range(a, b)
                    .filter(|(l, _)| self.mem.get(**l).is_none())
                    .map(|(l, e)| (*l, e)),
            );
            out.sort_unstable_by_key(|x| x.0);
        }
        out
    }
}

/// What only the checkpoint holder touches.
#[derive(Default)]
struct CkptState {
    /// Chunks reachable from each kept snapshot, computed once.
    kept_live: HashMap<ChunkId, HashSet<ChunkId>>,
}

/// Wakes the background checkpoint thread.
#[derive(Default)]
struct Wake {
    requested: bool,
    stop: bool,
}

/// An open disk. Its methods are those of [`VolumeCore`], which it dereferences to;
/// owning the `Volume` also owns the background checkpoint thread.
pub struct Volume {
    core: Arc<VolumeCore>,
    background: Option<std::thread::JoinHandle<()>>,
}

impl std::ops::Deref for Volume {
    type Target = VolumeCore;
    fn deref(&self) -> &VolumeCore {
        &self.core
    }
}

/// The shared part of an open disk (see [`Volume`]).
pub struct VolumeCore {
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
    ckpt: Mutex<CkptState>,
    wake: (Mutex<Wake>, Condvar),
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
            frozen: None,
            tree,
            root: root_ref,
            seq: root.seq,
            kept: root.kept,
            swap,
        };
        let vol = VolumeCore {
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
            ckpt: Mutex::new(CkptState::default()),
            wake: (Mutex::new(Wake::default()), Condvar::new()),
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
        let core = Arc::new(vol);
        let background = if core.writable {
            let c = core.clone();
            Some(
                std::thread::Builder::new()
                    .name("mindcastle-checkpoint".into())
                    .spawn(move || c.background_checkpoints())
                    .map_err(|e| Error::io("starting the checkpoint thread", e))?,
            )
        } else {
            None
        };
        Ok(Self { core, background })
    }

    /// Flushes, checkpoints and releases the disk.
    pub fn close(self) -> Result<()> {
        if self.writable {
            self.flush()?;
            self.checkpoint()?;
        }
        Ok(())
    }
}

impl Drop for Volume {
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

impl VolumeCore {
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
        self.with_log(|w| w.append(op))
    }

    fn log_data(&self, lba: u64, record: &[u8]) -> Result<()> {
        self.with_log(|w| w.append_data(lba, record))
    }

    fn with_log(&self, f: impl FnOnce(&mut Wal) -> Result<()>) -> Result<()> {
        let mut wal = self.wal.lock().map_err(|_| lock_err())?;
        match wal.as_mut() {
            Some(w) => f(w),
            // During open, replayed ops are already in the log.
            None => Ok(()),
        }
    }

    /// Writes everything written so far into chunks and a new root, updates the `.swap`
    /// file, drops the log it covers and deletes chunks nothing references. Returns the
    /// current root.
    pub fn checkpoint(&self) -> Result<Option<RootRef>> {
        self.check_writable()?;
        let mut ck = self.ckpt.lock().map_err(|_| lock_err())?;
        self.checkpoint_all(&mut ck, false)?;
        self.root_ref()
    }

    /// Checkpoints, then keeps the resulting root readable as a snapshot; returns it.
    pub fn snapshot(&self) -> Result<RootRef> {
        self.check_writable()?;
        let mut ck = self.ckpt.lock().map_err(|_| lock_err())?;
        let force = self.root_ref()?.is_none();
        self.checkpoint_all(&mut ck, force)?;
        let snap = self
            .root_ref()?
            .ok_or_else(|| Error::invalid("no root to snapshot"))?;
        let added = {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            let fresh = !st.kept.contains(&snap);
            if fresh {
                st.kept.push(snap);
            }
            fresh
        };
        if added {
            // The snapshot stays exactly as it is; a new root records that it is kept.
            self.commit(&mut ck, true)?;
        }
        Ok(snap)
    }

    /// Stops keeping a snapshot; its chunks go at the next checkpoint.
    pub fn forget_snapshot(&self, id: &ChunkId) -> Result<()> {
        self.check_writable()?;
        let mut ck = self.ckpt.lock().map_err(|_| lock_err())?;
        {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            let before = st.kept.len();
            st.kept.retain(|k| k.id != *id);
            if st.kept.len() == before {
                return Err(Error::not_found(format!("snapshot {id} is not kept")));
            }
        }
        ck.kept_live.remove(id);
        self.checkpoint_all(&mut ck, true)
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
        if let Some(w) = self.wal.lock().map_err(|_| lock_err())?.as_mut() {
            let started = std::time::Instant::now();
            w.rotate()?;
            tracing::debug!(
                us = started.elapsed().as_micros() as u64,
                "sealed the log segment"
            );
        }
        st.frozen = Some(Arc::new(std::mem::take(&mut st.mem)));
        Ok(true)
    }

    /// Turns the frozen memtable (if any) into chunks and merges it into the levels,
    /// writes a new root and names it in the `.swap` file; then drops the sealed log
    /// segment and collects garbage. Writes go on meanwhile: the state lock is held only
    /// to read the starting point and to publish the result. Caller holds `ckpt`.
    fn commit(&self, ck: &mut CkptState, force: bool) -> Result<()> {
        let (frozen, mut tree, swap, parent, seq, kept) = {
            let st = self.state.read().map_err(|_| lock_err())?;
            if st.frozen.is_none() && !force {
                return Ok(());
            }
            (
                st.frozen.clone(),
                st.tree.clone(),
                st.swap.clone(),
                st.root,
                st.seq,
                st.kept.clone(),
            )
        };
        let started = std::time::Instant::now();
        if let Some(mem) = frozen.as_ref().filter(|m| !m.is_empty()) {
            let mut chunker = Chunker::new(self.ctx.store.as_ref());
            let mut zeros = Vec::new();
            for (lba, e) in mem.range(0, u64::MAX) {
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
            seq: seq + 1,
            time: now(),
            parent,
            runs: tree.descs(),
            kept: kept.clone(),
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
        let mut swap = swap;
        swap.snapshot = Some(rref);
        write_atomic(&self.swap_path, &swap.render())?;
        {
            let mut st = self.state.write().map_err(|_| lock_err())?;
            st.swap = swap;
            st.tree = tree.clone();
            st.root = Some(rref);
            st.seq = root.seq;
            st.frozen = None;
        }
        // The new root is durable and named: the sealed segment's ops are all in it.
        if frozen.is_some() {
            if let Some(w) = self.wal.lock().map_err(|_| lock_err())?.as_mut() {
                w.drop_old()?;
            }
        }
        drop(stored);
        if let Err(e) = self.collect(ck, &tree, Some(rref), &kept) {
            tracing::warn!(error = %e, "garbage collection failed; will retry at the next checkpoint");
        }
        tracing::debug!(ms = started.elapsed().as_millis() as u64, root = %id, "checkpoint");
        Ok(())
    }

    fn collect_garbage(&self) -> Result<()> {
        let mut ck = self.ckpt.lock().map_err(|_| lock_err())?;
        let (tree, root, kept) = {
            let st = self.state.read().map_err(|_| lock_err())?;
            (st.tree.clone(), st.root, st.kept.clone())
        };
        self.collect(&mut ck, &tree, root, &kept)
    }

    /// Deletes local chunks that neither `tree` under `root` nor a kept snapshot reaches.
    /// Only the `ckpt` holder writes chunks, so none can be in flight.
    fn collect(
        &self,
        ck: &mut CkptState,
        tree: &Tree,
        root: Option<RootRef>,
        kept: &[RootRef],
    ) -> Result<()> {
        let mut live: HashSet<ChunkId> = root.map(|r| r.id).into_iter().collect();
        tree.live_chunks(&mut live);
        for k in kept {
            if let std::collections::hash_map::Entry::Vacant(slot) = ck.kept_live.entry(k.id) {
                let mut set = HashSet::new();
                set.insert(k.id);
                let root = load_root(&self.ctx, k)?;
                Tree::open(&self.ctx, &root.runs)?.live_chunks(&mut set);
                slot.insert(set);
            }
            if let Some(set) = ck.kept_live.get(&k.id) {
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

    /// After a write, with the state write lock held: freezes a full memtable and wakes
    /// the background thread. Returns true when the writer must wait for a checkpoint
    /// (the fresh memtable filled before the frozen one was committed).
    fn after_write(&self, st: &mut State) -> Result<bool> {
        let wal_len = self
            .wal
            .lock()
            .map_err(|_| lock_err())?
            .as_ref()
            .map_or(0, Wal::len);
        let full = st.mem.full(self.tuning.memtable_entries) || wal_len > MAX_WAL_BYTES;
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
        let over = st.mem.len() >= 2 * self.tuning.memtable_entries
            || st.mem.bytes() >= 2 * crate::lsm::memtable::MAX_BYTES
            || wal_len > 2 * MAX_WAL_BYTES;
        Ok(over)
    }

    /// Called by writers after releasing the state lock when `after_write` said so: a
    /// checkpoint in this thread (waiting for the background one first). A failure is
    /// returned only once memory would otherwise grow without bound.
    fn wait_for_checkpoint(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let mut ck = self.ckpt.lock().map_err(|_| lock_err())?;
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "writer waited for the background checkpoint"
        );
        if let Err(e) = self.checkpoint_all(&mut ck, false) {
            let (entries, bytes) = {
                let st = self.state.read().map_err(|_| lock_err())?;
                (st.mem.len(), st.mem.bytes())
            };
            if entries > 4 * self.tuning.memtable_entries
                || bytes > 4 * crate::lsm::memtable::MAX_BYTES
            {
                return Err(e);
            }
            tracing::warn!(error = %e, "checkpoint failed; retrying later");
        }
        Ok(())
    }

    fn request_checkpoint(&self) {
        if let Ok(mut w) = self.wake.0.lock() {
            w.requested = true;
        }
        self.wake.1.notify_one();
    }

    /// The background thread: commits frozen memtables until the volume is dropped.
    fn background_checkpoints(&self) {
        loop {
            {
                let Ok(mut w) = self.wake.0.lock() else {
                    return;
                };
                while !w.requested && !w.stop {
                    w = match self.wake.1.wait(w) {
                        Ok(w) => w,
                        Err(_) => return,
                    };
                }
                if w.stop {
                    return;
                }
                w.requested = false;
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
