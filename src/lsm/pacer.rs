//! Spreads writers' waits for a checkpoint over the time it takes.
//!
//! Without pacing, writers fill the fresh memtable as fast as they can while the frozen
//! one is turned into chunks, then all wait for the rest of that checkpoint at once:
//! most writes take a few milliseconds and every few hundredth one a hundred (p99 of
//! sequential writes was 31x p50), and while writers run flat out the checkpoint gets
//! less of the CPU. Paced, each write during a checkpoint is held for its share of the
//! checkpoint's expected remaining time, so the fresh memtable fills about when the
//! checkpoint ends. The time is estimated from the last checkpoints in two parts:
//! cutting and storing chunks, per memtable byte, and merging the index, per entry the
//! merge reads (a merge into a deeper level takes several times longer, and is known
//! before it starts). A checkpoint running past its estimate keeps writers paced as if
//! a quarter of its time so far were still to come. Writers share one clock: a write is
//! admitted at the clock's time and moves it on by its share, so many writers together
//! go no faster than one. A checkpoint that ends wakes every held writer.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Holds shorter than this are owed on the clock but not slept (a sleep this short
/// costs more than it smooths).
const MIN_SLEEP: Duration = Duration::from_micros(200);
/// Longest single hold.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Weight of the newest checkpoint in the running estimate.
const NEWEST: f64 = 0.5;

/// Weight of the newest checkpoint in the running estimate.
fn blend(old: f64, new: f64) -> f64 {
    if old == 0.0 {
        new
    } else {
        NEWEST * new + (1.0 - NEWEST) * old
    }
}

/// The checkpoint under way.
#[derive(Clone, Copy)]
struct Current {
    started: Instant,
    /// Memtable bytes it turns into chunks.
    bytes: usize,
    /// Index entries its merge reads.
    entries: u64,
    /// When chunking ended (the merge began).
    chunked: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    /// Seconds per memtable byte of cutting and storing chunks; 0 until measured.
    secs_per_byte: f64,
    /// Seconds per entry read by the merge (and the rest of the checkpoint).
    secs_per_entry: f64,
    current: Option<Current>,
    /// The shared clock: when the next write is admitted.
    next: Option<Instant>,
}

impl Inner {
    fn expected(&self, c: &Current) -> Duration {
        Duration::from_secs_f64(
            self.secs_per_byte * c.bytes as f64 + self.secs_per_entry * c.entries as f64,
        )
    }
}

/// The pacing of one engine's writers.
#[derive(Default)]
pub struct Pacer {
    inner: Mutex<Inner>,
    ended: Condvar,
}

impl Pacer {
    /// A checkpoint of a frozen memtable holding `bytes` begins; its merge will read
    /// `entries` index entries.
    pub fn started(&self, bytes: usize, entries: u64) {
        if let Ok(mut p) = self.inner.lock() {
            p.current = Some(Current {
                started: Instant::now(),
                bytes: bytes.max(1),
                entries: entries.max(1),
                chunked: None,
            });
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

    /// The checkpoint under way ended: its times feed the estimates, and held writers
    /// go on at once.
    pub fn finished(&self) {
        if let Ok(mut p) = self.inner.lock() {
            if let Some(c) = p.current.take() {
                let end = Instant::now();
                let chunked = c.chunked.unwrap_or(end);
                let per_byte = chunked.duration_since(c.started).as_secs_f64() / c.bytes as f64;
                let per_entry = end.duration_since(chunked).as_secs_f64() / c.entries as f64;
                p.secs_per_byte = blend(p.secs_per_byte, per_byte);
                p.secs_per_entry = blend(p.secs_per_entry, per_entry);
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
        if p.secs_per_byte == 0.0 {
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
            secs_per_byte: 1e-6,  // 1 s per MB
            secs_per_entry: 1e-6, // 1 s per million entries
            ..Default::default()
        };
        let t0 = Instant::now();
        // Nothing under way: no hold.
        assert_eq!(pacer.hold(&mut p, t0, 1000, 10_000), Duration::ZERO);
        // Expected 90 ms of chunks and 10 ms of merge.
        p.current = Some(Current {
            started: t0,
            bytes: 90_000,
            entries: 10_000,
            chunked: None,
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
        pacer.started(1000, 100);
        std::thread::sleep(Duration::from_millis(20));
        pacer.chunked();
        std::thread::sleep(Duration::from_millis(10));
        pacer.finished();
        let (per_byte, per_entry) = {
            let p = pacer.inner.lock().unwrap();
            (p.secs_per_byte, p.secs_per_entry)
        };
        assert!(per_byte >= 20e-6, "{per_byte}");
        assert!(per_entry >= 100e-6, "{per_entry}");
        // A long expected checkpoint: the writer is held until it ends, not longer.
        pacer.started(1_000_000, 1); // ~20 s expected
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
}
