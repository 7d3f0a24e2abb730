//! `gc DEST`: collection at a remote that refs were pushed to. Deletes the chunks that no
//! kept version of any ref reaches, and (with `keep`) the versions past the newest
//! `keep` of each ref, under the remote's exclusive lock (`remote_lock`), so no push
//! runs meanwhile.
//!
//! Followers may still be reading a version that is no longer the newest, so nothing
//! goes before the grace period: a version stays while the one after it is younger
//! than `grace` (it was superseded too recently), and a chunk no kept version reaches
//! stays while it is younger than `grace` (a push that crashed before naming it, or
//! an upload still in flight where the lock could not see it). Versions go before
//! chunks, oldest first, so a collection killed anywhere leaves every version still
//! listed whole.
//!
//! What a version reaches is read from its root, which only the disk key opens: the
//! caller names `.swap` files whose keys to try, and a kept version that none of them
//! opens stops the collection before anything is deleted.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::remote_lock::{self, LockKind, RemoteLock};
use super::sync::Destination;
use super::{OpenOptions, Volume};
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::ref_version::{seq_of, RefVersion};
use crate::format::root::RootRef;
use crate::format::swapfile::SwapFile;
use crate::store::refs::Listed;

/// A temporary file this old under `refs/` or `locks/` was left by a killed writer.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// What `gc DEST` is told.
pub struct RemoteGc {
    /// Keep this many newest versions of each ref (None: all).
    pub keep: Option<u64>,
    /// Nothing younger than this goes.
    pub grace: Duration,
    /// Report only.
    pub dry_run: bool,
    /// `.swap` files whose keys open the versions' roots.
    pub keys: Vec<PathBuf>,
}

/// What it found and did.
#[derive(Debug, Default, Serialize)]
pub struct RemoteGcReport {
    /// Refs at the remote.
    pub refs: usize,
    /// Versions kept (all refs).
    pub versions_kept: usize,
    /// Versions past `keep` (deleted unless a dry run).
    pub versions_deleted: usize,
    /// Chunks some kept version reaches.
    pub live_chunks: usize,
    /// Chunks no kept version reaches and older than the grace period.
    pub garbage_chunks: usize,
    /// Their bytes.
    pub garbage_bytes: u64,
    /// Chunks no kept version reaches but younger than the grace period (kept).
    pub young_chunks: usize,
    /// Abandoned locks removed.
    pub stale_locks: usize,
    /// Temporary files of killed pushers removed (a folder remote).
    pub stale_temporaries: usize,
    /// False for a dry run.
    pub deleted: bool,
}

/// One version as listed.
struct Listed1 {
    seq: u64,
    name: String,
    modified_ms: u64,
}

