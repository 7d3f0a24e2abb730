//! Writing the same 64 MiB at a second offset of one disk grows the bytes on disk by
//! less than 10% of 64 MiB: content-defined chunks make the second copy's chunks equal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mindcastle::{OpenOptions, Volume};

#[test]
fn second_copy_costs_under_ten_percent() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), 256 << 20);
    let vol = Volume::open(&path, &OpenOptions::default()).unwrap();
    let d = common::data(7, 64 << 20);
    vol.write_at(0, &d).unwrap();
    vol.checkpoint().unwrap();
    let before = vol.info().unwrap().bytes_on_disk;
    vol.write_at(100 << 20, &d).unwrap();
    vol.checkpoint().unwrap();
    let info = vol.info().unwrap();
    let growth = info.bytes_on_disk - before;
    eprintln!("first copy {before} bytes on disk, second copy added {growth}");
    assert!(growth < (64 << 20) / 10, "second copy added {growth} bytes");
    assert_eq!(info.logical_bytes, 128 << 20);
    assert!(info.dedup_ratio > 1.8, "dedup ratio {}", info.dedup_ratio);
    let mut back = vec![0u8; 64 << 20];
    vol.read_at(100 << 20, &mut back).unwrap();
    assert!(back == d);
}
