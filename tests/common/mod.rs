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
            ..Tuning::default()
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
/// A new disk of `mib` + 8 MiB holding `mib` writes of 1 MiB (seeds `seed..`), each
/// stored in a chunk of its own: enough chunks to fill SHA-512 lanes.
pub fn disk_of_chunks(dir: &Path, mib: u64, seed: u64) -> PathBuf {
    let path = new_disk(dir, (mib + 8) << 20);
    let vol = Volume::open(&path, &OpenOptions::default()).unwrap();
    for i in 0..mib {
        vol.write_at(i << 20, &data(seed + i, 1 << 20)).unwrap();
    }
    vol.close().unwrap();
    path
}

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
pub mod nbd;
pub mod proxy;
pub mod s3;
pub mod server;
pub mod vm;
pub mod web;

/// A writable copy of the disk the original C Mindcastle wrote
/// (`tests/fixtures/legacy-c`) in `dir`; returns its `.swap` file.
pub fn legacy_copy(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy-c");
    let st = Command::new("cp")
        .arg("-r")
        .arg(&src)
        .arg(dir)
        .status()
        .expect("cp");
    assert!(st.success(), "copying the legacy fixture");
    let copy = dir.join("legacy-c");
    let st = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&copy)
        .status()
        .expect("chmod");
    assert!(st.success());
    let swap = copy.join("legacy.swap");
    let st = Command::new("chmod")
        .arg("600")
        .arg(&swap)
        .status()
        .expect("chmod");
    assert!(st.success());
    swap
}

/// The first hex word of a line of a `sha256sum`-style file.
pub fn fixture_sha256(file: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/legacy-c")
        .join(file);
    std::fs::read_to_string(p)
        .expect("fixture sums")
        .split_whitespace()
        .next()
        .expect("a sum")
        .to_string()
}

/// SHA-256 of a file, by the system's sha256sum.
pub fn sha256_file(path: &Path) -> String {
    let o = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(o.status.success());
    String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// `sha256sum` of every file under `dir` (sorted), for "nothing changed" checks.
pub fn tree_sums(dir: &Path) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg("find . -type f | sort | xargs -r sha256sum; find . | sort")
        .current_dir(dir)
        .output()
        .expect("find");
    String::from_utf8_lossy(&o.stdout).into_owned()
}
