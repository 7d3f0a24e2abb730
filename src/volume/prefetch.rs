//! Warming the cache in the order a recorded `--trace` read the disk (the boot-fast
//! path of the original's `-t`): the data chunks behind the traced ranges are fetched
//! into `cache=`, in trace order and many at once, before anyone asks for them. It runs as a
//! command (`prefetch`) or on a thread beside `serve`/`attach` (`--prefetch FILE`).

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::Volume;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;

/// Largest piece of a traced range looked up (or read) at once: bounds the memory of
/// one lookup and lets one long range be fetched by several workers.
const STEP: u64 = 4 << 20;
/// Chunks fetched at once. A trace is replayed while the client reads, so the whole
/// set should arrive within a few round trips; the remote client bounds connections.
const PARALLEL: usize = 32;

/// What a prefetch did.
#[derive(Debug, Default, Serialize)]
pub struct Prefetched {
    /// Traced ranges done.
    pub ranges: usize,
    /// Bytes of the disk those ranges cover (clipped to its size).
    pub bytes: u64,
    /// Distinct data chunks behind them, now in the cache or the data folder.
    pub chunks: u64,
}

/// Parses a trace file: `offset length unix_nanos` per line (the time is ignored).
pub fn read_trace(path: &Path) -> Result<Vec<(u64, u64)>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("trace file {}", path.display()), e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_whitespace();
        let parse = |v: Option<&str>| v.and_then(|v| v.parse::<u64>().ok());
        match (parse(f.next()), parse(f.next())) {
            (Some(off), Some(len)) => out.push((off, len)),
            _ => {
                return Err(Error::invalid(format!(
                    "{}:{}: expected 'offset length time', found '{line}'",
                    path.display(),
                    i + 1
                )))
            }
        }
    }
    Ok(out)
}

/// One piece of a traced range: (offset, length, whether it ends its range).
type Piece = (u64, u64, bool);

/// Cuts `ranges` (clipped to `size`) into pieces of at most `STEP`, in trace order.
fn pieces(ranges: &[(u64, u64)], size: u64) -> Vec<Piece> {
    let mut out = Vec::new();
    for &(off, len) in ranges {
        let end = off.saturating_add(len).min(size);
        let mut at = off.min(end);
        loop {
            let n = (end - at).min(STEP);
            out.push((at, n, at + n >= end));
            at += n;
            if at >= end {
                break;
            }
        }
    }
    out
}

impl Volume {
    /// Warms the cache for every range of `ranges`, taken in trace order by
    /// `PARALLEL` workers: each piece's data chunks are looked up in the index (local
    /// after opening) and fetched whole, each once, so the chunks land in about the
    /// order they will be wanted and many downloads overlap their round trips.
    /// `progress` gets the ranges done so far.
    pub fn prefetch(
        &self,
        ranges: &[(u64, u64)],
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Prefetched> {
        let work = pieces(ranges, self.size());
        let next = AtomicUsize::new(0);
        let done_ranges = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let chunks = AtomicU64::new(0);
        let claimed: Mutex<HashSet<ChunkId>> = Mutex::new(HashSet::new());
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let engine = self.engine().ok();
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(work.len()) {
                s.spawn(|| {
                    let mut buf = Vec::new();
                    while let Some(&(off, len, last)) =
                        work.get(next.fetch_add(1, Ordering::Relaxed))
                    {
                        let fetched = match engine {
                            Some(e) => fetch_chunks(e, off, len, &claimed, &chunks),
                            // An original-format disk: reading the range fetches it.
                            None => {
                                buf.resize(len as usize, 0);
                                self.read_at(off, &mut buf)
                            }
                        };
                        if let Err(e) = fetched {
                            if let Ok(mut f) = failed.lock() {
                                f.get_or_insert(e);
                            }
                            // Every worker stops at the first failure.
                            next.store(work.len(), Ordering::Relaxed);
                            return;
                        }
                        bytes.fetch_add(len, Ordering::Relaxed);
                        if last {
                            progress(done_ranges.fetch_add(1, Ordering::Relaxed) + 1);
                        }
                    }
                });
            }
        });
        if let Some(e) = failed
            .into_inner()
            .map_err(|_| Error::internal("prefetch lock poisoned"))?
        {
            return Err(e);
        }
        Ok(Prefetched {
            ranges: done_ranges.into_inner() as usize,
            bytes: bytes.into_inner(),
            chunks: chunks.into_inner(),
        })
    }

    /// Runs a prefetch on its own thread (beside `serve` or `attach`); failures are
    /// logged, never fatal: a cold read still works.
    pub fn prefetch_in_background(self: &std::sync::Arc<Self>, ranges: Vec<(u64, u64)>) {
        let vol = self.clone();
        let spawned = std::thread::Builder::new()
            .name("mindcastle-prefetch".into())
            .spawn(move || match vol.prefetch(&ranges, &|_| {}) {
                Ok(p) => tracing::info!(ranges = p.ranges, bytes = p.bytes, "prefetch done"),
                Err(e) => tracing::warn!(error = %e, "prefetch stopped"),
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "could not start the prefetch thread");
        }
    }

    /// Refuses a prefetch that nothing would keep: without `cache=`, fetched chunks
    /// are not stored anywhere.
    pub fn check_prefetch_target(&self) -> Result<()> {
        let swap = super::read_swap(self.swap_path())?;
        if swap.cache.is_none() {
            return Err(Error::invalid(format!(
                "{}: prefetch needs a cache= line (nothing would keep what it fetches; \
                 `mindcastle pull` copies every chunk instead)",
                self.swap_path().display()
            )));
        }
        Ok(())
    }
}

/// Fetches the data chunks behind `len` bytes at `off` that no other worker has
/// claimed, counting them in `count`.
fn fetch_chunks(
    engine: &crate::lsm::engine::Engine,
    off: u64,
    len: u64,
    claimed: &Mutex<HashSet<ChunkId>>,
    count: &AtomicU64,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let bs = crate::format::BLOCK_SIZE as u64;
    let (first, last) = (off / bs, (off + len).div_ceil(bs));
    let store = &engine.ctx().store;
    for id in engine.data_chunks(first, last - first)? {
        let fresh = claimed
            .lock()
            .map_err(|_| Error::internal("prefetch lock poisoned"))?
            .insert(id);
        if fresh {
            store.get(&id)?;
            count.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// A disk read from fallbacks through a cache: fetch the index chunks it lacks all at
/// once at open (one round trip, in parallel), so the first read costs one more request
/// instead of one per level. Failures are logged: reads fetch what they need anyway.
pub(super) fn warm_index(engine: &crate::lsm::engine::Engine) {
    let store = engine.ctx().store.clone();
    let local: std::collections::HashSet<crate::format::chunk_id::ChunkId> =
        store.list().unwrap_or_default().into_iter().collect();
    let missing: Vec<crate::format::chunk_id::ChunkId> = match engine.view() {
        Ok(v) => v
            .tree
            .runs()
            .flat_map(|r| r.desc.index_chunks.iter().map(|c| c.0))
            .filter(|id| !local.contains(id))
            .collect(),
        Err(_) => return,
    };
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..missing.len().min(16) {
            s.spawn(|| {
                while let Some(id) =
                    missing.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                {
                    if let Err(e) = store.get(id) {
                        tracing::debug!(chunk = %id, error = %e, "warming the index failed");
                    }
                }
            });
        }
    });
}
