//! Large byte buffers reused across requests, process-wide.
//!
//! A fresh 1 MiB `Vec` per request (a read's reply, a write's payload, the bytes of a
//! chunk range read from disk) costs a zeroing memset and, once the allocator has handed
//! the pages back, a page fault per 4 KiB. Buffers finished with are kept here, up to
//! the budget's share for them ([`crate::memory::Budget::reuse_bytes`]), and taken
//! again. A buffer is always filled whole before its bytes are used (a read fills every
//! byte of its reply or fails and is not sent; a write's payload and a chunk range are
//! read whole or the request fails; packed records read only the bytes they wrote), so
//! reuse without zeroing returns nothing stale.

use std::sync::{Mutex, OnceLock};

/// Larger buffers are not kept (rare requests of up to 32 MiB).
const KEEP_MAX_BYTES: usize = 2 << 20;
/// Smaller ones are not worth a lock: the allocator's per-thread caches serve them
/// (random 4 KiB reads take and give two buffers each).
const KEEP_MIN_BYTES: usize = 64 << 10;

/// Buffers finished with, and how many bytes they hold at most.
pub struct BufferPool {
    free: Mutex<Kept>,
    cap_bytes: usize,
}

#[derive(Default)]
struct Kept {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// The process's pool, sized by its memory budget.
pub fn shared() -> &'static BufferPool {
    static POOL: OnceLock<BufferPool> = OnceLock::new();
    POOL.get_or_init(|| BufferPool::new(crate::memory::Budget::process().reuse_bytes()))
}

impl BufferPool {
    /// A pool keeping at most `cap_bytes` (by capacity).
    pub fn new(cap_bytes: usize) -> Self {
        Self {
            free: Mutex::new(Kept::default()),
            cap_bytes,
        }
    }

    /// A buffer of exactly `len` bytes, reused when one large enough is free. Its bytes
    /// are whatever the last user left (zeros only where it grew): fill it whole.
    /// Shortening it means its next longer use zeroes the rest again: buffers that go
    /// back to the pool are better taken with [`BufferPool::take_at_least`].
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut buf = self.take_at_least(len);
        buf.truncate(len);
        buf
    }

    /// A buffer of at least `len` bytes (use its first `len`), reused when one large
    /// enough is free; one already that long is preferred, so nothing is zeroed. For
    /// callers whose lengths vary from use to use (a chunk range's stored bytes):
    /// `take`'s exact length zeroed the part regrown on almost every use (2.5% of a
    /// sequential read's samples were that memset).
    pub fn take_at_least(&self, len: usize) -> Vec<u8> {
        // A new buffer's room is rounded up to a power of two: a chunk range's 600 KB
        // buffer then serves a later 1 MiB reply, where a pool full of buffers just
        // too small for it made every reply a fresh, zeroed allocation. Not past the
        // largest kept size (such a buffer is dropped after use anyway).
        let room = match len.checked_next_power_of_two() {
            Some(p) if p <= KEEP_MAX_BYTES => p,
            _ => len,
        };
        self.take_with_room(len, room)
    }

    /// [`BufferPool::take_at_least`] whose new buffers have no more room than `len`:
    /// for a user that asks the same length every time (a large write's packed
    /// records), which the power-of-two room would only make take more memory (8 MiB
    /// more in 1 MiB writes at queue depth 8).
    pub fn take_at_least_tight(&self, len: usize) -> Vec<u8> {
        self.take_with_room(len, len)
    }

    fn take_with_room(&self, len: usize, room: usize) -> Vec<u8> {
        if len < KEEP_MIN_BYTES {
            return vec![0; len];
        }
        let mut buf = self
            .take_kept(|b| b.len() >= len, |b| b.capacity() >= len)
            .unwrap_or_else(|| Vec::with_capacity(room));
        if buf.len() < len {
            buf.resize(len, 0);
        }
        buf
    }

    /// An empty buffer with room for at least `cap` bytes, reused when one is free
    /// (cleared: its old bytes are out of reach, and nothing is zeroed). For buffers
    /// filled by appending.
    pub fn take_empty(&self, cap: usize) -> Vec<u8> {
        if cap < KEEP_MIN_BYTES {
            return Vec::with_capacity(cap);
        }
        let fits = |b: &Vec<u8>| b.capacity() >= cap;
        match self.take_kept(fits, fits) {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(cap),
        }
    }

    /// Removes and returns the smallest kept buffer that is `best`, else the smallest
    /// that `fits`.
    fn take_kept(
        &self,
        best: impl Fn(&Vec<u8>) -> bool,
        fits: impl Fn(&Vec<u8>) -> bool,
    ) -> Option<Vec<u8>> {
        let mut k = self.free.lock().ok()?;
        let at = best_fit(&k.buffers, best).or_else(|| best_fit(&k.buffers, fits))?;
        let b = k.buffers.swap_remove(at);
        k.bytes -= b.capacity();
        Some(b)
    }

    /// Hands a buffer back for a later [`BufferPool::take`]; dropped when the pool is
    /// full or the buffer too large to keep.
    pub fn give(&self, buf: Vec<u8>) {
        let cap = buf.capacity();
        if !(KEEP_MIN_BYTES..=KEEP_MAX_BYTES).contains(&cap) {
            return;
        }
        if let Ok(mut k) = self.free.lock() {
            if k.bytes + cap <= self.cap_bytes {
                k.bytes += cap;
                k.buffers.push(buf);
            }
        }
    }
}

