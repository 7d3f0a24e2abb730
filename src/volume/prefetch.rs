//! Warming the cache in the order a recorded `--trace` read the disk (the boot-fast
//! path of the original's `-t`): each traced range is read once, in order, so every
//! chunk it touches is fetched into `cache=` before anyone asks for it. It runs as a
//! command (`prefetch`) or on a thread beside `serve`/`attach` (`--prefetch FILE`).

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::Volume;
use crate::error::{Error, Result};

/// Largest single read of a prefetch (a longer traced range is read in pieces).
const STEP: u64 = 4 << 20;
/// Ranges read at once.
const PARALLEL: usize = 8;

/// What a prefetch did.
#[derive(Debug, Default, Serialize)]
pub struct Prefetched {
    /// Traced ranges read.
    pub ranges: usize,
    /// Bytes read through the disk.
    pub bytes: u64,
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

impl Volume {
    /// Reads every range of `ranges` (clipped to the disk), `PARALLEL` at a time and
    /// taken in trace order, so the chunks behind them land in the cache in about the
    /// order they will be wanted. `progress` gets the ranges done so far.
    pub fn prefetch(
        &self,
        ranges: &[(u64, u64)],
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Prefetched> {
        let next = AtomicUsize::new(0);
        let done_ranges = AtomicU64::new(0);
        let bytes = AtomicU64::new(0);
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        std::thread::scope(|s| {
            for _ in 0..PARALLEL.min(ranges.len()) {
                s.spawn(|| {
                    let mut buf = Vec::new();
                    loop {
                        let Some(&(off, len)) = ranges.get(next.fetch_add(1, Ordering::Relaxed))
                        else {
                            return;
                        };
                        let end = off.saturating_add(len).min(self.size());
                        let mut at = off;
                        while at < end {
                            let n = (end - at).min(STEP);
                            buf.resize(n as usize, 0);
                            if let Err(e) = self.read_at(at, &mut buf) {
                                if let Ok(mut f) = failed.lock() {
                                    f.get_or_insert(e);
                                }
                                return;
                            }
                            bytes.fetch_add(n, Ordering::Relaxed);
                            at += n;
                        }
                        progress(done_ranges.fetch_add(1, Ordering::Relaxed) + 1);
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
