//! Adaptive read-ahead for a disk read from remote fallbacks through a cache: when
//! reads run forward (an NBD client copying the disk, a VM booting from it), the data
//! chunks of the next stretch are fetched into the cache in parallel before they are
//! asked for, the stretch doubling (from 4 MiB, or twice the read, up to 64 MiB) while
//! the reads keep going forward and collapsing at the first jump. Clients with many reads in flight arrive
//! slightly out of order, so "forward" means near the furthest end seen so far.
//! Fetches go through the cache, which shares one download among everyone asking for
//! the same chunk, so a reader that catches up waits for the download in flight.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::format::chunk_id::ChunkId;
use crate::lsm::engine::Engine;
use crate::store::ChunkStore;

/// Smallest and largest read-ahead window.
const MIN_WINDOW: u64 = 4 << 20;
const MAX_WINDOW: u64 = 64 << 20;
/// Reads this far behind the furthest end seen still count as going forward.
const SLACK: u64 = 16 << 20;
/// Forward reads in a row before read-ahead starts.
const STREAK: u32 = 2;
/// Downloads in flight at once.
const WORKERS: usize = 16;
/// Chunk ids remembered as already requested.
const REMEMBER: usize = 16_384;

#[derive(Default)]
struct Pattern {
    /// Furthest end of a read seen.
    frontier: u64,
    /// Forward reads in a row.
    streak: u32,
    /// Current window.
    window: u64,
    /// Everything before this has been requested.
    ahead: u64,
    /// Chunks requested (cleared when it grows large).
    requested: HashSet<ChunkId>,
}

/// The read-ahead of one open disk. Dropping it stops its workers and waits for
/// each to finish the fetch it is in: a worker still running when the process exits
/// met the crypto library's exit-time cleanup mid-hash (SIGSEGV in libcrypto, seen
/// from `export` of a disk read through a cache).
pub struct ReadAhead {
    pattern: Mutex<Pattern>,
    /// `None` once dropped: the workers' queue closes with it.
    tx: Option<SyncSender<ChunkId>>,
    /// Set when the disk closes: queued chunks are no longer fetched.
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.tx = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl ReadAhead {
    /// Starts the download workers for `store` (the disk's store stack).
    pub fn start(store: Arc<dyn ChunkStore>) -> Option<Self> {
        let (tx, rx) = sync_channel::<ChunkId>(1024);
        let rx = Arc::new(Mutex::new(rx));
        let mut ra = Self {
            pattern: Mutex::new(Pattern::default()),
            tx: Some(tx),
            stop: Arc::new(AtomicBool::new(false)),
            workers: Vec::with_capacity(WORKERS),
        };
        for i in 0..WORKERS {
            let (rx, store, stop) = (rx.clone(), store.clone(), ra.stop.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("mindcastle-readahead-{i}"))
                .spawn(move || worker(&rx, store.as_ref(), &stop));
            match spawned {
                Ok(h) => ra.workers.push(h),
                Err(e) => {
                    // Dropping `ra` stops and joins the workers started so far.
                    tracing::warn!(error = %e, "could not start read-ahead");
                    return None;
                }
            }
        }
        Some(ra)
    }

    /// Queues whole chunks for the download workers (the index of a large disk, at
    /// open); those past the queue's room are left for reads to fetch.
    pub fn fetch(&self, ids: impl IntoIterator<Item = ChunkId>) {
        let Some(tx) = &self.tx else { return };
        for id in ids {
            if tx.try_send(id).is_err() {
                tracing::debug!("read-ahead queue full; the rest is fetched when read");
                return;
            }
        }
    }

    /// Notes a read of `len` bytes at `offset`; when reads run forward, asks for the
    /// chunks of the stretch ahead.
    pub fn observe(&self, engine: &Engine, offset: u64, len: u64) {
        let end = offset.saturating_add(len);
        let want = {
            let Ok(mut p) = self.pattern.lock() else {
                return;
            };
            let forward = offset + SLACK >= p.frontier && offset <= p.frontier + MIN_WINDOW;
            if forward {
                p.streak = p.streak.saturating_add(1);
            } else {
                p.streak = 0;
                p.window = 0;
                p.ahead = 0;
            }
            p.frontier = if forward { p.frontier.max(end) } else { end };
            if p.streak < STREAK {
                return;
            }
            // Doubling while reads go forward, and at least twice the read, so a reader
            // taking large steps finds the next step already on its way.
            p.window = (p.window * 2).max(len * 2).clamp(MIN_WINDOW, MAX_WINDOW);
            let from = p.ahead.max(p.frontier);
            let to = (p.frontier + p.window).min(engine.size());
            if to <= from + MIN_WINDOW / 2 {
                return;
            }
            p.ahead = to;
            (from, to)
        };
        let bs = crate::format::BLOCK_SIZE as u64;
        let (first, last) = (want.0 / bs, want.1.div_ceil(bs));
        let chunks = match engine.data_chunks(first, last - first) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "read-ahead lookup failed");
                return;
            }
        };
        let fresh: Vec<ChunkId> = {
            let Ok(mut p) = self.pattern.lock() else {
                return;
            };
            if p.requested.len() > REMEMBER {
                p.requested.clear();
            }
            chunks
                .into_iter()
                .filter(|c| p.requested.insert(*c))
                .collect()
        };
        let Some(tx) = &self.tx else { return };
        for c in fresh {
            // A full queue means the workers are behind: skip, the reader fetches.
            if tx.try_send(c).is_err() {
                break;
            }
        }
    }
}

