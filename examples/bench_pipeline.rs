//! The write pipeline alone, in process (run by `bench/peers.sh`): the rate at which
//! this machine's cores LZ4-compress, seal (AES-256-GCM-SIV) and SHA-512 (chunk names)
//! half-compressible 4 KiB blocks, with no disk, log, index or NBD. It is the ceiling
//! the performance issue measures sequential writes against ("pipeline limit").
//! Prints one line: `pipeline MB/s threads N`.
//! Usage: `cargo run --release --example bench_pipeline [MIB] [POOL_BLOCKS]` (defaults
//! 512 and 4,096). The blocks are made up front and reused; 4,096 of them (16 MiB) stay
//! in the cache, as the limit is defined; 65,536 (256 MiB) measure data that is not.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

#[path = "support/blocks.rs"]
mod blocks;

use mindcastle::format::chunk_id::ChunkId;
use mindcastle::format::crypto::{DiskKey, Keys};
use mindcastle::format::record::seal_block;

fn main() {
    let mib: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(512);
    let blocks = mib * 256;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Distinct blocks made up front (a pool reused, so making data is not timed).
    let pool_blocks: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(4096);
    let pool: Vec<Vec<u8>> = (0..pool_blocks)
        .map(|seed| blocks::half_compressible(seed, 0x5a))
        .collect();
    let keys = match Keys::new(&DiskKey::random()) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("bench_pipeline: {e}");
            std::process::exit(1);
        }
    };
    let started = Instant::now();
    let sealed_bytes: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (pool, keys) = (&pool, &keys);
                s.spawn(move || {
                    let mut chunk = Vec::with_capacity(2 << 20);
                    let mut total = 0;
                    for i in (t..blocks).step_by(threads) {
                        let rec = seal_block(keys, &pool[i % pool.len()]).unwrap();
                        chunk.extend_from_slice(&rec.bytes);
                        if chunk.len() >= 3 << 19 {
                            std::hint::black_box(ChunkId::of(&chunk));
                            total += chunk.len();
                            chunk.clear();
                        }
                    }
                    std::hint::black_box(ChunkId::of(&chunk));
                    total + chunk.len()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let secs = started.elapsed().as_secs_f64();
    let logical = (blocks * 4096) as f64;
    eprintln!(
        "sealed {:.0} MiB of {mib} MiB ({:.2})",
        sealed_bytes as f64 / (1 << 20) as f64,
        sealed_bytes as f64 / logical
    );
    println!(
        "pipeline {:.1} MB/s threads {threads}",
        logical / secs / 1e6
    );
}
