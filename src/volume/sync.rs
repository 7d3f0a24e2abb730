//! Publishing and fetching whole disks: `push` copies every chunk the current root and
//! the kept snapshots reach to another store (a folder or a URL), roots last, skipping
//! what is there already, so it resumes after an interruption and a reader of the
//! destination never meets a root whose chunks are missing; `pull` fetches every
//! reachable chunk (or those one snapshot needs) from the fallbacks into the local data
//! folder, for offline use.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::Volume;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::sha512_lanes::sha512_each;
use crate::store::local::LocalStore;
use crate::store::refs::{FolderRefs, RefStore};
use crate::store::remote::RemoteStore;
use crate::store::stack::{classify, FallbackKind};
use crate::store::verify::whole_answers;
use crate::store::ChunkStore;

/// Where `push` copies to, as the user named it: a folder, or a URL of an object store.
pub struct Destination {
    store: Arc<dyn ChunkStore>,
    refs: Arc<dyn RefStore>,
    /// The folder, for a folder destination.
    folder: Option<PathBuf>,
    spec: String,
}

impl Destination {
    /// Opens `spec` (a path, `file://`, `http(s)://`, `s3://`, `gs://` or `az://`
    /// URL), creating a folder destination that does not exist yet.
    pub fn open(spec: &str) -> Result<Self> {
        let (store, refs, folder): (Arc<dyn ChunkStore>, Arc<dyn RefStore>, _) =
            match classify(spec, Path::new(".")) {
                FallbackKind::Folder(dir) => (
                    Arc::new(LocalStore::open(&dir)?),
                    Arc::new(FolderRefs::new(&dir)),
                    Some(dir),
                ),
                FallbackKind::Remote(url) => {
                    let remote = Arc::new(RemoteStore::open(&url)?);
                    (remote.clone(), remote, None)
                }
            };
        Ok(Self {
            store,
            refs,
            folder,
            spec: spec.to_owned(),
        })
    }

    /// True when a ref can be moved here: a folder, or an object store with a
    /// create-only put (not object_store's plain HTTP/WebDAV store).
    pub fn moves_refs(&self) -> bool {
        self.folder.is_some()
            || !(self.spec.starts_with("http://") || self.spec.starts_with("https://"))
    }

    /// The destination's refs.
    pub fn refs(&self) -> &dyn RefStore {
        self.refs.as_ref()
    }

    /// The destination's refs, shared (a lock's renewer holds them).
    pub fn refs_arc(&self) -> Arc<dyn RefStore> {
        self.refs.clone()
    }

    /// The destination's chunks (for a collection there).
    pub(crate) fn chunk_store(&self) -> &dyn ChunkStore {
        self.store.as_ref()
    }

    /// Takes the shared push lock at the destination (see `remote_lock`): held while
    /// chunks are copied and a ref version is made, so no collection runs meanwhile.
    pub fn lock_for_push(&self) -> Result<super::remote_lock::RemoteLock> {
        super::remote_lock::RemoteLock::take(self.refs.clone(), super::remote_lock::LockKind::Push)
    }

    /// What a `.swap` file's `fallback=` line names to read this destination: a
    /// folder's absolute path (so the file works from any directory), or the URL.
    pub fn fallback_line(&self) -> Result<String> {
        match &self.folder {
            Some(dir) => Ok(std::fs::canonicalize(dir)
                .map_err(|e| Error::io(dir.display().to_string(), e))?
                .display()
                .to_string()),
            None => Ok(self.spec.clone()),
        }
    }
}

/// Groups of chunks copied at once.
const PARALLEL: usize = 8;
/// Chunks in one group: read together and checked together, in SHA-512 lanes
/// (`format::sha512_lanes`), where hashing one by one was three quarters of a push's
/// time. Up to `PARALLEL * GROUP` chunks are in memory at once (about 64 MiB at the
/// usual ~1 MiB a chunk).
const GROUP: usize = crate::format::sha512_lanes::LANES;

/// What a push or pull did.
#[derive(Debug, Default, Serialize)]
pub struct Transfer {
    /// Chunks the root and snapshots reach.
    pub chunks: usize,
    /// Chunks copied now.
    pub copied: usize,
    /// Bytes copied now.
    pub bytes: u64,
    /// Chunks the destination had already.
    pub present: usize,
    /// The current root (hex), as the destination now has it.
    pub root: Option<String>,
}

