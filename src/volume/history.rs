//! A disk's history: snapshots by id or name, `log`, `diff`, `reset`, `gc` and `clone`.
//!
//! A snapshot is a root the current root keeps readable (its `kept` list); taking one
//! costs two small roots. Snapshots are named by their root chunk id (64 hex digits, or
//! any unique prefix of at least 6) or by the name given when taken (the newest with
//! that name).

use std::collections::HashSet;
use std::path::Path;

use super::{Volume, BS};
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::root::{Root, RootRef};
use crate::format::swapfile::SwapFile;
use crate::lsm::engine::Label;
use crate::lsm::tree::Tree;
use crate::store::ChunkStore;

/// Shortest id prefix accepted.
const MIN_PREFIX: usize = 6;

/// One snapshot, for `log`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LogEntry {
    /// Root chunk id.
    pub id: String,
    /// Unix seconds when taken.
    pub time: u64,
    /// Name given when taken (may be empty).
    pub name: String,
    /// Message given when taken (may be empty).
    pub message: String,
    /// Bytes of data chunks this snapshot reaches that the one before it does not.
    pub added_bytes: u64,
}

/// A run of changed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Range {
    /// Byte offset.
    pub offset: u64,
    /// Byte length.
    pub length: u64,
}

/// What `gc` found (and deleted, unless a dry run).
#[derive(Clone, Debug, serde::Serialize)]
pub struct GcReport {
    /// Chunks the current root and kept snapshots reach.
    pub live_chunks: usize,
    /// Chunks in the data folder nothing reaches.
    pub garbage_chunks: usize,
    /// Their bytes.
    pub garbage_bytes: u64,
    /// True when they were deleted.
    pub deleted: bool,
}

/// Turns sorted block numbers into byte ranges.
pub fn ranges_of(blocks: impl IntoIterator<Item = u64>) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for lba in blocks {
        match out.last_mut() {
            Some(r) if r.offset + r.length == lba * BS => r.length += BS,
            _ => out.push(Range {
                offset: lba * BS,
                length: BS,
            }),
        }
    }
    out
}

impl Volume {
    /// The kept snapshot `spec` names: a root id, a unique id prefix, or a name.
    pub fn find_snapshot(&self, spec: &str) -> Result<RootRef> {
        let kept = self.kept()?;
        let spec = spec.trim();
        if let Ok(id) = ChunkId::from_hex(spec) {
            return kept.into_iter().find(|k| k.id == id).ok_or_else(|| {
                Error::not_found(format!("snapshot {id} is not kept by this disk"))
            });
        }
        let engine = self.engine()?;
        // Newest first, so a name given twice means the latest.
        let mut by_name = None;
        for k in kept.iter().rev() {
            if engine.load_root(k)?.name == spec {
                by_name = Some(*k);
                break;
            }
        }
        if let Some(k) = by_name {
            return Ok(k);
        }
        let lower = spec.to_ascii_lowercase();
        let hits: Vec<&RootRef> = kept
            .iter()
            .filter(|k| lower.len() >= MIN_PREFIX && k.id.to_hex().starts_with(&lower))
            .collect();
        match hits.as_slice() {
            [one] => Ok(**one),
            [] => Err(Error::not_found(format!(
                "no kept snapshot is named '{spec}' or has an id starting with it \
                 (ids need at least {MIN_PREFIX} hex digits; `mindcastle log` lists them)"
            ))),
            _ => Err(Error::invalid(format!(
                "'{spec}' starts {} snapshot ids; give more digits",
                hits.len()
            ))),
        }
    }

    /// Takes a snapshot named `name` with `message`; a name already in use is refused.
    pub fn snapshot_labeled(&self, name: &str, message: &str) -> Result<RootRef> {
        if !name.is_empty() {
            if ChunkId::from_hex(name).is_ok() || name.chars().any(char::is_whitespace) {
                return Err(Error::invalid(format!(
                    "snapshot name '{name}': a name may not be 64 hex digits or hold spaces"
                )));
            }
            if self.find_snapshot(name).is_ok() {
                return Err(Error::invalid(format!(
                    "a snapshot named '{name}' already exists (`mindcastle forget` it first)"
                )));
            }
        }
        self.flush()?;
        let root = self.engine()?.snapshot_labeled(&Label {
            name: name.to_string(),
            message: message.to_string(),
        })?;
        if let Err(e) = self.write_snapshot_swap(&root) {
            tracing::warn!(error = %e, snapshot = %root.id, "writing the snapshot's .swap file");
        }
        Ok(root)
    }

    /// `snapshots/ID.swap` beside this disk's `.swap`.
    pub fn snapshot_swap_path(&self, id: &ChunkId) -> std::path::PathBuf {
        super::disk_files::base_dir(self.swap_path())
            .join("snapshots")
            .join(format!("{}.swap", id.to_hex()))
    }

