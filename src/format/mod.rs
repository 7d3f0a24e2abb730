//! Pure bytes <-> types: every on-disk structure, with no I/O and no clock.
//! Each file opens with its byte layout; `docs/FORMAT.md` collects them.

pub mod bytes;
pub mod chunk_id;
pub mod crypto;
#[cfg(target_arch = "x86_64")]
pub mod gcm_siv_vaes;
pub mod lz4;
pub mod node;
pub mod record;
pub mod ref_version;
pub mod root;
pub mod sha512_lanes;
pub mod size;
pub mod swapfile;
pub mod wal;

/// Deterministic incompressible bytes for tests (xorshift from `seed`).
#[cfg(test)]
pub(crate) fn test_noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Bytes in one block, the unit of the index.
pub const BLOCK_SIZE: usize = 4096;
