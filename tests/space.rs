//! Overwritten data gives its space back: chunks that mostly hold dead records are
//! rewritten at bottom-level merges, so repeated random overwrites keep the bytes on
//! disk near the live data instead of growing with every write.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mindcastle::Volume;

#[test]
fn random_overwrites_do_not_grow_the_disk_without_bound() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16u64 << 20;
    let path = common::new_disk(dir.path(), size);
    let vol = Volume::open(&path, &common::small()).unwrap();
    let mut model = common::data(1, size as usize);
    vol.write_at(0, &model).unwrap();
    let mut x: u64 = 99;
    for round in 0..12u64 {
        for i in 0..1024u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let lba = x % (size / 4096);
            let d = common::data(round * 10_000 + i, 4096);
            vol.write_at(lba * 4096, &d).unwrap();
            model[(lba * 4096) as usize..(lba * 4096 + 4096) as usize].copy_from_slice(&d);
        }
        vol.checkpoint().unwrap();
    }
    let info = vol.info().unwrap();
    let amp = info.bytes_on_disk as f64 / info.stored_record_bytes as f64;
    eprintln!("bytes on disk / live record bytes after 12 overwrite rounds: {amp:.2}");
    assert!(amp < 2.0, "space amplification {amp:.2}");
    let mut back = vec![0u8; size as usize];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == model);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
}