    /// Writes `snapshots/ID.swap`: the snapshot as a disk of its own that reads its
    /// chunks from this disk's data folder (and fallbacks) and opens read-only only
    /// (`readonly=true`; `clone` makes a writable disk of it), as the original did.
    fn write_snapshot_swap(&self, root: &RootRef) -> Result<()> {
        let src = super::read_swap(self.swap_path())?;
        let key = src
            .key
            .ok_or_else(|| Error::internal("a parsed .swap file without its key"))?;
        let mut swap = SwapFile::new(uuid::Uuid::new_v4().to_string(), self.size(), key);
        swap.snapshot = Some(*root);
        swap.read_only = true;
        let data = std::fs::canonicalize(self.data_dir())
            .map_err(|e| Error::io(format!("resolving {}", self.data_dir().display()), e))?;
        swap.fallbacks = std::iter::once(data.display().to_string())
            .chain(self.absolute_fallbacks(&src))
            .take(crate::format::swapfile::MAX_FALLBACKS)
            .collect();
        let path = self.snapshot_swap_path(&root.id);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        super::disk_files::write_atomic(&path, &swap.render())
    }

    /// This disk's `fallback=` values with relative folders made absolute.
    fn absolute_fallbacks(&self, src: &SwapFile) -> Vec<String> {
        let base = super::disk_files::base_dir(self.swap_path());
        src.fallbacks
            .iter()
            .map(|v| match crate::store::stack::classify(v, &base) {
                crate::store::stack::FallbackKind::Folder(p) => {
                    std::fs::canonicalize(&p).unwrap_or(p).display().to_string()
                }
                crate::store::stack::FallbackKind::Remote(u) => u,
            })
            .collect()
    }

    /// The root of kept snapshot `r` (its name, message, time, size), authenticated.
    pub fn snapshot_root(&self, r: &RootRef) -> Result<Root> {
        self.engine()?.load_root(r)
    }

    /// Kept snapshots, newest first.
    pub fn log(&self) -> Result<Vec<LogEntry>> {
        let engine = self.engine()?;
        let mut rows = Vec::new();
        let mut prev: HashSet<ChunkId> = HashSet::new();
        for k in self.kept()? {
            let root = engine.load_root(&k)?;
            let mut data = HashSet::new();
            for run in engine.open_tree(&root)?.runs() {
                data.extend(run.table.iter().map(|t| (t.id, t.size)));
            }
            let added_bytes = data
                .iter()
                .filter(|(id, _)| !prev.contains(id))
                .map(|(_, size)| u64::from(*size))
                .sum();
            prev = data.iter().map(|(id, _)| *id).collect();
            rows.push(LogEntry {
                id: k.id.to_hex(),
                time: root.time,
                name: root.name,
                message: root.message,
                added_bytes,
            });
        }
        rows.reverse();
        Ok(rows)
    }

    fn tree_of(&self, r: &RootRef) -> Result<Tree> {
        let engine = self.engine()?;
        engine.open_tree(&engine.load_root(r)?)
    }

    /// The blocks that differ between snapshot `a` and snapshot `b` (or the head,
    /// blocks not yet checkpointed included), from the index alone.
    pub fn diff_blocks(&self, a: &RootRef, b: Option<&RootRef>) -> Result<Vec<u64>> {
        let ta = self.tree_of(a)?;
        let (tb, pending) = match b {
            Some(b) => (self.tree_of(b)?, Vec::new()),
            None => {
                let engine = self.engine()?;
                // Pending first: a checkpoint in between only moves entries into levels.
                let pending = engine.pending_locs()?;
                (engine.view()?.tree, pending)
            }
        };
        let mut out = Vec::new();
        self.engine()?
            .changed_blocks(&ta, &tb, pending, &mut |lba| out.push(lba))?;
        Ok(out)
    }

    /// Makes kept snapshot `target` the current state; the state left is kept first
    /// as a snapshot (returned).
    pub fn reset_to(&self, target: &RootRef) -> Result<RootRef> {
        self.flush()?;
        self.engine()?.reset(
            &target.id,
            &Label {
                name: String::new(),
                message: format!("state before reset to {}", target.id.to_hex()),
            },
        )
    }

    /// Stops keeping snapshots; chunks only they reached are deleted.
    pub fn forget(&self, ids: &[RootRef]) -> Result<()> {
        for r in ids {
            self.forget_snapshot(&r.id)?;
            let p = self.snapshot_swap_path(&r.id);
            if p.exists() {
                std::fs::remove_file(&p)
                    .map_err(|e| Error::io(format!("removing {}", p.display()), e))?;
            }
        }
        Ok(())
    }

