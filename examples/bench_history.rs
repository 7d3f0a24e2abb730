//! History benchmark (run by `bench/history.sh`): how long `snapshot`, `clone` and
//! `reset` take on thin disks of different sizes holding the same data, and how long
//! `diff` takes with a given amount changed on a large disk. Times are of the library
//! calls (what the commands do after opening the disk), medians of 5.
//!
//! Usage: bench_history DIR [DATA_MIB] [DIFF_DISK_GIB] [DIFF_CHANGED_MIB]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Instant;

use mindcastle::{OpenOptions, Volume};

fn noise(seed: u64, len: usize) -> Vec<u8> {
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

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Writes `mib` MiB in 1 MiB pieces spread evenly over the disk.
fn spread(vol: &Volume, mib: u64, seed: u64) {
    let stride = (vol.size() / mib) & !4095;
    for i in 0..mib {
        vol.write_at(i * stride, &noise(seed + i, 1 << 20)).unwrap();
    }
    vol.flush().unwrap();
}

fn snapshot_clone_reset(dir: &Path, disk_gib: u64, data_mib: u64) {
    let swap = dir.join(format!("thin-{disk_gib}g.swap"));
    let vol = Volume::create(&swap, disk_gib << 30).unwrap();
    spread(&vol, data_mib, 1);
    vol.checkpoint().unwrap();
    let (mut snap, mut clone, mut reset) = (Vec::new(), Vec::new(), Vec::new());
    let mut idle = Vec::new();
    let mut last = None;
    for i in 0..5 {
        // Nothing written since the last checkpoint: the snapshot alone.
        let t = Instant::now();
        vol.snapshot_labeled(&format!("idle{i}"), "").unwrap();
        idle.push(ms(t));
        // A little new data each round, as between real snapshots.
        vol.write_at(i * 4096, &noise(100 + i, 4096)).unwrap();
        let t = Instant::now();
        let s = vol.snapshot_labeled(&format!("s{i}"), "").unwrap();
        snap.push(ms(t));
        let t = Instant::now();
        vol.clone_to(&s, &dir.join(format!("clone-{disk_gib}g-{i}.swap")))
            .unwrap();
        clone.push(ms(t));
        last = Some(s);
    }
    for _ in 0..5 {
        let t = Instant::now();
        vol.reset_to(last.as_ref().unwrap()).unwrap();
        reset.push(ms(t));
    }
    vol.close().unwrap();
    println!(
        "thin {disk_gib} GiB disk holding {data_mib} MiB: snapshot {:.1} ms ({:.1} ms with a 4 KiB write to checkpoint), clone {:.1} ms, reset {:.1} ms",
        median(idle),
        median(snap),
        median(clone),
        median(reset)
    );
}

fn diff(dir: &Path, disk_gib: u64, changed_mib: u64) {
    let swap = dir.join(format!("diff-{disk_gib}g.swap"));
    let vol = Volume::create(&swap, disk_gib << 30).unwrap();
    spread(&vol, changed_mib, 1);
    let a = vol.snapshot_labeled("a", "").unwrap();
    spread(&vol, changed_mib, 1_000_000);
    let b = vol.snapshot_labeled("b", "").unwrap();
    vol.close().unwrap();
    let vol = Volume::open(
        &swap,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mut times = Vec::new();
    let mut blocks = 0;
    for _ in 0..5 {
        let t = Instant::now();
        blocks = vol.diff_blocks(&a, Some(&b)).unwrap().len();
        times.push(ms(t));
    }
    println!(
        "diff on a {disk_gib} GiB disk, {changed_mib} MiB changed: {:.0} ms ({} MiB found)",
        median(times),
        (blocks * 4096) >> 20
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(args.get(1).map_or("/tmp/mindcastle-history-bench", |s| s));
    let data_mib: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let diff_gib: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(2048);
    let diff_mib: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    snapshot_clone_reset(dir, 1024, data_mib);
    snapshot_clone_reset(dir, 10, data_mib);
    diff(dir, diff_gib, diff_mib);
}
