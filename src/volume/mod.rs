//! A disk as users see it: the `.swap` file and its data folder, block semantics at any
//! byte alignment (in `io`), snapshots, import/export, fsck and `info`. The LSM engine
//! below ([`crate::lsm::engine`]) keeps the data; the store stack
//! ([`crate::store::stack`]) holds the chunks.

pub mod convert;
pub mod delta;
pub(crate) mod disk_files;
pub mod follow;
pub mod history;
mod io;
mod parallel;
pub mod prefetch;
mod readahead;
pub mod refs;
pub mod remote_gc;
pub mod remote_lock;
pub mod request;
pub mod signing;
pub mod stats;
pub mod steps;
pub mod sync;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use crate::lsm::engine::FsckReport;
use disk_files::{base_dir, write_atomic, DiskLock};
pub use disk_files::{create_swap, data_dir, read_swap};
pub use io::Extent;

use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::{DiskKey, Keys};
use crate::format::root::{Root, RootRef};
use crate::format::swapfile::SwapFile;
use crate::format::BLOCK_SIZE;
pub use crate::lsm::engine::Tuning;
use crate::lsm::engine::{load_root, Engine, Mode, RootSink, Start};
use crate::lsm::wal::SyncHook;
use crate::original::OriginalDisk;
use crate::store::stack::{self, StackSpec, WrapStore};

/// Block size as u64.
pub const BS: u64 = BLOCK_SIZE as u64;
/// Default disk size: 100 GiB.
pub const DEFAULT_SIZE: u64 = 100 << 30;

/// How to open a disk.
#[derive(Clone, Default)]
pub struct OpenOptions {
    /// Refuse writes; take a shared lock.
    pub read_only: bool,
    /// Open this kept snapshot (root id) instead of the current state; implies read-only.
    pub snapshot: Option<ChunkId>,
    /// Do not lock at all (for `info` beside a running writer).
    pub no_lock: bool,
    /// Sizes of the memtable and levels.
    pub tuning: Tuning,
    /// Wraps the local data folder's store (tests inject faults there).
    pub wrap_store: Option<WrapStore>,
    /// Called before each fdatasync of the log (tests hold a sync there).
    pub sync_hook: Option<SyncHook>,
    /// Most bytes of index chunks fetched whole before a disk behind a URL opens
    /// (None: `prefetch::INDEX_AT_OPEN`); a larger index is fetched in the background.
    pub index_at_open: Option<u64>,
    /// Open at the larger of `size=` and the size the root records, without refusing a
    /// `size=` edited smaller: `resize` opens so, to set the size itself.
    pub resizing: bool,
    /// Open this root (a version of a followed ref, say) instead of `snapshot=`,
    /// read-only and without the log: `serve --follow` opens each new version so.
    pub at_root: Option<RootRef>,
    /// Test hook: a writable open takes `size=` as versions before 2026-12-04 did,
    /// without [`size_edited`]'s checks (a smaller size only hides the blocks past it),
    /// so a test can make the disk such a version left.
    #[doc(hidden)]
    pub unchecked_size_edit: bool,
    /// Test hook: called once the root is read and before the log is (a test
    /// checkpoints the writer there, beside a reader without the lock).
    #[doc(hidden)]
    pub after_root_read: Option<SyncHook>,
}

