//! Shared test harness: temporary disks, deterministic data, the CLI binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mindcastle::volume::Tuning;
use mindcastle::{OpenOptions, Volume};

/// Small memtable and levels so a few MiB of writes exercise checkpoints and merges.
pub fn small() -> OpenOptions {
    OpenOptions {
        tuning: Tuning {
            memtable_entries: 64,
            level_base: 128,
        },
        ..Default::default()
    }
}

/// A new disk of `size` bytes in `dir`, closed; returns its `.swap` path.
pub fn new_disk(dir: &Path, size: u64) -> PathBuf {
    let p = dir.join("t.swap");
    Volume::create(&p, size)
        .expect("create")
        .close()
        .expect("close");
    p
}

/// Deterministic bytes, roughly half compressible.
pub fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        // Every other 8-byte word is a short repeating pattern: compressible.
        if (out.len() / 8) % 2 == 0 {
            out.extend_from_slice(&b);
        } else {
            out.extend_from_slice(&[(seed as u8) ^ 0x5a; 8]);
        }
    }
    out.truncate(len);
    out
}

/// Incompressible deterministic bytes (xorshift), so a disk really fills.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The mindcastle binary.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mindcastle"))
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run mindcastle")
}

/// Chunk files in a disk's data folder.
pub fn chunk_files(swap: &Path) -> Vec<PathBuf> {
    let s = mindcastle::volume::read_swap(swap).expect("swap");
    let dir = mindcastle::volume::data_dir(swap, &s);
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("data dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "lvl"))
        .collect();
    v.sort();
    v
}
pub mod proxy;
pub mod server;
pub mod vm;
