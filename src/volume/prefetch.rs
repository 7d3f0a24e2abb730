//! Warming the cache in the order a recorded `--trace` read the disk (the boot-fast
//! path of the original's `-t`): the stored bytes behind the traced ranges are fetched
//! into `cache=` (byte ranges of chunks, or whole chunks where the trace needs most of
//! one), in trace order and many at once, before anyone asks for them. It runs as a
//! command (`prefetch`) or on a thread beside `serve`/`attach` (`--prefetch FILE`).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::Volume;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::lsm::engine::Engine;
use crate::store::ChunkStore;

/// Largest piece of a traced range looked up (or read) at once: bounds the memory of
/// one lookup and lets one long range be fetched by several workers.
const STEP: u64 = 4 << 20;
/// Downloads at once. A trace is replayed while the client reads, so the whole set
/// should arrive within a few round trips: a boot trace is mostly small scattered
/// reads, whose fetches are bound by round trips, not bandwidth.
const PARALLEL: usize = 128;
/// Bytes of downloads in flight at once (each is held in memory until kept), so that
/// `PARALLEL` whole chunks of up to 4 MiB never take 512 MiB.
const IN_FLIGHT_BYTES: u64 = 32 << 20;
/// What one more request costs, in bytes of transfer: at 20 ms a round trip and some
/// 400 MB/s shared by `PARALLEL` downloads, a request costs about what 64 KiB more
/// data does. Ranges of a chunk closer than this are fetched as one, and a chunk whose
/// ranges would cost more than the whole chunk is fetched whole.
const REQUEST_COST: u64 = 64 << 10;

/// What a prefetch did.
#[derive(Debug, Default, Serialize)]
pub struct Prefetched {
    /// Traced ranges done.
    pub ranges: usize,
    /// Bytes of the disk those ranges cover (clipped to its size).
    pub bytes: u64,
    /// Distinct data chunks behind them, now (in part or whole) in the cache or the
    /// data folder.
    pub chunks: u64,
    /// Fetches made: whole chunks and merged ranges of chunks.
    pub requests: u64,
    /// Stored bytes those fetches cover.
    pub stored_bytes: u64,
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
pub(crate) type Piece = (u64, u64, bool);

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
    /// Warms the cache for every range of `ranges`. The stored bytes behind each traced
    /// piece are looked up in the index (local after opening) and planned per chunk
    /// ([`plan`]): ranges close together are fetched as one, and a chunk whose ranges
    /// would cost more requests than the chunk costs bytes is fetched whole. `PARALLEL`
    /// workers then fetch, chunks in the order the trace first needs them, so they land
    /// about when they will be wanted and many downloads overlap their round trips.
    /// `progress` gets how many of the ranges are done.
    pub fn prefetch(
        &self,
        ranges: &[(u64, u64)],
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<Prefetched> {
        self.prefetch_until(ranges, progress, &AtomicBool::new(false))
    }

    /// [`Volume::prefetch`] that stops, with an error, once `stop` is set (each
    /// fetch under way finishes first).
    fn prefetch_until(
        &self,
        ranges: &[(u64, u64)],
        progress: &(dyn Fn(u64) + Sync),
        stop: &AtomicBool,
    ) -> Result<Prefetched> {
        let work = pieces(ranges, self.size());
        let bytes: u64 = work.iter().map(|p| p.1).sum();
        let Ok(engine) = self.engine() else {
            // An original-format disk: reading the ranges fetches them.
            return self.prefetch_by_reading(&work, ranges.len(), progress, stop);
        };
        let started = std::time::Instant::now();
        let (jobs, chunks) = plan(engine, &work)?;
        let stored_bytes = jobs.iter().map(Job::len).sum();
        tracing::debug!(
            jobs = jobs.len(),
            chunks,
            stored_bytes,
            ms = started.elapsed().as_millis() as u64,
            "prefetch planned"
        );
        let store = engine.chunk_files();
        let total = ranges.len() as u64;
        let job_count = jobs.len() as u64;
        let budget = Budget::new(IN_FLIGHT_BYTES);
        let done = AtomicU64::new(0);
        super::parallel::run(&jobs, PARALLEL, |job| {
            if stop.load(Ordering::Relaxed) {
                return Err(closing());
            }
            let _held = budget.take(job.len())?;
            match *job {
                Job::Whole(id, _) => store.warm_whole(&id),
                Job::Range(id, off, end) => store.warm_range(&id, off, (end - off) as usize),
            }?;
            progress((done.fetch_add(1, Ordering::Relaxed) + 1) * total / job_count.max(1));
            Ok(())
        })?;
        progress(total);
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "prefetch fetched"
        );
        Ok(Prefetched {
            ranges: ranges.len(),
            bytes,
            chunks,
            requests: job_count,
            stored_bytes,
        })
    }