/// A writable open of a disk whose `size=` differs from the size its root records (an
/// edit of the `.swap` file). Growing is kept, and blocks past the recorded end are
/// dropped so the new space reads as zeros (versions before 2026-12-04 let an edit
/// shrink a disk and only hid the blocks past its end). Shrinking is refused when
/// blocks past the new end hold data: `resize --shrink` drops them, an edit does not.
fn size_edited(engine: &Engine, path: &Path, recorded: u64, size: u64) -> Result<()> {
    let bs = BLOCK_SIZE as u64;
    if size < recorded {
        let past = engine.data_blocks_from(size / bs)?;
        if let Some(first) = past.first() {
            return Err(Error::invalid(format!(
                "{}: size={size} is smaller than the disk ({recorded} bytes), and {} blocks \
                 past it hold data (the first at offset {}); an edit of size= does not drop \
                 data. Put size={recorded} back, or drop them with: mindcastle resize \
                 --shrink {} {size}",
                path.display(),
                past.len(),
                first * bs,
                path.display()
            )));
        }
        return Ok(());
    }
    let end = size / bs;
    let hidden: Vec<u64> = engine
        .data_blocks_from(recorded / bs)?
        .into_iter()
        .filter(|b| *b < end)
        .collect();
    if !hidden.is_empty() {
        tracing::info!(
            blocks = hidden.len(),
            "the disk grew over blocks an earlier shrink only hid; they read as zeros now"
        );
        engine.update(|batch| {
            for r in history::ranges_of(hidden) {
                batch.zero(r.offset / bs, r.length / bs)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// An open disk.
pub struct Volume {
    swap_path: PathBuf,
    data_dir: PathBuf,
    uuid: String,
    data: Data,
    readahead: Option<readahead::ReadAhead>,
    /// No `fallback=`: every chunk is in the local data folder, so a read never waits
    /// on a network.
    local_only: bool,
    /// The ref the `.swap` follows and the version opened (`ref=`, `refseq=`).
    followed: Option<(String, u64)>,
    _lock: Option<DiskLock>,
}

/// What holds the blocks: this version's engine, or a disk in the original C
/// Mindcastle's format (read only, until `convert`).
enum Data {
    V1(Engine),
    Original(OriginalDisk),
}

/// The on-disk format of an open disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    /// This version's format (FORMAT.md, version 1).
    V1,
    /// The original C Mindcastle's format.
    Original,
}

/// The store stack of a disk (see [`stack::open`]).
fn open_stack(
    path: &Path,
    swap: &SwapFile,
    dir: &Path,
    writable: bool,
    opts: &OpenOptions,
) -> Result<std::sync::Arc<dyn crate::store::ChunkStore>> {
    stack::open(&StackSpec {
        data_dir: dir,
        writable,
        base_dir: &base_dir(path),
        fallbacks: &swap.fallbacks,
        cache: swap.cache.as_deref(),
        cache_bytes: swap.cache_size,
        wrap_local: opts.wrap_store.clone(),
        // A reader that trusts only signed versions takes only bytes the signed root
        // reaches by hash.
        whole_chunks: !swap.trust.is_empty(),
    })
}

/// What to tell a user who tried something on an original-format disk that only a
/// v1 disk can do.
fn original_refusal(path: &Path, what: &str) -> Error {
    Error::invalid(format!(
        "{} was written by the original C Mindcastle (its LSM tree format, not this \
         version's): it can be read as it is (`mindcastle export`, `mindcastle serve \
         --read-only`), but {what} needs a disk in this version's format. Convert it, \
         leaving it as it is: mindcastle convert {} NEW.swap",
        path.display(),
        path.display()
    ))
}

/// Names each new root in the `.swap` file (atomically: temp file, fsync, rename).
struct SwapPublisher {
    path: PathBuf,
    swap: Mutex<SwapFile>,
}

impl RootSink for SwapPublisher {
    fn publish(&self, root: &RootRef, disk_size: u64) -> Result<()> {
        let mut swap = self
            .swap
            .lock()
            .map_err(|_| Error::internal("swap file lock poisoned"))?;
        let mut next = self.edited_since(&swap).unwrap_or_else(|| swap.clone());
        next.snapshot = Some(*root);
        // The root and size= change together (a resize), so they always agree.
        next.size = disk_size;
        write_atomic(&self.path, &next.render())?;
        *swap = next;
        Ok(())
    }
}

impl SwapPublisher {
    /// The `.swap` file as someone edited it while the disk was open (None when it is
    /// as last written, or unreadable): its edits are kept, not overwritten by the next
    /// checkpoint, except for what defines the open disk (uuid, size, key, data
    /// folder), which stays as opened until it is opened again.
    fn edited_since(&self, ours: &SwapFile) -> Option<SwapFile> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut theirs = SwapFile::parse(&text, &self.path.display().to_string())
            .map_err(|e| {
                tracing::warn!(error = %e, "the .swap file was edited while the disk was open and no longer parses; writing the open disk's own");
            })
            .ok()?;
        if theirs == *ours {
            return None;
        }
        if (&theirs.uuid, theirs.size, theirs.key, &theirs.swapdata)
            != (&ours.uuid, ours.size, ours.key, &ours.swapdata)
        {
            tracing::warn!(
                swap = %self.path.display(),
                "the .swap file's uuid, size, key or swapdata= changed while the disk was open; \
                 those of the open disk are kept (its other edits are kept too)"
            );
            theirs.uuid.clone_from(&ours.uuid);
            theirs.size = ours.size;
            theirs.key = ours.key;
            theirs.swapdata.clone_from(&ours.swapdata);
        } else {
            tracing::info!(swap = %self.path.display(), "keeping edits made to the .swap file while the disk was open");
        }
        Some(theirs)
    }
}

impl Volume {
    /// Creates `NAME.swap` (mode 0600) and its data folder with an empty root, and
    /// opens it. From then on the `.swap` file always names a root.
    pub fn create(path: &Path, size: u64) -> Result<Self> {
        Self::create_with_key(path, size, DiskKey::random())
    }

    /// [`Volume::create`] with a given key (`convert --key-from-old`).
    pub fn create_with_key(path: &Path, size: u64, key: DiskKey) -> Result<Self> {
        if let Some(why) = crate::format::swapfile::bad_disk_size(size) {
            return Err(Error::invalid(why));
        }
        let swap = SwapFile::new(uuid::Uuid::new_v4().to_string(), size, key.0);
        create_swap(path, &swap)?;
        let vol = Self::open(path, &OpenOptions::default())?;
        vol.engine()?.checkpoint()?;
        Ok(vol)
    }

    /// Opens a disk.
    pub fn open(path: &Path, opts: &OpenOptions) -> Result<Self> {
        if !opts.no_lock || opts.snapshot.is_some() || opts.at_root.is_some() {
            return Self::open_once(path, opts);
        }
        // Beside a running writer: its root (the `.swap`) and its log are read one after
        // the other, and a checkpoint between them would give a state that never
        // existed. The root is read again after the log: unchanged, the pair is one
        // state (the log read itself starts over if the log rotated under it).
        for _ in 0..20 {
            let before = read_swap(path)?.snapshot.map(|r| r.id);
            let vol = match Self::open_once(path, opts) {
                Ok(v) => v,
                // The root read may have been collected by a checkpoint meanwhile.
                Err(e) if read_swap(path)?.snapshot.map(|r| r.id) != before => {
                    tracing::debug!(error = %e, "checkpointed while opened; opening again");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let now = read_swap(path)?.snapshot.map(|r| r.id);
            let opened = match &vol.data {
                Data::V1(engine) => engine.root()?.map(|r| r.id),
                Data::Original(_) => return Ok(vol),
            };
            if now == opened {
                return Ok(vol);
            }
            tracing::debug!(disk = %path.display(), "checkpointed while opened; opening again");
        }
        Err(Error::new(
            ErrorKind::Busy,
            format!(
                "{}: its writer checkpointed 20 times while it was opened; try again",
                path.display()
            ),
        ))
    }

    fn open_once(path: &Path, opts: &OpenOptions) -> Result<Self> {
        let swap = read_swap(path)?;
        let dir = data_dir(path, &swap);
        let writable = !opts.read_only && opts.snapshot.is_none() && opts.at_root.is_none();
        if writable && swap.read_only {
            return Err(Error::invalid(format!(
                "{} is read-only (readonly=true: a snapshot of another disk); read it with \
                 export or serve --read-only, or make a writable disk of it with: \
                 mindcastle clone {} NEW.swap",
                path.display(),
                path.display()
            )));
        }
        if !dir.is_dir() && (!writable || swap.snapshot.is_some()) && swap.fallbacks.is_empty() {
            return Err(Error::not_found(format!(
                "{}: data folder {} is missing and the disk has no fallback=",
                path.display(),
                dir.display()
            )));
        }
        if let Some(vol) = Self::open_original(path, &swap, &dir, opts)? {
            return Ok(vol);
        }
        let lock = match (opts.no_lock, dir.is_dir() || writable) {
            (false, true) => {
                std::fs::create_dir_all(&dir)
                    .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
                let lock = DiskLock::take(&dir, writable)?;
                if writable {
                    disk_files::claim_folder(&dir, &swap.uuid, path)?;
                }
                Some(lock)
            }
            _ => None,
        };
        let mut swap = swap;
        // A followed ref moves the disk to its newest version before the root is read
        // (never beside a writer without the lock, nor for a kept snapshot).
        let mut moved = false;
        if let Some(r) = opts.at_root {
            swap.snapshot = Some(r);
        } else if !opts.no_lock && opts.snapshot.is_none() {
            moved = follow::follow(path, &mut swap, &dir, lock.is_some(), false)?
                .is_some_and(|r| r.outcome == follow::Followed::Moved);
        }
        let store = open_stack(path, &swap, &dir, writable, opts)?;
        // The parser refuses a .swap without key=.
        let key = swap
            .key
            .ok_or_else(|| Error::internal("a parsed .swap file without its key"))?;
        let keys = Keys::new(&DiskKey(key))?;
        let current = match &swap.snapshot {
            Some(r) => Some((*r, load_root(store.as_ref(), &keys, r)?)),
            None => {
                // Never take a folder of chunks for an empty disk: garbage collection
                // would then treat every chunk as unreferenced.
                let held = store.list()?.len();
                if held > 0 {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        format!(
                            "{} names no root (no snapshot= and snaphash= lines), but its data \
                             folder {} holds {held} chunks: refusing to open it as an empty \
                             disk. Put back the .swap file's snapshot= and snaphash= lines",
                            path.display(),
                            dir.display()
                        ),
                    ));
                }
                None
            }
        };
        let start = match (opts.snapshot, current) {
            (None, Some((r, root))) => Start {
                root_ref: Some(r),
                root,
            },
            (None, None) => Start {
                root_ref: None,
                root: Root {
                    size: swap.size,
                    ..Root::default()
                },
            },
            (Some(id), current) => {
                let (cur, cur_root) = current
                    .ok_or_else(|| Error::not_found(format!("snapshot {id}: disk has no root")))?;
                let r = if cur.id == id {
                    cur
                } else {
                    *cur_root.kept.iter().find(|k| k.id == id).ok_or_else(|| {
                        Error::not_found(format!("snapshot {id} is not kept by this disk"))
                    })?
                };
                Start {
                    root_ref: Some(r),
                    root: load_root(store.as_ref(), &keys, &r)?,
                }
            }
        };
        if let Some(hook) = &opts.after_root_read {
            hook();
        }
        let recorded = start.root.size;
        if moved && recorded != swap.size {
            return Err(Error::corrupt(format!(
                "{}: version {} of ref '{}' names a disk of {} bytes, and its root one \
                 of {recorded}",
                path.display(),
                swap.ref_seq,
                swap.follow.as_deref().unwrap_or(""),
                swap.size
            )));
        }
        // A kept snapshot or a ref's version (`serve --follow`) is read at its own size.
        let size = if opts.snapshot.is_some() || opts.at_root.is_some() {
            recorded
        } else if opts.resizing {
            swap.size.max(recorded)
        } else {
            swap.size
        };
        let wal = dir.join("wal");
        let mode = if writable {
            Mode::Writable {
                wal,
                sink: Box::new(SwapPublisher {
                    path: path.to_path_buf(),
                    swap: Mutex::new(swap.clone()),
                }),
                sync_hook: opts.sync_hook.clone(),
            }
        } else {
            Mode::ReadOnly {
                wal: (opts.snapshot.is_none() && opts.at_root.is_none()).then_some(wal),
            }
        };
        let remote_cached = swap.cache.is_some() && !swap.fallbacks.is_empty();
        let behind_url = swap.fallbacks.iter().any(|f| {
            matches!(
                stack::classify(f, Path::new("")),
                stack::FallbackKind::Remote(_)
            )
        });
        let mut index_later = Vec::new();
        if remote_cached {
            // Before the engine reads its first node: one round trip for all of them,
            // unless the index is large (a large disk's index is megabytes a GiB of
            // data): then its chunks come in the background, and the first reads fetch
            // the nodes they need meanwhile.
            let missing = prefetch::missing_index(store.as_ref(), &start.root.runs);
            let bytes: u64 = missing.iter().map(|m| u64::from(m.1)).sum();
            let bound = opts.index_at_open.unwrap_or(prefetch::INDEX_AT_OPEN);
            if bytes <= bound || !behind_url {
                prefetch::warm_index(store.as_ref(), &missing);
            } else {
                tracing::debug!(bytes, bound, "index fetched in the background");
                index_later = missing;
            }
        }
        let engine = Engine::open(store.clone(), keys, size, start, opts.tuning, mode)?;
        if writable && size != recorded && !opts.unchecked_size_edit {
            size_edited(&engine, path, recorded, size)?;
        }
        let mut readahead = None;
        if remote_cached {
            // Only a remote fallback is slow enough to be worth reading ahead of.
            if behind_url {
                readahead = readahead::ReadAhead::start(store);
            }
        }
        if let Some(r) = &readahead {
            r.fetch(index_later.iter().map(|m| m.0));
        }
        Ok(Self {
            swap_path: path.to_path_buf(),
            data_dir: dir,
            local_only: swap.fallbacks.is_empty(),
            followed: swap.follow.clone().map(|r| (r, swap.ref_seq)),
            uuid: swap.uuid,
            data: Data::V1(engine),
            readahead,
            _lock: lock,
        })
    }

    /// Opens the disk read-only when its root is an original C Mindcastle tree (told by
    /// which cipher opens it, see [`crate::original`]); `None` for any other disk. The
    /// folder is left exactly as it is: no lock file, no log.
    fn open_original(
        path: &Path,
        swap: &SwapFile,
        dir: &Path,
        opts: &OpenOptions,
    ) -> Result<Option<Self>> {
        let (Some(root), Some(key)) = (swap.snapshot, swap.key) else {
            return Ok(None);
        };
        if !crate::original::may_be_original(root.size) {
            return Ok(None);
        }
        let store = open_stack(path, swap, dir, false, opts)?;
        let Some(disk) = OriginalDisk::probe(store, key, &root, swap.size)
            .map_err(|e| e.context(path.display().to_string()))?
        else {
            return Ok(None);
        };
        if !opts.read_only || opts.snapshot.is_some() {
            let what = if opts.snapshot.is_some() {
                "opening a snapshot"
            } else {
                "opening it for writing"
            };
            return Err(original_refusal(path, what));
        }
        tracing::info!(
            disk = %path.display(),
            levels = disk.level_count(),
            "original C Mindcastle format: read only"
        );
        Ok(Some(Self {
            swap_path: path.to_path_buf(),
            data_dir: dir.to_path_buf(),
            uuid: swap.uuid.clone(),
            data: Data::Original(disk),
            readahead: None,
            local_only: swap.fallbacks.is_empty(),
            followed: None,
            _lock: None,
        }))
    }

    /// The ref this disk follows and the version it opened at (`ref=`, `refseq=`).
    pub fn followed(&self) -> Option<(&str, u64)> {
        self.followed.as_ref().map(|(r, s)| (r.as_str(), *s))
    }

    /// Makes the disk `size` bytes and checkpoints ([`Engine::resize`]); returns how
    /// many blocks held data past the new end and were dropped.
    pub fn resize(&self, size: u64) -> Result<u64> {
        self.engine()?.resize(size)
    }

    /// Flushes, checkpoints and releases the disk.
    pub fn close(self) -> Result<()> {
        match self.data {
            Data::V1(engine) => engine.close(),
            Data::Original(_) => Ok(()),
        }
    }

    /// Disk size in bytes.
    pub fn size(&self) -> u64 {
        match &self.data {
            Data::V1(engine) => engine.size(),
            Data::Original(disk) => disk.size(),
        }
    }
    /// The disk's format.
    pub fn format(&self) -> DiskFormat {
        match &self.data {
            Data::V1(_) => DiskFormat::V1,
            Data::Original(_) => DiskFormat::Original,
        }
    }
    /// The original-format disk, when this is one.
    pub fn original(&self) -> Option<&OriginalDisk> {
        match &self.data {
            Data::V1(_) => None,
            Data::Original(disk) => Some(disk),
        }
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
        match &self.data {
            Data::V1(engine) => engine.writable(),
            Data::Original(_) => false,
        }
    }
    /// Whether every chunk is local (no `fallback=`): reads never wait on a network.
    pub fn local_only(&self) -> bool {
        self.local_only
    }
    /// Whether a write now may have to wait for a checkpoint (memory is full).
    pub fn write_may_wait(&self) -> bool {
        match &self.data {
            Data::V1(engine) => engine.write_may_wait(),
            Data::Original(_) => false,
        }
    }
    /// The engine (levels, roots, store); an error naming `convert` for a disk in the
    /// original C Mindcastle's format.
    pub fn engine(&self) -> Result<&Engine> {
        match &self.data {
            Data::V1(engine) => Ok(engine),
            Data::Original(_) => Err(original_refusal(&self.swap_path, "this command")),
        }
    }
    /// Fills whole blocks from `lba`.
    fn read_blocks(&self, lba: u64, out: &mut [u8]) -> Result<()> {
        match &self.data {
            Data::V1(engine) => engine
                .read_blocks(lba, out)
                .map_err(|e| self.explain_missing(e)),
            Data::Original(disk) => disk.read_blocks(lba, out).map(|_| ()),
        }
    }

    /// A chunk no source has, on a disk that follows a ref: most likely its version
    /// was collected at the remote (`gc --keep`) while this disk, kept on it by
    /// writes of its own, still read the rest from there. Say so.
    fn explain_missing(&self, e: Error) -> Error {
        match (&self.followed, e.kind()) {
            (Some((name, seq)), ErrorKind::NotFound) => e.context(format!(
                "version {seq} of ref '{name}', which this disk follows and reads from its \
                 remote, may have been collected there (gc --keep); a disk with writes of \
                 its own should `pull` before its version is collected"
            )),
            _ => e,
        }
    }
    /// Which of `count` blocks from `lba` hold stored data.
    fn allocated(&self, lba: u64, count: u64) -> Result<Vec<bool>> {
        match &self.data {
            Data::V1(engine) => engine.allocated(lba, count),
            Data::Original(disk) => disk.allocated(lba, count),
        }
    }
    /// The current root (None for a disk never checkpointed).
    pub fn root_ref(&self) -> Result<Option<RootRef>> {
        self.engine()?.root()
    }
    /// Snapshots kept readable by the current root.
    pub fn kept(&self) -> Result<Vec<RootRef>> {
        self.engine()?.kept()
    }
    /// Makes every completed write durable (fdatasync of the log, shared by
    /// concurrent callers).
    pub fn flush(&self) -> Result<()> {
        match &self.data {
            Data::V1(engine) => engine.flush(),
            Data::Original(_) => Ok(()),
        }
    }
    /// Writes everything so far into chunks and a new root; returns it.
    pub fn checkpoint(&self) -> Result<Option<RootRef>> {
        self.engine()?.checkpoint()
    }
    /// Checkpoints and merges every level into the bottom one, giving back the space of
    /// overwritten records (see [`crate::lsm::engine::Engine::compact`]).
    pub fn compact(&self) -> Result<Option<RootRef>> {
        self.engine()?.compact()
    }
    /// Flushes, checkpoints and keeps the result readable as a snapshot (unnamed; see
    /// [`Volume::snapshot_labeled`]); returns it.
    pub fn snapshot(&self) -> Result<RootRef> {
        self.snapshot_labeled("", "")
    }
    /// Stops keeping a snapshot; chunks only it reached are deleted.
    pub fn forget_snapshot(&self, id: &ChunkId) -> Result<()> {
        self.engine()?.forget_snapshot(id)
    }
}
