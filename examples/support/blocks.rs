//! Test data shared by the benchmark examples.

/// A half-compressible 4 KiB block: 2 KiB of pseudo-random bytes (from `seed`), then
/// 2 KiB of `fill` (fio's `--buffer_compress_percentage=50` with `fill` 0x5a;
/// bench/make-image.py's image with 0).
pub fn half_compressible(seed: u64, fill: u8) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(4096);
    while out.len() < 2048 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.resize(4096, fill);
    out
}