    fn prefetch_by_reading(
        &self,
        work: &[Piece],
        ranges: usize,
        progress: &(dyn Fn(u64) + Sync),
        stop: &AtomicBool,
    ) -> Result<Prefetched> {
        let done_ranges = AtomicU64::new(0);
        let budget = Budget::new(IN_FLIGHT_BYTES);
        super::parallel::run(work, PARALLEL, |&(off, len, last)| {
            if stop.load(Ordering::Relaxed) {
                return Err(closing());
            }
            let _held = budget.take(len)?;
            let mut buf = vec![0u8; len as usize];
            self.read_at(off, &mut buf)?;
            if last {
                progress(done_ranges.fetch_add(1, Ordering::Relaxed) + 1);
            }
            Ok(())
        })?;
        Ok(Prefetched {
            ranges,
            bytes: work.iter().map(|p| p.1).sum(),
            requests: work.len() as u64,
            ..Prefetched::default()
        })
    }

    /// Runs a prefetch on its own thread (beside `serve` or `attach`); failures are
    /// logged, never fatal: a cold read still works. Keep what it returns while the
    /// disk is served: dropping it stops the prefetch and waits for its fetches under
    /// way (a thread left fetching when the process exits meets the crypto library's
    /// exit-time cleanup).
    pub fn prefetch_in_background(
        self: &std::sync::Arc<Self>,
        ranges: Vec<(u64, u64)>,
    ) -> Option<BackgroundPrefetch> {
        let vol = self.clone();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let spawned = std::thread::Builder::new()
            .name("mindcastle-prefetch".into())
            .spawn(
                move || match vol.prefetch_until(&ranges, &|_| {}, &stopped) {
                    Ok(p) => tracing::info!(ranges = p.ranges, bytes = p.bytes, "prefetch done"),
                    Err(_) if stopped.load(Ordering::Relaxed) => {
                        tracing::info!("prefetch stopped: the disk is closing")
                    }
                    Err(e) => tracing::warn!(error = %e, "prefetch stopped"),
                },
            );
        match spawned {
            Ok(handle) => Some(BackgroundPrefetch {
                stop,
                handle: Some(handle),
            }),
            Err(e) => {
                tracing::warn!(error = %e, "could not start the prefetch thread");
                None
            }
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

/// What one prefetch worker fetches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Job {
    /// A whole chunk (of this size).
    Whole(ChunkId, u64),
    /// Stored bytes `start..end` of a chunk.
    Range(ChunkId, u64, u64),
}

impl Job {
    fn len(&self) -> u64 {
        match *self {
            Job::Whole(_, size) => size,
            Job::Range(_, start, end) => end - start,
        }
    }
}

/// Plans the fetches behind `work`: per data chunk, in the order the trace first needs
/// it, its needed ranges merged where the gap between them costs less than a request
/// (`REQUEST_COST`), or the whole chunk when that costs no more than its ranges.
/// Returns the jobs and the number of distinct chunks.
pub(crate) fn plan(engine: &Engine, work: &[Piece]) -> Result<(Vec<Job>, u64)> {
    let bs = crate::format::BLOCK_SIZE as u64;
    let mut order: Vec<ChunkId> = Vec::new();
    let mut per: HashMap<ChunkId, (u64, Vec<(u64, u64)>)> = HashMap::new();
    for &(off, len, _) in work {
        if len == 0 {
            continue;
        }
        let (first, last) = (off / bs, (off + len).div_ceil(bs));
        for e in engine.data_extents(first, last - first)? {
            per.entry(e.chunk)
                .or_insert_with(|| {
                    order.push(e.chunk);
                    (e.chunk_size, Vec::new())
                })
                .1
                .push((e.offset, e.end));
        }
    }
    let mut jobs = Vec::new();
    for id in &order {
        if let Some((size, ranges)) = per.remove(id) {
            jobs.extend(chunk_jobs(*id, size, ranges));
        }
    }
    Ok((jobs, order.len() as u64))
}

/// The fetches for the `ranges` a trace needs of one chunk of `size` bytes.
fn chunk_jobs(id: ChunkId, size: u64, mut ranges: Vec<(u64, u64)>) -> Vec<Job> {
    ranges.sort_unstable();
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (a, b) in ranges {
        match spans.last_mut() {
            Some(last) if a <= last.1 + REQUEST_COST => last.1 = last.1.max(b),
            _ => spans.push((a, b)),
        }
    }
    let cost: u64 = spans.iter().map(|(a, b)| b - a + REQUEST_COST).sum();
    if cost >= size + REQUEST_COST {
        vec![Job::Whole(id, size)]
    } else {
        spans
            .into_iter()
            .map(|(a, b)| Job::Range(id, a, b))
            .collect()
    }
}

/// A bound on bytes in flight, shared by the workers.
struct Budget {
    total: u64,
    left: Mutex<u64>,
    freed: std::sync::Condvar,
}

/// Bytes taken from a [`Budget`], given back when dropped.
struct Held<'a> {
    budget: &'a Budget,
    bytes: u64,
}

impl Budget {
    fn new(total: u64) -> Self {
        Self {
            total,
            left: Mutex::new(total),
            freed: std::sync::Condvar::new(),
        }
    }

