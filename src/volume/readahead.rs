//! Adaptive read-ahead for a disk read from remote fallbacks through a cache: when
//! reads run forward (an NBD client copying the disk, a VM booting from it), the data
//! chunks of the next stretch are fetched into the cache in parallel before they are
//! asked for, the stretch doubling (from 4 MiB, or twice the read, up to 64 MiB) while
//! the reads keep going forward and collapsing at the first jump. Clients with many reads in flight arrive
//! slightly out of order, so "forward" means near the furthest end seen so far.
//! Fetches go through the cache, which shares one download among everyone asking for
//! the same chunk, so a reader that catches up waits for the download in flight.

use std::collections::HashSet;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

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

/// The read-ahead of one open disk.
pub struct ReadAhead {
    pattern: Mutex<Pattern>,
    tx: SyncSender<ChunkId>,
}

impl ReadAhead {
    /// Starts the download workers for `store` (the disk's store stack).
    pub fn start(store: Arc<dyn ChunkStore>) -> Option<Self> {
        let (tx, rx) = sync_channel::<ChunkId>(1024);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..WORKERS {
            let (rx, store) = (rx.clone(), store.clone());
            let spawned = std::thread::Builder::new()
                .name(format!("mindcastle-readahead-{i}"))
                .spawn(move || worker(&rx, store.as_ref()));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "could not start read-ahead");
                return None;
            }
        }
        Some(Self {
            pattern: Mutex::new(Pattern::default()),
            tx,
        })
    }

    /// Queues whole chunks for the download workers (the index of a large disk, at
    /// open); those past the queue's room are left for reads to fetch.
    pub fn fetch(&self, ids: impl IntoIterator<Item = ChunkId>) {
        for id in ids {
            if self.tx.try_send(id).is_err() {
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
        for c in fresh {
            // A full queue means the workers are behind: skip, the reader fetches.
            if self.tx.try_send(c).is_err() {
                break;
            }
        }
    }
}

fn worker(rx: &Mutex<Receiver<ChunkId>>, store: &dyn ChunkStore) {
    loop {
        let next = match rx.lock() {
            Ok(r) => r.recv(),
            Err(_) => return,
        };
        let Ok(id) = next else {
            return; // the disk closed
        };
        if let Err(e) = store.get(&id) {
            tracing::debug!(chunk = %id, error = %e, "read-ahead fetch failed");
        }
    }
}
