//! Spreads writers' waits for a checkpoint over the time it takes.
//!
//! Without pacing, writers fill the fresh memtable as fast as they can while the frozen
//! one is turned into chunks, then all wait for the rest of that checkpoint at once:
//! most writes take a few milliseconds and every few hundredth one a hundred (p99 of
//! sequential writes was 31x p50), and while writers run flat out the checkpoint gets
//! less of the CPU. Paced, each write during a checkpoint is held for its share of the
//! checkpoint's expected remaining time, so the fresh memtable fills about when the
//! checkpoint ends. A checkpoint running past its estimate keeps writers paced as if a
//! quarter of its time so far were still to come. Writers share one clock: a write is
//! admitted at the clock's time and moves it on by its share, so many writers together
//! go no faster than one. A checkpoint that ends wakes every held writer.
//!
//! The time is estimated from the last checkpoints in parts that grow with different
//! things, so that one kind of checkpoint does not mislead the estimate of another:
//! - cutting and storing chunks, per memtable record byte (learnt only from memtables
//!   that held records: one of large writes' references holds none);
//! - then the merge and the sync of the data chunks, which run side by side, so the
//!   longer of: the merge, per index entry it reads (a merge into a deeper level reads
//!   several times more, and that is known before it starts), and the sync, per block
//!   the memtable names (the device's time for the chunks behind them);
//! - the rest (the root's write, sync and publication), per checkpoint.
//!
//! (Charging the sync to the merge's entries, as before, made a deep merge after a
//! shallow one whose sync was slow expect several times its length, and writers were
//! held through it; charging a memtable of references one byte made the first
//! memtable of records after them expect hours.)

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Holds shorter than this are owed on the clock but not slept (a sleep this short
/// costs more than it smooths).
const MIN_SLEEP: Duration = Duration::from_micros(200);
/// Longest single hold.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Weight of the newest checkpoint in the running estimate.
const NEWEST: f64 = 0.5;
/// Longest checkpoint the estimate may expect.
const MAX_EXPECTED: Duration = Duration::from_secs(3600);
/// A memtable with fewer record bytes teaches nothing about chunking per byte (its
/// chunk phase is mostly fixed costs).
const MIN_LEARN_BYTES: usize = 1 << 20;

/// Weight of the newest checkpoint in the running estimate.
fn blend(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        new
    } else {
        NEWEST * new + (1.0 - NEWEST) * old
    }
}

/// A running estimate of one part's time per unit: the blended mean, and how far
/// checkpoints stray from it (as TCP estimates its retransmission timeout), so that a
/// part whose time swings is expected at the long end of its swing. (On the mean alone,
/// a deep merge that took 230 ms after ones of 115-140 found writers that had filled
/// the fresh memtable already, and they waited out its rest: writes of 230 ms.)
#[derive(Clone, Copy, Default)]
struct Rate {
    mean: f64,
    dev: f64,
    seen: bool,
}

impl Rate {
    fn observe(&mut self, x: f64) {
        if self.seen {
            self.dev = 0.75 * self.dev + 0.25 * (x - self.mean).abs();
            self.mean = blend(self.mean, x);
        } else {
            // One checkpoint says little about the next: half again as long.
            *self = Rate {
                mean: x,
                dev: x / 2.0,
                seen: true,
            };
        }
    }

    fn long_end(&self) -> f64 {
        self.mean + self.dev
    }
}

/// What a checkpoint's parts took, reported by the checkpoint once its merge is done.
#[derive(Clone, Copy, Debug)]
pub struct MergeTimes {
    /// The merge's own work.
    pub merge: Duration,
    /// The data chunks' sync beside it.
    pub sync: Duration,
}

/// The checkpoint under way.
#[derive(Clone, Copy)]
struct Current {
    started: Instant,
    /// Memtable record bytes it turns into chunks.
    bytes: usize,
    /// Blocks the memtable names (whose chunks the checkpoint syncs).
    blocks: u64,
    /// Index entries its merge reads.
    entries: u64,
    /// When chunking ended (the merge began).
    chunked: Option<Instant>,
    /// When the merge and sync ended, and what each took.
    merged: Option<(Instant, MergeTimes)>,
}