/// The chunks (with their stored sizes) reachable from `root` (its kept snapshots too),
/// read through `dest` with the first key in `keys` that opens it.
fn reachable(
    dest: &Destination,
    root: &RootRef,
    disk_size: u64,
    keys: &[(PathBuf, [u8; 32])],
) -> Result<Vec<ChunkId>> {
    let fallback = dest.fallback_line()?;
    let mut last: Option<Error> = None;
    for (from, key) in keys {
        let mut swap = SwapFile::new(uuid::Uuid::new_v4().to_string(), disk_size, *key);
        swap.fallbacks = vec![fallback.clone()];
        let path = std::env::temp_dir().join(format!(
            "mindcastle-gc-{}-{}.swap",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        super::disk_files::write_atomic(&path, &swap.render())?;
        let opened = Volume::open(
            &path,
            &OpenOptions {
                read_only: true,
                no_lock: true,
                at_root: Some(*root),
                ..Default::default()
            },
        );
        let _ = std::fs::remove_file(&path);
        match opened {
            Ok(v) => return v.engine()?.reachable(),
            Err(e) if e.kind() == ErrorKind::Corrupt => {
                tracing::debug!(key_from = %from.display(), error = %e, "this key does not open the root");
                last = Some(e);
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::invalid(format!(
        "none of the keys given (--key-from) opens root {}{}: give the .swap of the disk \
         that pushed it; nothing was deleted",
        root.id,
        last.map(|e| format!(" ({e})")).unwrap_or_default()
    )))
}

/// Runs a collection at `dest`.
pub fn collect(dest: &Destination, o: &RemoteGc) -> Result<RemoteGcReport> {
    if o.keep == Some(0) {
        return Err(Error::invalid(
            "--keep 0 would delete every version; keep at least 1",
        ));
    }
    if o.keys.is_empty() {
        return Err(Error::invalid(
            "gc of a remote reads each version's root, which only its disk's key opens: \
             name the .swap files of the disks that push there with --key-from",
        ));
    }
    let keys: Vec<(PathBuf, [u8; 32])> = o
        .keys
        .iter()
        .map(|p| {
            let s = super::read_swap(p)?;
            let k = s
                .key
                .ok_or_else(|| Error::invalid(format!("{}: no key", p.display())))?;
            Ok((p.clone(), k))
        })
        .collect::<Result<_>>()?;
    let refs = dest.refs_arc();
    let _lock = RemoteLock::take(refs.clone(), LockKind::Gc)?;
    let start = remote_lock::now_ms();
    let grace_ms = u64::try_from(o.grace.as_millis()).unwrap_or(u64::MAX);
    let listing: Vec<Listed> = refs.list_meta("")?;
    let mut report = RemoteGcReport::default();

    let mut chunks: Vec<(ChunkId, u64, u64)> = Vec::new();
    let mut versions: BTreeMap<String, Vec<Listed1>> = BTreeMap::new();
    let mut stale_locks = Vec::new();
    for l in &listing {
        if let Some(id) = ChunkId::from_file_name(&l.name) {
            chunks.push((id, l.size, l.modified_ms));
        } else if let Some(rest) = l.name.strip_prefix("refs/") {
            if let Some((ref_name, last)) = rest.rsplit_once('/') {
                if let Some(seq) = seq_of(last) {
                    versions
                        .entry(ref_name.to_string())
                        .or_default()
                        .push(Listed1 {
                            seq,
                            name: l.name.clone(),
                            modified_ms: l.modified_ms,
                        });
                }
            }
        }
    }
    for (name, info) in remote_lock::list(refs.as_ref(), None)? {
        if !remote_lock::fresh(&info, start) {
            stale_locks.push(name);
        }
    }
    if versions.is_empty() {
        return Err(Error::invalid(format!(
            "{}: no refs here, so nothing tells what is in use (a .swap pinned by push \
             --swap-out without --ref reads chunks no ref names); nothing was deleted",
            dest.fallback_line()?
        )));
    }
    report.refs = versions.len();

    // Versions to keep: the newest `keep`, and any whose successor is younger than the
    // grace period (both are suffixes in seq order, so what goes is the oldest).
    let mut drop_versions: Vec<String> = Vec::new();
    let mut kept: Vec<(String, u64)> = Vec::new();
    for (ref_name, vs) in &mut versions {
        vs.sort_by_key(|v| v.seq);
        let n = vs.len();
        for (i, v) in vs.iter().enumerate() {
            let newest_enough = o.keep.is_none_or(|k| (n - i) as u64 <= k);
            let superseded_recently = vs
                .get(i + 1)
                .is_some_and(|next| start.saturating_sub(next.modified_ms) < grace_ms);
            if newest_enough || superseded_recently {
                kept.push((ref_name.clone(), v.seq));
            } else {
                drop_versions.push(v.name.clone());
            }
        }
    }
    report.versions_kept = kept.len();
    report.versions_deleted = drop_versions.len();

    let mut live: HashSet<ChunkId> = HashSet::new();
    let mut seen_roots: HashSet<ChunkId> = HashSet::new();
    for (ref_name, seq) in &kept {
        let Some(found) = super::refs::get_version(refs.as_ref(), ref_name, *seq)? else {
            continue; // removed meanwhile (an older collection's leftovers)
        };
        let v: RefVersion = found.version;
        if !seen_roots.insert(v.root.id) {
            continue;
        }
        let r = reachable(dest, &v.root, v.disk_size, &keys)
            .map_err(|e| e.context(format!("version {seq} of ref '{ref_name}'")))?;
        live.extend(r);
    }
    report.live_chunks = chunks.iter().filter(|(id, _, _)| live.contains(id)).count();
    let garbage: Vec<(ChunkId, u64)> = chunks
        .iter()
        .filter(|(id, _, _)| !live.contains(id))
        .filter(|(_, _, m)| {
            let old = start.saturating_sub(*m) >= grace_ms;
            if !old {
                report.young_chunks += 1;
            }
            old
        })
        .map(|(id, size, _)| (*id, *size))
        .collect();
    report.garbage_chunks = garbage.len();
    report.garbage_bytes = garbage.iter().map(|g| g.1).sum();
    report.stale_locks = stale_locks.len();
    if o.dry_run {
        return Ok(report);
    }
    // Versions first (oldest first), then chunks: a collection killed anywhere leaves
    // every listed version whole.
    for name in &drop_versions {
        refs.delete(name)?;
    }
    let store = dest.chunk_store();
    let ids: Vec<ChunkId> = garbage.iter().map(|g| g.0).collect();
    super::parallel::run(&ids, 8, |id| store.delete(id))?;
    for l in &stale_locks {
        refs.delete(l)?;
    }
    // A pusher killed between writing a version's temporary file and linking it.
    report.stale_temporaries = refs.remove_stale_temporaries(STALE_TEMPORARY)?;
    report.deleted = true;
    Ok(report)
}
