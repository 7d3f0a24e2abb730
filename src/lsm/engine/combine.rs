//! One chunk for several concurrent large writes: each writer queues its sealed
//! records; whoever finds no writer storing (or, up to one leader per core, a whole
//! batch waiting) becomes a leader, takes the writes queued by then, packs them all
//! through one chunker and hands each its places.
//!
//! Why: a large write used to store chunks of its own, so a client with many 256 KiB
//! writes in flight (`nbdcopy`) made a file per write; creating files was 15% of the
//! server's samples (ext4's inode search), and each file costs an fsync at the next
//! flush and a request for a reader of the published disk. A write alone in the queue
//! is stored as before: nobody waits for company. A write that fills half a chunk
//! by itself does not queue at all (`ALONE_BYTES`).
//!
//! Safety of the shared chunk is that of one write's: every writer holds the engine's
//! direct gate (shared) from before it queues until its memtable entries name the
//! chunk, so garbage collection never sees a stored chunk that no entry names yet.

use std::sync::{Arc, Condvar, Mutex};

use super::*;

/// Writes one leader takes at most: bounds its batch (and the wait of the first
/// writer in it) when many are in flight.
const MAX_GROUP: usize = 16;
/// Record bytes one leader takes at most (past the first write): one full chunk.
const MAX_GROUP_BYTES: usize = crate::lsm::chunker::MAX_CHUNK;
/// A write with this many record bytes or more fills half a chunk alone, and is
/// stored on its own thread: in a group its hashing would wait for the others'
/// (1 MiB sequential writes at queue depth 8 ran at 0.87x when grouped).
pub(super) const ALONE_BYTES: usize = crate::lsm::chunker::MIN_CHUNK / 2;

/// Where each block of one write went.
type Places = Vec<(u64, DataRef)>;

/// Records of one write, and where they went once stored.
struct Slot<R> {
    bytes: usize,
    records: Mutex<Option<R>>,
    placed: Mutex<Option<Result<Places>>>,
}

impl<R> Slot<R> {
    fn done(&self) -> bool {
        self.placed.lock().map(|p| p.is_some()).unwrap_or(true)
    }

    fn finish(&self, r: Result<Places>) {
        if let Ok(mut p) = self.placed.lock() {
            p.get_or_insert(r);
        }
    }
}

struct Queue<R> {
    waiting: Vec<Arc<Slot<R>>>,
    /// Writers storing a batch now.
    leaders: usize,
}

impl<R> Default for Queue<R> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
            leaders: 0,
        }
    }
}

impl<R> Queue<R> {
    /// Whether a waiting writer may lead now: when nobody does, or, up to one leader
    /// per core, when a whole batch is waiting (a leader spends most of its time
    /// hashing its chunk, one core's work: with one leader at a time, writes from
    /// several connections queued behind it while the other core idled).
    fn may_lead(&self, max_leaders: usize) -> bool {
        if self.leaders == 0 {
            return true;
        }
        let full = self.waiting.len() >= MAX_GROUP
            || self.waiting.iter().map(|s| s.bytes).sum::<usize>() >= MAX_GROUP_BYTES;
        full && self.leaders < max_leaders
    }
}

/// The queue of large writes waiting to be stored, and the leaders' hand-over. `R`
/// holds the records of one write, in increasing block order.
pub(super) struct Combiner<R> {
    queue: Mutex<Queue<R>>,
    turn: Condvar,
    /// Leaders at once: one per core.
    max_leaders: usize,
}

impl<R> Default for Combiner<R> {
    fn default() -> Self {
        Self::new(crate::cpus::available())
    }
}

/// Gives every slot of a batch an answer and the lead back, even when the leader
/// unwinds: no writer waits forever.
struct Leading<'a, R> {
    combiner: &'a Combiner<R>,
    batch: Vec<Arc<Slot<R>>>,
}

impl<R> Drop for Leading<'_, R> {
    fn drop(&mut self) {
        for s in &self.batch {
            s.finish(Err(Error::internal(
                "the writer storing this write's chunk stopped",
            )));
        }
        if let Ok(mut q) = self.combiner.queue.lock() {
            q.leaders = q.leaders.saturating_sub(1);
        }
        self.combiner.turn.notify_all();
    }
}

