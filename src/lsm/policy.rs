//! Which level a new batch merges into. Pure: sizes in, decision out.
//!
//! Level `k` holds at most `BASE_ENTRIES * GROWTH^k` entries. A batch merges with levels
//! `0..=k` for the smallest `k` whose capacity fits the batch plus those levels, and the
//! result replaces level `k` (levels above it become empty), as in the original's dubtree.

/// Capacity of level 0, in entries (a full memtable fits).
pub const BASE_ENTRIES: u64 = 65536;
/// Growth factor between levels.
pub const GROWTH: u64 = 10;

/// Capacity of level `k` in entries, for a level-0 capacity of `base`.
pub fn capacity(base: u64, k: usize) -> u64 {
    let mut c = base;
    for _ in 0..k {
        c = c.saturating_mul(GROWTH);
    }
    c
}

/// Target level for a batch of `batch` entries over levels of `sizes` entries.
pub fn choose(base: u64, sizes: &[u64], batch: u64) -> usize {
    let mut total = batch;
    for k in 0.. {
        total = total.saturating_add(sizes.get(k).copied().unwrap_or(0));
        if total <= capacity(base, k) || (k >= sizes.len() && k >= 40) {
            return k;
        }
    }
    sizes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&[u64], u64, usize)] = &[
            (&[], 10, 0),
            (&[0], 10, 0),
            (&[65530], 10, 1),
            (&[65530, 600_000], 10, 2),
            (&[0, 600_000], 10, 0),
            (&[65530, 0], 10, 1),
            (&[], 1_000_000, 2),
        ];
        for (sizes, batch, want) in cases {
            assert_eq!(
                choose(BASE_ENTRIES, sizes, *batch),
                *want,
                "{sizes:?} + {batch}"
            );
        }
    }
}
