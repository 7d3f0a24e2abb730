//! The memory bound of one process: a budget (`--memory` or `MINDCASTLE_MEMORY`, default
//! 128 MiB) split among the parts that grow with load, and handing freed memory back to
//! the system after large frees.
//!
//! | part | share of the budget | why |
//! | --- | --- | --- |
//! | memtable, each (one filling, one being checkpointed) | 1/8 | writes wait when both are full |
//! | decoded index nodes (LRU, by bytes) | 1/8 | reads of hot index levels |
//! | NBD request payloads in flight, all connections together | 1/16 | eight 1 MiB requests; a 32 MiB one runs alone |
//! | chunks cut and not yet stored | 1/16 | the chunker's batch (hashed together in SHA-512 lanes: eight pay best) |
//! | large buffers kept for reuse (`crate::buffers`) | 1/8 | no memset and page faults per 1 MiB request: eight 1 MiB reads in flight hold a reply and a chunk range each, and at 1/16 a sixth of their takes found no buffer |
//! | the rest | 3/8 | code, thread stacks, runtime, the allocator's own overhead |

use crate::error::{Error, Result};
use crate::format::size::parse_size;

/// Default budget: 128 MiB.
pub const DEFAULT_BUDGET: u64 = 128 << 20;
/// Smallest budget accepted: 32 MiB.
pub const MIN_BUDGET: u64 = 32 << 20;
/// The environment variable read when `--memory` is not given.
pub const ENV: &str = "MINDCASTLE_MEMORY";

/// The budget of this process, set once by the command line.
static PROCESS: std::sync::OnceLock<Budget> = std::sync::OnceLock::new();

/// A memory budget in bytes and its shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget(u64);

impl Default for Budget {
    fn default() -> Self {
        Self(DEFAULT_BUDGET)
    }
}

impl Budget {
    /// A budget of `bytes`; refused below [`MIN_BUDGET`].
    pub fn new(bytes: u64) -> Result<Self> {
        if bytes < MIN_BUDGET {
            return Err(Error::invalid(format!(
                "memory budget {bytes} bytes is below the minimum of {} MiB",
                MIN_BUDGET >> 20
            )));
        }
        Ok(Self(bytes))
    }

    /// From `--memory` when given, else `MINDCASTLE_MEMORY`, else the default.
    pub fn from_arg_or_env(arg: Option<&str>) -> Result<Self> {
        let text = match arg {
            Some(a) => Some(a.to_string()),
            None => std::env::var(ENV).ok().filter(|s| !s.trim().is_empty()),
        };
        match text {
            None => Ok(Self::default()),
            Some(t) => {
                let bytes = parse_size(t.trim())
                    .map_err(|e| Error::invalid(format!("memory budget {t:?}: {e}")))?;
                Self::new(bytes)
            }
        }
    }

    /// Makes `self` the budget of this process (the first call wins).
    pub fn set_for_process(self) {
        let _ = PROCESS.set(self);
    }

    /// The budget of this process: the one set by the command line, else the default.
    pub fn process() -> Self {
        PROCESS.get().copied().unwrap_or_default()
    }

    /// The whole budget in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Record bytes one memtable holds before it is checkpointed.
    pub fn memtable_bytes(self) -> usize {
        to_usize(self.0 / 8)
    }

    /// Bytes of decoded index nodes kept.
    pub fn node_cache_bytes(self) -> usize {
        to_usize(self.0 / 8)
    }

    /// Bytes of NBD request payloads in flight across every connection.
    pub fn request_bytes(self) -> usize {
        to_usize(self.0 / 16)
    }

    /// Bytes of large buffers kept for reuse when no request holds them.
    pub fn reuse_bytes(self) -> usize {
        to_usize(self.0 / 8)
    }

    /// Bytes of cut chunks held before they are stored.
    pub fn pending_chunk_bytes(self) -> usize {
        to_usize(self.0 / 16)
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Tunes glibc's allocator for this workload, once, before the threads start:
/// - freed memory at the top of the heap goes back at 128 KiB (the default threshold
///   grows with the largest free and kept 30-60 MB more resident than the live heap
///   under a 1 GiB copy);
/// - buffers up to 32 MiB (NBD requests, chunks) come from the heap instead of a fresh
///   mmap each: page faults on new 1 MiB read buffers cost a quarter of sequential read
///   throughput (fio 1 MiB reads: 856 -> 1,170 IOPS; peak RSS 112 -> 117 MB);
/// - one arena per core (see below).
pub fn configure_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: mallopt only sets tuning values of the allocator; called at start-up.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // One arena per core, not glibc's eight: records freed by one thread and
        // allocated by another were spread over 16 arenas here. Peak RSS of an nbdcopy
        // in plus a sequential write job 122-124 -> 106-107 MiB; sequential reads
        // 1.2-1.4x (bench/ab.sh, MALLOC_ARENA_MAX=2 against the default).
        let arenas = i32::try_from(crate::cpus::available().max(2)).unwrap_or(i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, arenas);
    }
}

/// Hands memory the allocator keeps in its free lists back to the system. Called after
/// a memtable's records are freed: glibc keeps such memory in per-thread arenas, which
/// otherwise held a few hundred MB of a 128 MiB working set. Only then: each call
/// `madvise`s every free page away, so the buffers freed since are faulted in again and
/// every core's TLB is flushed (after each checkpoint of large writes, whose memtables
/// hold references, that was 4% of the machine in page faults and 1.5% in the trim).
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no
    // pointer and is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_within_the_budget() {
        let b = Budget::default();
        let parts = 2 * b.memtable_bytes()
            + b.node_cache_bytes()
            + b.request_bytes()
            + b.pending_chunk_bytes();
        assert!(parts as u64 <= b.bytes() * 5 / 8, "{parts}");
        assert_eq!(b.memtable_bytes(), 16 << 20);
    }

    #[test]
    fn small_budgets_are_refused_with_the_minimum_named() {
        let e = Budget::new(1 << 20).unwrap_err().to_string();
        assert!(e.contains("32 MiB"), "{e}");
        assert!(Budget::from_arg_or_env(Some("nonsense")).is_err());
        assert_eq!(
            Budget::from_arg_or_env(Some("1G")).unwrap().bytes(),
            1 << 30
        );
    }
}
