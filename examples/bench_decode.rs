//! Record decoding alone, in process: LZ4 decoding (`format::lz4`) and opening
//! (AES-256-GCM-SIV, then LZ4) of half-compressible 4 KiB blocks on one core, the
//! per-block work of every read. Prints `lz4 ns/block` and `open ns/block`.
//! Usage: `cargo run --release --example bench_decode [BLOCKS]` (default 200000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

#[path = "support/blocks.rs"]
mod blocks;

use mindcastle::format::crypto::{DiskKey, Keys};
use mindcastle::format::lz4::decompress_into;
use mindcastle::format::record::{open_record, seal_block};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    let plain: Vec<Vec<u8>> = (0..1024u64)
        .map(|seed| blocks::half_compressible(seed, 0))
        .collect();
    let packed: Vec<Vec<u8>> = plain.iter().map(|b| lz4_flex::block::compress(b)).collect();
    let keys = Keys::new(&DiskKey::random()).expect("keys");
    let sealed: Vec<_> = plain
        .iter()
        .map(|b| seal_block(&keys, b).expect("seal"))
        .collect();
    let mut out = vec![0u8; 4096];
    let t = Instant::now();
    for i in 0..n {
        let p = &packed[i % packed.len()];
        decompress_into(p, &mut out).expect("decode");
    }
    println!(
        "lz4 {:.0} ns/block",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    assert_eq!(out, plain[(n - 1) % plain.len()]);
    let t = Instant::now();
    for i in 0..n {
        let s = &sealed[i % sealed.len()];
        open_record(&keys, &s.bytes, &s.tag, &mut out).expect("open");
    }
    println!(
        "open {:.0} ns/block",
        t.elapsed().as_nanos() as f64 / n as f64
    );
    assert_eq!(out, plain[(n - 1) % plain.len()]);
}