    /// Waits until `bytes` (at most the whole budget) are free, and takes them.
    fn take(&self, bytes: u64) -> Result<Held<'_>> {
        let bytes = bytes.min(self.total);
        let poisoned = || Error::internal("prefetch budget lock poisoned");
        let mut left = self.left.lock().map_err(|_| poisoned())?;
        while *left < bytes {
            left = self.freed.wait(left).map_err(|_| poisoned())?;
        }
        *left -= bytes;
        Ok(Held {
            budget: self,
            bytes,
        })
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Ok(mut left) = self.budget.left.lock() {
            *left += self.bytes;
        }
        self.budget.freed.notify_all();
    }
}

/// Most bytes of index chunks a disk behind a URL fetches whole before it opens (one
/// round trip for all, so the first reads need none for the index); past this (a disk
/// of a few GiB of data), the index comes in the background instead.
pub const INDEX_AT_OPEN: u64 = 16 << 20;

/// The index chunks of `runs` the local data folder lacks, with their sizes.
pub(super) fn missing_index(
    store: &dyn ChunkStore,
    runs: &[crate::format::root::RunDesc],
) -> Vec<(ChunkId, u32)> {
    let local: std::collections::HashSet<ChunkId> =
        store.list().unwrap_or_default().into_iter().collect();
    runs.iter()
        .flat_map(|r| r.index_chunks.iter().copied())
        .filter(|(id, _)| !local.contains(id))
        .collect()
}

/// Fetches `missing` index chunks whole, 16 at once, into the cache.
pub(super) fn warm_index(store: &dyn ChunkStore, missing: &[(ChunkId, u32)]) {
    let ids: Vec<ChunkId> = missing.iter().map(|m| m.0).collect();
    // Failures are only logged, so every chunk is tried.
    let _ = super::parallel::run(&ids, 16, |id| {
        if let Err(e) = store.warm_whole(id) {
            tracing::debug!(chunk = %id, error = %e, "warming the index failed");
        }
        Ok(())
    });
}

/// Why a prefetch stopped early.
fn closing() -> Error {
    Error::new(crate::error::ErrorKind::Unavailable, "the disk is closing")
}

/// A prefetch running beside `serve` or `attach`; dropping it stops it and waits
/// for its fetches under way.
pub struct BackgroundPrefetch {
    stop: std::sync::Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for BackgroundPrefetch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_budget_bounds_bytes_in_flight() {
        let b = Budget::new(100);
        let a = b.take(60).unwrap();
        let got = AtomicU64::new(0);
        std::thread::scope(|s| {
            // More than the whole budget is clamped to it, so waits for `a` only.
            s.spawn(|| {
                let _c = b.take(1000).unwrap();
                got.store(1, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(got.load(Ordering::SeqCst), 0, "taken past the budget");
            drop(a);
        });
        assert_eq!(got.load(Ordering::SeqCst), 1);
        assert_eq!(*b.left.lock().unwrap(), 100);
    }

    #[test]
    fn near_ranges_merge_and_dense_chunks_come_whole() {
        let id = ChunkId::of(b"c");
        let mib = 1u64 << 20;
        // Far apart in a 4 MiB chunk: two ranges, each as asked.
        assert_eq!(
            chunk_jobs(id, 4 * mib, vec![(3 * mib, 3 * mib + 4096), (0, 8192)]),
            vec![
                Job::Range(id, 0, 8192),
                Job::Range(id, 3 * mib, 3 * mib + 4096)
            ]
        );
        // Closer than a request costs: one range over both.
        assert_eq!(
            chunk_jobs(id, 4 * mib, vec![(0, 8192), (50_000, 58_192)]),
            vec![Job::Range(id, 0, 58_192)]
        );
        // Most of a small chunk: the whole chunk.
        assert_eq!(
            chunk_jobs(id, 300_000, vec![(0, 100_000), (150_000, 300_000)]),
            vec![Job::Whole(id, 300_000)]
        );
    }
}
