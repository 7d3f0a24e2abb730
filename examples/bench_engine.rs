//! Engine benchmark (run by `bench/engine.sh`): import and export throughput of a
//! half-compressible image, bytes on disk per logical byte, and write amplification of
//! 4 KiB random writes (bytes this process wrote, from /proc/self/io `wchar`, per
//! logical byte written).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

use mindcastle::{OpenOptions, Volume};

fn data(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if (out.len() / 8) % 2 == 0 {
            out.extend_from_slice(&x.to_le_bytes());
        } else {
            out.extend_from_slice(&[0x5a; 8]);
        }
    }
    out
}

fn wchar() -> u64 {
    let s = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("wchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn main() {
    let gib: u64 = std::env::var("BENCH_MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1024);
    let total = gib << 20;
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/mindcastle-bench".into());
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = std::path::Path::new(&dir).join("bench.swap");
    Volume::create(&path, total * 2).unwrap().close().unwrap();
    let vol = Volume::open(&path, &OpenOptions::default()).unwrap();
    let step = 4 << 20;
    let pieces: Vec<Vec<u8>> = (0..4).map(|i| data(i + 1, step)).collect();

    let t = Instant::now();
    let w0 = wchar();
    let mut off = 0;
    let mut i = 0u64;
    while off < total {
        // Vary content per piece so nothing dedups: xor a counter into the first bytes.
        let mut p = pieces[(i % 4) as usize].clone();
        for (k, b) in p.iter_mut().step_by(4096).enumerate() {
            *b ^= (i as u8).wrapping_add(k as u8);
            *b = b.wrapping_add((i >> 2) as u8);
        }
        vol.write_at(off, &p).unwrap();
        off += step as u64;
        i += 1;
    }
    vol.flush().unwrap();
    vol.checkpoint().unwrap();
    let import_s = t.elapsed().as_secs_f64();
    let import_written = wchar() - w0;

    let t = Instant::now();
    let mut buf = vec![0u8; step];
    let mut off = 0;
    while off < total {
        vol.read_at(off, &mut buf).unwrap();
        off += step as u64;
    }
    let export_s = t.elapsed().as_secs_f64();
    let info = vol.info().unwrap();

    // 4 KiB random writes over the imported range, a flush every 32 writes.
    let n: u64 = 65536;
    let block = data(99, 4096);
    let w0 = wchar();
    let t = Instant::now();
    let mut x: u64 = 12345;
    for k in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let lba = x % (total / 4096);
        let mut b = block.clone();
        b[..8].copy_from_slice(&k.to_le_bytes());
        vol.write_at(lba * 4096, &b).unwrap();
        if k % 32 == 31 {
            vol.flush().unwrap();
        }
    }
    vol.checkpoint().unwrap();
    let rw_s = t.elapsed().as_secs_f64();
    let rw_written = wchar() - w0;
    let after = vol.info().unwrap();
    vol.close().unwrap();

    let mb = total as f64 / 1e6;
    println!("image: {} MiB, half-compressible", gib);
    println!(
        "import:            {:8.1} MB/s  ({:.2} s)",
        mb / import_s,
        import_s
    );
    println!(
        "export (read):     {:8.1} MB/s  ({:.2} s)",
        mb / export_s,
        export_s
    );
    println!(
        "on disk / logical: {:8.3}  ({} / {} bytes; compression {:.2}x)",
        info.bytes_on_disk as f64 / info.logical_bytes as f64,
        info.bytes_on_disk,
        info.logical_bytes,
        info.compression_ratio
    );
    println!(
        "import write amp:  {:8.3}  (bytes written / logical)",
        import_written as f64 / total as f64
    );
    println!(
        "4K random writes:  {:8.0} IOPS, write amplification {:.3} (incl. log, chunks, index, roots)",
        n as f64 / rw_s,
        rw_written as f64 / (n * 4096) as f64
    );
    println!(
        "after random writes: on disk / logical {:.3}",
        after.bytes_on_disk as f64 / after.logical_bytes as f64
    );
}