/// The smallest kept buffer that `fits`: a half-size request (a write's packed records
/// for one of two threads) then leaves the 1 MiB buffers to the requests that need them,
/// instead of a later one finding none and faulting in fresh pages.
fn best_fit(buffers: &[Vec<u8>], fits: impl Fn(&Vec<u8>) -> bool) -> Option<usize> {
    buffers
        .iter()
        .enumerate()
        .filter(|(_, b)| fits(b))
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_at_the_length_asked_and_are_reused() {
        let pool = BufferPool::new(4 << 20);
        let mut a = pool.take(1 << 20);
        assert_eq!(a.len(), 1 << 20);
        a.fill(7);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take(KEEP_MIN_BYTES);
        assert_eq!(b.len(), KEEP_MIN_BYTES);
        assert_eq!(b.as_ptr(), ptr, "the same allocation again");
        pool.give(b);
        // Grown back: the part that was cut off reads as zeros, not stale bytes.
        let c = pool.take(2 * KEEP_MIN_BYTES);
        assert_eq!(c.as_ptr(), ptr);
        assert!(c[..KEEP_MIN_BYTES].iter().all(|&x| x == 7));
        assert!(c[KEEP_MIN_BYTES..].iter().all(|&x| x == 0));
        // Small ones are fresh zeroed allocations, and not kept.
        let small = pool.take(4096);
        assert!(small.iter().all(|&x| x == 0));
        pool.give(small);
        // Too large to keep; past the cap, buffers are dropped.
        pool.give(vec![0; KEEP_MAX_BYTES + 1]);
        for _ in 0..6 {
            pool.give(vec![0; 1 << 20]);
        }
        let kept = pool.free.lock().map(|k| (k.buffers.len(), k.bytes));
        assert_eq!(kept.unwrap_or_default(), (4, 4 << 20));
    }

    #[test]
    fn an_empty_buffer_is_reused_for_its_capacity_and_holds_nothing() {
        let pool = BufferPool::new(4 << 20);
        let mut a = pool.take_empty(1 << 20);
        assert!(a.is_empty() && a.capacity() >= 1 << 20);
        a.extend_from_slice(&[9; 1000]);
        let ptr = a.as_ptr();
        pool.give(a);
        let b = pool.take_empty(512 << 10);
        assert!(b.is_empty(), "old bytes reachable");
        assert_eq!(b.as_ptr(), ptr, "the same allocation again");
        // Nothing free is large enough: a fresh one.
        let c = pool.take_empty(2 << 20);
        assert!(c.is_empty() && c.capacity() >= 2 << 20);
    }

    #[test]
    fn the_smallest_buffer_that_fits_is_taken_and_the_large_one_kept_for_a_large_request() {
        let pool = BufferPool::new(8 << 20);
        let large = pool.take(1 << 20);
        let small = pool.take(512 << 10);
        let (large_ptr, small_ptr) = (large.as_ptr(), small.as_ptr());
        // The large one first: first-fit would hand it to the half-size request.
        pool.give(large);
        pool.give(small);
        let half = pool.take_empty(300 << 10);
        assert_eq!(half.as_ptr(), small_ptr);
        let whole = pool.take(1 << 20);
        assert_eq!(
            whole.as_ptr(),
            large_ptr,
            "the 1 MiB buffer was kept for it"
        );
    }

    #[test]
    fn at_least_prefers_a_buffer_already_long_enough_and_never_shrinks_it() {
        let pool = BufferPool::new(4 << 20);
        let mut short = pool.take(KEEP_MIN_BYTES);
        short.fill(1);
        let mut long = pool.take(1 << 20);
        long.fill(2);
        let long_ptr = long.as_ptr();
        pool.give(short);
        pool.give(long);
        // The short one has the capacity too (maybe), but only the long one needs no
        // zeroing: it comes back whole, at its own length.
        let got = pool.take_at_least(3 * KEEP_MIN_BYTES);
        assert_eq!(got.as_ptr(), long_ptr);
        assert_eq!(got.len(), 1 << 20);
        assert!(got.iter().all(|&x| x == 2), "its bytes were rewritten");
        pool.give(got);
        // Nothing free is long enough: grown with zeros past what it held.
        let grown = pool.take_at_least(2 << 20);
        assert!(grown.len() >= 2 << 20);
        let fresh = pool.take_at_least(KEEP_MIN_BYTES);
        assert!(fresh.len() >= KEEP_MIN_BYTES);
    }

    #[test]
    fn a_new_buffer_has_a_power_of_two_of_room_so_a_longer_take_reuses_it() {
        let pool = BufferPool::new(4 << 20);
        // A chunk range's 600 KB, then a 1 MiB reply: the same allocation serves both.
        let range = pool.take_at_least(600_000);
        assert_eq!(range.len(), 600_000);
        assert!(range.capacity() >= 1 << 20);
        let ptr = range.as_ptr();
        pool.give(range);
        let reply = pool.take_at_least(1 << 20);
        assert_eq!(reply.as_ptr(), ptr);
        assert_eq!(reply.len(), 1 << 20);
        // Past the largest kept size, exactly what was asked.
        let big = pool.take_at_least(KEEP_MAX_BYTES + 4096);
        assert!(big.capacity() < 2 * KEEP_MAX_BYTES);
    }
}