    /// Deletes (unless `dry_run`) every chunk in the data folder that neither the
    /// current root nor a kept snapshot reaches: what a crash left half written, or
    /// what an older version left behind. Checkpoints first.
    pub fn gc(&self, dry_run: bool) -> Result<GcReport> {
        let engine = self.engine()?;
        if !dry_run {
            engine.checkpoint()?;
        }
        let sweep = engine.sweep(dry_run)?;
        Ok(GcReport {
            live_chunks: sweep.live,
            garbage_chunks: sweep.garbage.len(),
            garbage_bytes: sweep.garbage_bytes,
            deleted: !dry_run,
        })
    }

    /// Makes `new` a disk of its own (new uuid, same key) starting from `state` (a kept
    /// snapshot or the current root): the chunks it reaches are hard-linked from this
    /// disk's data folder (copied across file systems); chunks this disk only reads
    /// through `fallback=` stay there (the clone gets the same lines).
    pub fn clone_to(&self, state: &RootRef, new: &Path) -> Result<String> {
        if new.exists() {
            return Err(Error::invalid(format!(
                "{} already exists; not overwriting it",
                new.display()
            )));
        }
        let engine = self.engine()?;
        let root = engine.load_root(state)?;
        let src = super::read_swap(self.swap_path())?;
        let uuid = uuid::Uuid::new_v4().to_string();
        let mut swap = SwapFile::new(
            uuid.clone(),
            root.size,
            src.key
                .ok_or_else(|| Error::internal("a parsed .swap file without its key"))?,
        );
        // Fallbacks keep pointing where they did (relative folders made absolute).
        swap.fallbacks = self.absolute_fallbacks(&src);
        swap.cache = src.cache.as_deref().map(|c| {
            let p = super::disk_files::base_dir(self.swap_path()).join(c);
            std::fs::canonicalize(&p).unwrap_or(p).display().to_string()
        });
        swap.cache_size = src.cache_size;
        let dir = super::disk_files::base_dir(new).join(format!("swapdata-{uuid}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        // Every chunk found in a folder (the data folder, then folder fallbacks) is
        // linked or copied, so removing the source never breaks the clone; chunks only
        // behind a URL stay there.
        let folders: Vec<std::path::PathBuf> = std::iter::once(self.data_dir().to_path_buf())
            .chain(
                swap.fallbacks
                    .iter()
                    .filter(|f| !f.contains("://"))
                    .map(Into::into),
            )
            .collect();
        let behind_url = swap.fallbacks.iter().any(|f| f.contains("://"));
        let mut chunks = HashSet::new();
        engine.open_tree(&root)?.live_chunks(&mut chunks);
        let chunks: Vec<ChunkId> = chunks.into_iter().collect();
        let link = |id: &ChunkId| -> Result<()> {
            let to = dir.join(id.file_name());
            for f in &folders {
                let from = f.join(id.file_name());
                match std::fs::hard_link(&from, &to) {
                    Ok(()) => return Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(_) => {
                        // Another file system: copy.
                        return std::fs::copy(&from, &to).map(|_| ()).map_err(|e| {
                            Error::io(format!("copying {} to {}", from.display(), to.display()), e)
                        });
                    }
                }
            }
            if behind_url {
                Ok(()) // only behind a URL fallback
            } else {
                Err(Error::not_found(format!(
                    "chunk {id} of the state being cloned is in no folder of the source (was \
                     the snapshot forgotten meanwhile?); the clone is not made"
                )))
            }
        };
        // Links are metadata operations: a few threads hide their latency.
        let per = chunks.len().div_ceil(4).max(1);
        crate::threads::in_groups(&chunks, per, "link", |_, part| {
            part.iter().try_for_each(&link)
        })?;
        // The links are durable before anything names them.
        crate::store::local::sync_dir(&dir)?;
        // The clone's first root: the same levels, no snapshots, this state as parent.
        // Its seq goes on from the source's (a new data folder: no log yet, so it
        // holds no log segment).
        let fresh = Root {
            size: root.size,
            seq: root.seq + 1,
            log_covered: 0,
            time: root.time,
            parent: Some(*state),
            runs: root.runs.clone(),
            kept: Vec::new(),
            name: String::new(),
            message: format!("cloned from {} of {}", state.id.to_hex(), src.uuid),
        };
        let (stored, tag) = engine.seal_root(&fresh)?;
        let local = crate::store::local::LocalStore::open(&dir)?;
        let id = local.put(&stored)?;
        local.sync()?;
        swap.snapshot = Some(RootRef {
            id,
            size: stored.len() as u32,
            tag,
        });
        super::create_swap(new, &swap)?;
        Ok(uuid)
    }
}
