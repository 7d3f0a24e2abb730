//! Record decoding alone, in process: LZ4 decoding (`format::lz4`) and opening
//! (AES-256-GCM-SIV, then LZ4) of half-compressible 4 KiB blocks on one core, the
//! per-block work of every read, and sealing (LZ4 then AES-256-GCM-SIV). Prints `lz4
//! ns/block`, `open ns/block` and `seal ns/block`, each opening and sealing once with
//! the vector GCM-SIV (where the CPU has it) and once with aws-lc alone.
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
    let disk = DiskKey::random();
    let keys = Keys::new(&disk).expect("keys");
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
    for (name, keys) in [
        ("vector", Keys::new(&disk).expect("keys")),
        ("aws-lc", Keys::without_vectors(&disk).expect("keys")),
    ] {
        if name == "vector" && !keys.vectors() {
            println!("(no VAES/VPCLMULQDQ here: the vector lines are aws-lc)");
        }
        let t = Instant::now();
        for i in 0..n {
            let s = &sealed[i % sealed.len()];
            open_record(&keys, &s.bytes, &s.tag, &mut out).expect("open");
        }
        println!(
            "open {name} {:.0} ns/block",
            t.elapsed().as_nanos() as f64 / n as f64
        );
        assert_eq!(out, plain[(n - 1) % plain.len()]);
        let t = Instant::now();
        for i in 0..n {
            let s = seal_block(&keys, &plain[i % plain.len()]).expect("seal");
            assert_eq!(s.tag, sealed[i % sealed.len()].tag);
        }
        println!(
            "seal {name} {:.0} ns/block",
            t.elapsed().as_nanos() as f64 / n as f64
        );
    }
}