fn worker(rx: &Mutex<Receiver<ChunkId>>, store: &dyn ChunkStore, stop: &AtomicBool) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(id) = next else {
            return; // the disk closed
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = store.get(&id) {
            tracing::debug!(chunk = %id, error = %e, "read-ahead fetch failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::error::{Error, Result};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A store whose every read takes 100 ms, counting reads begun and under way.
    #[derive(Default)]
    struct Slow {
        began: AtomicUsize,
        under_way: AtomicUsize,
    }

    impl ChunkStore for Slow {
        fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
            self.began.fetch_add(1, Ordering::SeqCst);
            self.under_way.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            self.under_way.fetch_sub(1, Ordering::SeqCst);
            Err(Error::not_found(format!("chunk {id} (slow)")))
        }
        fn get_range(&self, id: &ChunkId, _: u64, _: usize) -> Result<Vec<u8>> {
            self.get(id)
        }
        fn put(&self, _: &[u8]) -> Result<ChunkId> {
            Err(Error::invalid("read-only"))
        }
        fn sync(&self) -> Result<()> {
            Ok(())
        }
        fn contains(&self, _: &ChunkId) -> Result<bool> {
            Ok(false)
        }
        fn size(&self, id: &ChunkId) -> Result<u64> {
            Err(Error::not_found(format!("chunk {id} (slow)")))
        }
        fn delete(&self, _: &ChunkId) -> Result<()> {
            Ok(())
        }
        fn list(&self) -> Result<Vec<ChunkId>> {
            Ok(Vec::new())
        }
        fn describe(&self) -> String {
            "slow".into()
        }
    }

    /// Closing the disk stops the workers: the fetches under way finish, the queued
    /// ones are not started, and no worker outlives the read-ahead (one still fetching
    /// at process exit crashed in the crypto library's exit-time cleanup).
    #[test]
    fn dropping_the_read_ahead_stops_and_joins_its_workers() {
        let store = Arc::new(Slow::default());
        let ra = ReadAhead::start(store.clone()).unwrap();
        ra.fetch((0..200u32).map(|i| ChunkId::of(&i.to_le_bytes())));
        std::thread::sleep(Duration::from_millis(30));
        drop(ra);
        assert_eq!(
            store.under_way.load(Ordering::SeqCst),
            0,
            "a read-ahead fetch was still under way after its disk closed"
        );
        let at_close = store.began.load(Ordering::SeqCst);
        assert!(at_close > 0, "no fetch had begun");
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            store.began.load(Ordering::SeqCst),
            at_close,
            "a read-ahead worker went on fetching after its disk closed"
        );
        let began = store.began.load(Ordering::SeqCst);
        assert!(began <= 2 * WORKERS, "{began} fetches began for 200 queued");
    }
}