/// Copies `ids` from `from` to `to` where `present` says `to` lacks them, `PARALLEL`
/// groups of `GROUP` at a time (each chunk checked against its name on the way), then
/// syncs `to`. `present` answers for a group, in its order.
fn copy_missing(
    ids: &[ChunkId],
    from: &dyn ChunkStore,
    to: &dyn ChunkStore,
    present: &(dyn Fn(&[ChunkId]) -> Result<Vec<bool>> + Sync),
    progress: &(dyn Fn(u64) + Sync),
    t: &Mutex<Transfer>,
) -> Result<()> {
    let bytes = AtomicU64::new(0);
    let groups: Vec<&[ChunkId]> = ids.chunks(GROUP).collect();
    super::parallel::run(&groups, PARALLEL, |group| {
        let there = present(group)?;
        let missing: Vec<ChunkId> = group
            .iter()
            .zip(&there)
            .filter(|(_, p)| !**p)
            .map(|(id, _)| *id)
            .collect();
        let here = group.len() - missing.len();
        if here > 0 {
            if let Ok(mut t) = t.lock() {
                t.present += here;
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let got = from
            .get_many(&missing)
            .into_iter()
            .zip(&missing)
            .map(|(r, id)| r.map_err(|e| e.context(format!("chunk {id}"))))
            .collect::<Result<Vec<Vec<u8>>>>()?;
        // A chunk copied under a name its bytes do not have would spread the damage
        // to every reader of `to`: checked here unless `from` checked it (the
        // engine's stack does, `store::stack`).
        if !from.checks_names() {
            let msgs: Vec<&[u8]> = got.iter().map(Vec::as_slice).collect();
            let digests = sha512_each(&msgs);
            if let Some((id, _)) = missing
                .iter()
                .zip(&digests)
                .find(|(id, d)| ChunkId::from_digest(d) != **id)
            {
                return Err(Error::corrupt(format!(
                    "chunk {id}: bytes do not match its name"
                )));
            }
        }
        for (id, b) in missing.iter().zip(&got) {
            // Checked just now: the destination need not hash it again.
            to.put_hashed(*id, b)
                .map_err(|e| e.context(format!("chunk {id}")))?;
            let n = b.len() as u64;
            if let Ok(mut t) = t.lock() {
                t.copied += 1;
                t.bytes += n;
            }
            progress(bytes.fetch_add(n, Ordering::Relaxed) + n);
        }
        Ok(())
    })?;
    to.sync()
}

impl Volume {
    /// Checkpoints, then copies every reachable chunk that `dest` lacks, the roots
    /// last (each group synced before the next). `progress` gets bytes copied so far.
    /// With `verify_present`, a chunk already at `dest` counts only when its bytes
    /// hash to its name: a folder's file may be torn by a power cut during an earlier
    /// push (object stores put whole objects, so there a name is enough).
    pub fn push(&self, dest: &Destination, progress: &(dyn Fn(u64) + Sync)) -> Result<Transfer> {
        let verify_present = dest.folder.is_some();
        // s3, gs, az (not a WebDAV server, which cannot list).
        let can_list = !verify_present && dest.moves_refs();
        let dest = dest.store.as_ref();
        if self.writable() {
            self.flush()?;
            self.checkpoint()?;
        }
        let all = self.engine()?.reachable()?;
        let roots = self.kept()?.len() + usize::from(self.root_ref()?.is_some());
        let split = all.len().saturating_sub(roots);
        let (below, tops) = all.split_at(split);
        let t = Mutex::new(Transfer {
            chunks: all.len(),
            root: self.root_ref()?.map(|r| r.id.to_hex()),
            ..Transfer::default()
        });
        let from = self.engine()?.chunk_files();
        // An object store's listing (one request per 1,000 names) says what is there,
        // whole (objects are put whole): no request per chunk.
        // A service that cannot list (an emulator) gets a request per chunk as before.
        let listed: Option<HashSet<ChunkId>> = if can_list {
            match dest.list() {
                Ok(ids) => Some(ids.into_iter().collect()),
                Err(e) => {
                    tracing::warn!(dest = %dest.describe(), error = %e, "listing failed; asking for each chunk instead");
                    None
                }
            }
        } else {
            None
        };
        let present = |group: &[ChunkId]| -> Result<Vec<bool>> {
            if let Some(l) = &listed {
                return Ok(group.iter().map(|id| l.contains(id)).collect());
            }
            let mut there = group
                .iter()
                .map(|id| dest.contains(id))
                .collect::<Result<Vec<bool>>>()?;
            if !verify_present {
                return Ok(there);
            }
            let named: Vec<ChunkId> = group
                .iter()
                .zip(&there)
                .filter(|(_, p)| **p)
                .map(|(id, _)| *id)
                .collect();
            let got = dest.get_many(&named);
            let mut whole = named.iter().zip(whole_answers(&named, &got));
            for p in there.iter_mut().filter(|p| **p) {
                let Some((id, ok)) = whole.next() else {
                    *p = false;
                    continue;
                };
                if !ok {
                    tracing::warn!(chunk = %id, dest = %dest.describe(), "a chunk at the destination is torn or damaged; copying it again");
                }
                *p = ok;
            }
            Ok(there)
        };
        copy_missing(below, from, dest, &present, progress, &t)?;
        // Roots one at a time, the current root last.
        for r in tops {
            copy_missing(std::slice::from_ref(r), from, dest, &present, progress, &t)?;
        }
        t.into_inner()
            .map_err(|_| Error::internal("transfer lock poisoned"))
    }

    /// Fetches every reachable chunk the local data folder lacks (from the fallbacks),
    /// so the disk no longer needs them; with `snapshot`, only what reading that kept
    /// snapshot needs (`Engine::reachable_for`).
    pub fn pull(
        &self,
        snapshot: Option<&str>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Transfer> {
        if !self.writable() {
            return Err(Error::invalid("pull needs the disk open for writing"));
        }
        let all = match snapshot {
            Some(spec) => {
                let k = self.find_snapshot(spec)?;
                self.engine()?.reachable_for(&k)?
            }
            None => self.engine()?.reachable()?,
        };
        let store = self.engine()?.chunk_files();
        // The stack lists (and puts to) the local data folder only.
        let local: HashSet<ChunkId> = store.list()?.into_iter().collect();
        let t = Mutex::new(Transfer {
            chunks: all.len(),
            root: self.root_ref()?.map(|r| r.id.to_hex()),
            ..Transfer::default()
        });
        let present = |group: &[ChunkId]| Ok(group.iter().map(|id| local.contains(id)).collect());
        copy_missing(&all, store, store, &present, progress, &t)?;
        t.into_inner()
            .map_err(|_| Error::internal("transfer lock poisoned"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::verify::VerifyStore;

    fn chunks(n: usize) -> (Arc<MemoryStore>, Vec<ChunkId>) {
        let m = Arc::new(MemoryStore::default());
        let ids = (0..n)
            .map(|i| m.put(&vec![i as u8; 100 + 37 * i]).unwrap())
            .collect();
        (m, ids)
    }

    /// Every chunk the destination lacks is copied whole, in groups, and counted once;
    /// what `present` reports is left alone.
    #[test]
    fn the_missing_chunks_are_copied_and_the_present_ones_counted() {
        let (from, ids) = chunks(21);
        let to = MemoryStore::default();
        let t = Mutex::new(Transfer::default());
        let had: HashSet<ChunkId> = ids.iter().step_by(3).copied().collect();
        let present = |g: &[ChunkId]| -> Result<Vec<bool>> {
            Ok(g.iter().map(|id| had.contains(id)).collect())
        };
        let seen = AtomicU64::new(0);
        copy_missing(
            &ids,
            from.as_ref(),
            &to,
            &present,
            &|b| {
                seen.fetch_max(b, Ordering::Relaxed);
            },
            &t,
        )
        .unwrap();
        let t = t.into_inner().unwrap();
        assert_eq!((t.copied, t.present), (14, 7));
        for id in &ids {
            assert_eq!(to.contains(id).unwrap(), !had.contains(id));
            if !had.contains(id) {
                assert_eq!(to.get(id).unwrap(), from.get(id).unwrap());
            }
        }
        assert_eq!(seen.into_inner(), t.bytes);
    }

    /// A chunk whose bytes are not its name's is never copied under that name, whether
    /// the store copied from checks names (`VerifyStore`) or not (checked here then).
    #[test]
    fn a_damaged_chunk_stops_the_copy_whoever_checks_it() {
        for checked in [false, true] {
            let (mem, ids) = chunks(12);
            mem.overwrite(&ids[9], vec![0xee; 300]).unwrap();
            let from: Arc<dyn ChunkStore> = if checked {
                Arc::new(VerifyStore::new(mem.clone()))
            } else {
                mem.clone()
            };
            assert_eq!(from.checks_names(), checked);
            let to = MemoryStore::default();
            let t = Mutex::new(Transfer::default());
            let e = copy_missing(
                &ids,
                from.as_ref(),
                &to,
                &|g: &[ChunkId]| Ok(vec![false; g.len()]),
                &|_| {},
                &t,
            )
            .unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt, "{e}");
            assert!(e.to_string().contains(&ids[9].to_hex()), "{e}");
            assert!(!to.contains(&ids[9]).unwrap(), "a damaged chunk was copied");
        }
    }
}
