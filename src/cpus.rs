//! Cores this process may use, read once: `std::thread::available_parallelism` reads
//! the cgroup's quota files on every call, which showed up as path lookups on every
//! 4 KiB write.

use std::sync::OnceLock;

/// The number of cores this process may use (at least 1), from the first call on.
pub fn available() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}