impl Current {
    /// One that starts now.
    fn new(bytes: usize, blocks: u64, entries: u64) -> Self {
        Self {
            started: Instant::now(),
            bytes,
            blocks,
            entries,
            chunked: None,
            merged: None,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Seconds per memtable record byte of cutting and storing chunks.
    secs_per_byte: Rate,
    /// Seconds per entry read by the merge.
    secs_per_entry: Rate,
    /// Seconds per block of the data chunks' sync.
    secs_per_block: Rate,
    /// Seconds of everything else in a checkpoint.
    secs_fixed: Rate,
    /// Whether any checkpoint has been measured (no pacing before).
    measured: bool,
    current: Option<Current>,
    /// The shared clock: when the next write is admitted.
    next: Option<Instant>,
}

impl Inner {
    fn expected(&self, c: &Current) -> Duration {
        // The merge and the sync at the long end of their swing (a deep merge's time
        // swings 2x, and a sync's with the device); chunking and the rest at their
        // means: they swing less, and holding small writers longer than needed costs
        // more than it smooths (each hold is a sleep and a wake-up: 1.12x the CPU per
        // byte of random writes, 0.94x their rate, in an A/B).
        let merge = self.secs_per_entry.long_end() * c.entries as f64;
        let sync = self.secs_per_block.long_end() * c.blocks as f64;
        let chunk = self.secs_per_byte.mean * c.bytes as f64;
        // Capped, so the clock's arithmetic on `Instant` cannot overflow whatever a
        // freak checkpoint taught.
        Duration::try_from_secs_f64(chunk + merge.max(sync) + self.secs_fixed.mean)
            .map_or(MAX_EXPECTED, |d| d.min(MAX_EXPECTED))
    }

    /// Feeds a finished checkpoint's parts into the estimates.
    fn learn(&mut self, c: &Current, end: Instant) {
        let chunked = c.chunked.unwrap_or(end);
        let chunk = chunked.duration_since(c.started).as_secs_f64();
        let learnt_chunk = c.bytes >= MIN_LEARN_BYTES;
        if learnt_chunk {
            self.secs_per_byte.observe(chunk / c.bytes as f64);
        }
        let Some((merged, t)) = c.merged else {
            // No merge reported (a failure, or a checkpoint that also compacted):
            // nothing else to learn from it.
            return;
        };
        self.secs_per_entry
            .observe(t.merge.as_secs_f64() / c.entries.max(1) as f64);
        self.secs_per_block
            .observe(t.sync.as_secs_f64() / c.blocks.max(1) as f64);
        // The rest: the root's part, and the chunk phase where it was not per byte.
        let mut fixed = end.duration_since(merged).as_secs_f64();
        if !learnt_chunk {
            fixed += chunk;
        }
        self.secs_fixed.observe(fixed);
        self.measured = true;
    }
}

/// The pacing of one engine's writers.
#[derive(Default)]
pub struct Pacer {
    inner: Mutex<Inner>,
    ended: Condvar,
}

impl Pacer {
    /// A checkpoint of a frozen memtable holding `bytes` of records and naming
    /// `blocks` blocks begins; its merge will read `entries` index entries.
    pub fn started(&self, bytes: usize, blocks: u64, entries: u64) {
        if let Ok(mut p) = self.inner.lock() {
            p.current = Some(Current::new(bytes, blocks, entries));
        }
    }

    /// The checkpoint under way has stored its chunks and begins its merge.
    pub fn chunked(&self) {
        if let Ok(mut p) = self.inner.lock() {
            if let Some(c) = p.current.as_mut() {
                c.chunked = Some(Instant::now());
            }
        }
    }

    /// The checkpoint under way has merged its index and synced its data chunks.
    pub fn merged(&self, times: MergeTimes) {
        if let Ok(mut p) = self.inner.lock() {
            if let Some(c) = p.current.as_mut() {
                c.merged = Some((Instant::now(), times));
            }
        }
    }

    /// The checkpoint under way ended: its times feed the estimates, and held writers
    /// go on at once.
    pub fn finished(&self) {
        if let Ok(mut p) = self.inner.lock() {
            if let Some(c) = p.current.take() {
                p.learn(&c, Instant::now());
            }
            p.next = None;
        }
        self.ended.notify_all();
    }

    /// How long a write of `bytes` just made should be held, with `room` bytes left in
    /// the fresh memtable; moves the shared clock on by the write's share.
    fn hold(&self, p: &mut Inner, now: Instant, bytes: usize, room: usize) -> Duration {
        let Some(c) = p.current else {
            return Duration::ZERO;
        };
        if !p.measured {
            return Duration::ZERO; // nothing measured yet
        }
        let elapsed = now.duration_since(c.started);
        let remaining = p
            .expected(&c)
            .checked_sub(elapsed)
            .unwrap_or_default()
            .max(elapsed / 4);
        let share = remaining.mul_f64(bytes as f64 / room.max(bytes).max(1) as f64);
        let start = p.next.filter(|n| *n > now).unwrap_or(now);
        p.next = Some(start + share.min(remaining));
        start.duration_since(now).min(MAX_SLEEP)
    }

    /// Holds a writer that just wrote `bytes` (with `room` bytes left in the fresh
    /// memtable) for its share of the checkpoint under way, if any.
    pub fn pace(&self, bytes: usize, room: usize) {
        let Ok(mut p) = self.inner.lock() else {
            return;
        };
        let now = Instant::now();
        let hold = self.hold(&mut p, now, bytes, room);
        if hold < MIN_SLEEP {
            return;
        }
        let deadline = now + hold;
        while p.current.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            p = match self.ended.wait_timeout(p, left) {
                Ok((p, _)) => p,
                Err(_) => return,
            };
        }
    }

    /// Whether a write now would be held (the clock is ahead of now).
    pub fn holding(&self) -> bool {
        let Ok(p) = self.inner.lock() else {
            return true;
        };
        p.current.is_some() && p.next.is_some_and(|n| n > Instant::now() + MIN_SLEEP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_during_a_checkpoint_share_its_expected_time() {
        let pacer = Pacer::default();
        let mut p = Inner {
            secs_per_byte: Rate {
                mean: 1e-6,
                dev: 0.0,
                seen: true,
            }, // 1 s per MB
            secs_per_entry: Rate {
                mean: 1e-6,
                dev: 0.0,
                seen: true,
            }, // 1 s per million entries
            measured: true,
            ..Default::default()
        };
        let t0 = Instant::now();
        // Nothing under way: no hold.
        assert_eq!(pacer.hold(&mut p, t0, 1000, 10_000), Duration::ZERO);
        // Expected 90 ms of chunks and 10 ms of merge.
        p.current = Some(Current {
            started: t0,
            bytes: 90_000,
            blocks: 20,
            entries: 10_000,
            chunked: None,
            merged: None,
        });
        // Ten writes of a tenth of the room each: admitted 10 ms apart.
        let holds: Vec<Duration> = (0..10)
            .map(|_| pacer.hold(&mut p, t0, 1000, 10_000))
            .collect();
        assert_eq!(holds[0], Duration::ZERO, "the first goes at once");
        assert!(holds[1] >= Duration::from_millis(9) && holds[1] <= Duration::from_millis(11));
        assert!(holds[9] >= Duration::from_millis(89) && holds[9] <= MAX_SLEEP);
        // Overdue by 100 ms: paced as if 50 ms (a quarter of 200) were left.
        p.next = None;
        let late = t0 + Duration::from_millis(200);
        let _ = pacer.hold(&mut p, late, 1000, 10_000);
        let next = pacer.hold(&mut p, late, 1000, 10_000);
        assert!(next >= Duration::from_millis(4) && next <= Duration::from_millis(6));
    }

    #[test]
    fn the_end_of_a_checkpoint_measures_it_and_frees_held_writers() {
        let pacer = std::sync::Arc::new(Pacer::default());
        pacer.started(2_000_000, 500, 100);
        std::thread::sleep(Duration::from_millis(20));
        pacer.chunked();
        std::thread::sleep(Duration::from_millis(10));
        pacer.merged(MergeTimes {
            merge: Duration::from_millis(10),
            sync: Duration::from_millis(5),
        });
        pacer.finished();
        let p = pacer.inner.lock().unwrap();
        assert!(
            p.secs_per_byte.mean >= 20e-3 / 2e6,
            "{}",
            p.secs_per_byte.mean
        );
        assert!(
            (p.secs_per_entry.mean - 1e-4).abs() < 1e-9,
            "{}",
            p.secs_per_entry.mean
        );
        assert!(
            (p.secs_per_block.mean - 1e-5).abs() < 1e-9,
            "{}",
            p.secs_per_block.mean
        );
        assert!(p.secs_fixed.mean < 10e-3, "{}", p.secs_fixed.mean);
        drop(p);
        // A long expected checkpoint: the writer is held until it ends, not longer.
        pacer.started(2_000_000_000, 1, 1); // ~20 s expected
        let _ = pacer.hold(&mut pacer.inner.lock().unwrap(), Instant::now(), 1, 1);
        let p2 = pacer.clone();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            p2.pace(100_000, 100_000);
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(10));
        pacer.finished();
        let held = t.join().unwrap();
        assert!(held < MAX_SLEEP, "held {held:?}");
        assert!(!pacer.holding());
    }

    /// The estimates after checkpoints of the given parts (bytes, blocks, entries,
    /// chunk, merge, sync, rest in ms).
    fn after(checkpoints: &[(usize, u64, u64, u64, u64, u64, u64)]) -> Inner {
        let mut p = Inner::default();
        let t0 = Instant::now();
        for &(bytes, blocks, entries, chunk, merge, sync, rest) in checkpoints {
            let ms = Duration::from_millis;
            let chunked = t0 + ms(chunk);
            let merged = chunked + ms(merge.max(sync));
            let c = Current {
                started: t0,
                bytes,
                blocks,
                entries,
                chunked: Some(chunked),
                merged: Some((
                    merged,
                    MergeTimes {
                        merge: ms(merge),
                        sync: ms(sync),
                    },
                )),
            };
            p.learn(&c, merged + ms(rest));
        }
        p
    }

    fn expect_ms(p: &Inner, bytes: usize, blocks: u64, entries: u64) -> f64 {
        p.expected(&Current::new(bytes, blocks, entries))
            .as_secs_f64()
            * 1e3
    }

    /// Sequential large writes: memtables of references (no record bytes) whose data
    /// sync is slow, then a merge into a deeper level that reads 8x the entries: it is
    /// expected to take its merge's time, not 8x the shallow one's sync.
    #[test]
    fn a_slow_sync_is_charged_to_blocks_not_to_the_merge_s_entries() {
        let p = after(&[(0, 32_768, 32_768, 5, 20, 200, 12); 20]);
        let shallow = expect_ms(&p, 0, 32_768, 32_768);
        assert!((210.0..225.0).contains(&shallow), "{shallow}");
        // The merge reads 8x: 160 ms of merge against 200 of sync.
        let deep = expect_ms(&p, 0, 32_768, 262_144);
        assert!((210.0..225.0).contains(&deep), "{deep}");
        // 20x: the merge is the longer part.
        let deeper = expect_ms(&p, 0, 32_768, 655_360);
        assert!((410.0..425.0).contains(&deeper), "{deeper}");
    }

    /// A memtable of records after memtables of references: its chunking is expected at
    /// the per-byte rate records taught, not at a few milliseconds per byte.
    #[test]
    fn memtables_of_references_teach_nothing_about_chunking_per_byte() {
        let mut history = vec![(16_000_000, 7_800, 7_800, 60, 20, 10, 10); 20];
        history.extend([(0, 32_768, 32_768, 6, 20, 30, 10); 20]);
        let p = after(&history);
        let records = expect_ms(&p, 16_000_000, 7_800, 7_800);
        assert!((60.0..120.0).contains(&records), "{records}");
        // Before any memtable of records: chunking expected at nothing per byte, the
        // references' chunk phase counted in the fixed part.
        let p = after(&[(0, 32_768, 32_768, 6, 20, 30, 10); 20]);
        let refs = expect_ms(&p, 0, 32_768, 32_768);
        assert!((45.0..47.0).contains(&refs), "{refs}");
    }

    /// A part whose time swings is expected at the long end of its swing, and a first
    /// checkpoint's time half again.
    #[test]
    fn a_swinging_part_is_expected_at_its_long_end() {
        let first = after(&[(0, 32_768, 262_144, 2, 120, 40, 10)]);
        let e = expect_ms(&first, 0, 32_768, 262_144);
        assert!((190.0..200.0).contains(&e), "{e}");
        let swings: Vec<_> = [115, 140, 230, 120, 135, 225]
            .iter()
            .map(|&m| (0, 32_768, 262_144, 2, m, 40, 10))
            .collect();
        let p = after(&swings);
        let e = expect_ms(&p, 0, 32_768, 262_144);
        // The mean of the last few is about 190 ms.
        assert!(e > 230.0, "{e}");
    }

    /// A freak checkpoint (a merge of one entry that took an hour) leaves an estimate
    /// the clock can add to an `Instant` without overflowing, and writers are still
    /// held no longer than `MAX_SLEEP` at a time.
    #[test]
    fn a_freak_checkpoint_cannot_overflow_the_clock() {
        let mut p = after(&[(0, 1, 1, 0, 3_600_000, 0, 0)]);
        let c = Current::new(usize::MAX, u64::MAX, u64::MAX);
        assert_eq!(p.expected(&c), MAX_EXPECTED);
        p.current = Some(c);
        let pacer = Pacer::default();
        let now = Instant::now();
        for _ in 0..3 {
            assert!(pacer.hold(&mut p, now, usize::MAX, 1) <= MAX_SLEEP);
        }
    }
}