impl<R> Combiner<R> {
    fn new(max_leaders: usize) -> Self {
        Self {
            queue: Mutex::default(),
            turn: Condvar::new(),
            max_leaders: max_leaders.max(1),
        }
    }
}

impl<R: Default> Combiner<R> {
    /// Stores `records` (in increasing block order, `bytes` of records in all), alone
    /// or with other writes queued meanwhile; returns where each went, in the same order.
    pub(super) fn store(
        &self,
        records: R,
        bytes: usize,
        store_group: impl Fn(&[R]) -> Result<Vec<Places>>,
    ) -> Result<Places> {
        let slot = Arc::new(Slot {
            bytes,
            records: Mutex::new(Some(records)),
            placed: Mutex::new(None),
        });
        let mut q = self.queue.lock().map_err(|_| lock_err())?;
        q.waiting.push(slot.clone());
        loop {
            if slot.done() {
                break;
            }
            if !q.may_lead(self.max_leaders) {
                q = self.turn.wait(q).map_err(|_| lock_err())?;
                continue;
            }
            q.leaders += 1;
            let mut bytes = 0;
            let take = q
                .waiting
                .iter()
                .take(MAX_GROUP)
                .take_while(|s| {
                    let first = bytes == 0;
                    bytes += s.bytes;
                    first || bytes <= MAX_GROUP_BYTES
                })
                .count();
            // With more than a group waiting, our own slot may not be in this
            // batch: the loop then leads (or waits) again.
            let batch: Vec<Arc<Slot<R>>> = q.waiting.drain(..take).collect();
            drop(q);
            let lead = Leading {
                combiner: self,
                batch,
            };
            let groups: Vec<R> = lead
                .batch
                .iter()
                .map(|s| {
                    s.records
                        .lock()
                        .ok()
                        .and_then(|mut r| r.take())
                        .unwrap_or_default()
                })
                .collect();
            match store_group(&groups) {
                Ok(placed) if placed.len() == lead.batch.len() => {
                    for (s, p) in lead.batch.iter().zip(placed) {
                        s.finish(Ok(p));
                    }
                }
                Ok(_) => {
                    for s in &lead.batch {
                        s.finish(Err(Error::internal("a stored group lost a write")));
                    }
                }
                Err(e) => {
                    for s in &lead.batch {
                        s.finish(Err(Error::new(e.kind(), e.to_string())));
                    }
                }
            }
            drop(lead);
            q = self.queue.lock().map_err(|_| lock_err())?;
        }
        drop(q);
        let placed = slot
            .placed
            .lock()
            .map_err(|_| lock_err())?
            .take()
            .unwrap_or_else(|| Err(Error::internal("a stored write has no places")));
        placed
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use crate::format::chunk_id::ChunkId;
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::atomic::{AtomicBool, AtomicUsize};

    type Records = Vec<(u64, SealedRecord)>;

    fn rec(lba: u64) -> (u64, SealedRecord) {
        (
            lba,
            SealedRecord {
                bytes: lba.to_le_bytes().to_vec(),
                tag: [lba as u8; 16],
            },
        )
    }

    /// Places each record at its own block number (what a store would answer).
    fn place(groups: &[Vec<(u64, SealedRecord)>]) -> Vec<Vec<(u64, DataRef)>> {
        groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|(lba, r)| {
                        (
                            *lba,
                            DataRef {
                                chunk: ChunkId::of(&r.bytes),
                                chunk_size: 0,
                                offset: *lba as u32,
                                len: r.bytes.len() as u32,
                                tag: r.tag,
                            },
                        )
                    })
                    .collect()
            })
            .collect()
    }

    fn waiting(c: &Combiner<Records>) -> usize {
        c.queue.lock().unwrap().waiting.len()
    }

    #[test]
    fn writes_queued_while_one_is_stored_share_the_next_chunk_run() {
        let c: Combiner<Records> = Combiner::default();
        let batches = Mutex::new(Vec::new());
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Mutex::new(hold);
        let store_fn = |groups: &[Vec<(u64, SealedRecord)>]| {
            batches.lock().unwrap().push(groups.len());
            if batches.lock().unwrap().len() == 1 {
                hold.lock().unwrap().recv().unwrap();
            }
            Ok(place(groups))
        };
        let store = &store_fn;
        let c = &c;
        std::thread::scope(|s| {
            let first = s.spawn(move || c.store(vec![rec(1), rec(2)], 16, store));
            while batches.lock().unwrap().is_empty() {
                std::thread::yield_now();
            }
            let others: Vec<_> = (10..13u64)
                .map(|w| s.spawn(move || c.store(vec![rec(w * 10), rec(w * 10 + 1)], 16, store)))
                .collect();
            while waiting(c) < 3 {
                std::thread::yield_now();
            }
            release.send(()).unwrap();
            let got = first.join().unwrap().unwrap();
            assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2]);
            for (w, h) in (10..13u64).zip(others) {
                let got = h.join().unwrap().unwrap();
                // Each write gets its own places back, whoever stored them.
                assert_eq!(
                    got.iter().map(|p| p.0).collect::<Vec<_>>(),
                    [w * 10, w * 10 + 1]
                );
                assert_eq!(got[0].1.offset, (w * 10) as u32);
            }
        });
        assert_eq!(
            *batches.lock().unwrap(),
            [1, 3],
            "the three queued writes were not stored together"
        );
        assert_eq!(waiting(c), 0);
        assert_eq!(c.queue.lock().unwrap().leaders, 0);
    }

    /// While one leader stores, a whole batch that queued up behind it is stored by a
    /// second leader (two allowed) without waiting for the first.
    #[test]
    fn a_whole_batch_queued_behind_a_leader_gets_a_leader_of_its_own() {
        let c: Combiner<Records> = Combiner::new(2);
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let hold = Mutex::new(hold);
        let started = AtomicBool::new(false);
        let stored = AtomicUsize::new(0);
        let (c, started, stored) = (&c, &started, &stored);
        std::thread::scope(|s| {
            let first = s.spawn(|| {
                c.store(vec![rec(1)], 8, |g| {
                    started.store(true, SeqCst);
                    // Held until the test has seen the others stored (or given up).
                    let _ = hold.lock().unwrap().recv();
                    Ok(place(g))
                })
            });
            while !started.load(SeqCst) {
                std::thread::yield_now();
            }
            let others: Vec<_> = (0..MAX_GROUP as u64)
                .map(|w| {
                    s.spawn(move || {
                        let got = c.store(vec![rec(100 + w)], 8, |g| Ok(place(g)));
                        stored.fetch_add(1, SeqCst);
                        got
                    })
                })
                .collect();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            while stored.load(SeqCst) < MAX_GROUP && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let before_release = stored.load(SeqCst);
            release.send(()).unwrap();
            assert_eq!(first.join().unwrap().unwrap()[0].0, 1);
            for (w, h) in others.into_iter().enumerate() {
                assert_eq!(h.join().unwrap().unwrap()[0].0, 100 + w as u64);
            }
            assert_eq!(
                before_release, MAX_GROUP,
                "the queued batch waited for the first leader"
            );
        });
        assert_eq!(c.queue.lock().unwrap().leaders, 0);
    }

    #[test]
    fn a_failed_store_fails_each_write_of_its_batch_and_the_next_stores() {
        let c: Combiner<Records> = Combiner::default();
        let err = c
            .store(vec![rec(1)], 8, |_| {
                Err(Error::io(
                    "chunk write",
                    std::io::Error::from_raw_os_error(libc::ENOSPC),
                ))
            })
            .unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Io);
        assert!(err.to_string().contains("chunk write"), "{err}");
        let got = c.store(vec![rec(5)], 8, |g| Ok(place(g))).unwrap();
        assert_eq!(got[0].0, 5);
    }

    #[test]
    fn a_leader_that_panics_leaves_no_writer_waiting() {
        let c: Combiner<Records> = Combiner::default();
        let started = AtomicBool::new(false);
        std::thread::scope(|s| {
            let leader = s.spawn(|| {
                c.store(vec![rec(1)], 8, |_| {
                    started.store(true, SeqCst);
                    while waiting(&c) < 1 {
                        std::thread::yield_now();
                    }
                    panic!("store failed hard");
                })
            });
            while !started.load(SeqCst) {
                std::thread::yield_now();
            }
            let follower = s.spawn(|| c.store(vec![rec(2)], 8, |g| Ok(place(g))));
            assert!(leader.join().is_err(), "the leader did not panic");
            // The follower leads next and stores its own write.
            let got = follower.join().unwrap().unwrap();
            assert_eq!(got[0].0, 2);
        });
    }
}
