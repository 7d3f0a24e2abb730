//! Overwritten data gives its space back: chunks that mostly hold dead records are
//! rewritten at bottom-level merges, so repeated random overwrites keep the bytes on
//! disk near the live data instead of growing with every write; compaction (called, or
//! by itself once the disk is idle) merges every level and brings them to it.
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
            write_block(
                &vol,
                &mut model,
                lba,
                &common::data(round * 10_000 + i, 4096),
            );
        }
        vol.checkpoint().unwrap();
    }
    let info = vol.info().unwrap();
    let amp = info.bytes_on_disk as f64 / info.stored_record_bytes as f64;
    eprintln!("bytes on disk / live record bytes after 12 overwrite rounds: {amp:.2}");
    assert!(amp < 2.0, "space amplification {amp:.2}");
    assert_reads(&vol, &model);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
}

/// Writes the whole disk four times over in 1 MiB pieces, checkpointing as it goes, so
/// most of what the levels name is dead until they are merged; returns the model.
fn overwrite_four_times(vol: &Volume, size: u64, seed: u64) -> Vec<u8> {
    let mut model = vec![0u8; size as usize];
    for round in 0..4u64 {
        for piece in 0..size >> 20 {
            let d = common::data(seed + round * 100 + piece, 1 << 20);
            let at = (piece << 20) as usize;
            vol.write_at(at as u64, &d).unwrap();
            model[at..at + (1 << 20)].copy_from_slice(&d);
            if piece % 4 == 3 {
                vol.checkpoint().unwrap();
            }
        }
    }
    model
}

/// Bytes on disk per byte of live records.
fn ratio(i: &mindcastle::volume::stats::Info) -> f64 {
    i.bytes_on_disk as f64 / i.stored_record_bytes as f64
}

/// Writes `d` to block `lba` of the disk and of its model.
fn write_block(vol: &Volume, model: &mut [u8], lba: u64, d: &[u8]) {
    vol.write_at(lba * 4096, d).unwrap();
    model[(lba * 4096) as usize..(lba * 4096 + 4096) as usize].copy_from_slice(d);
}

/// Overwrites the blocks `pick` chooses with data numbered from `seed`, then checkpoints.
fn overwrite_blocks(vol: &Volume, model: &mut [u8], seed: u64, pick: impl Fn(u64) -> bool) {
    let blocks = model.len() as u64 / 4096;
    for lba in (0..blocks).filter(|&b| pick(b)) {
        write_block(vol, model, lba, &common::data(seed + lba, 4096));
    }
    vol.checkpoint().unwrap();
}

/// Asserts the whole disk reads back as `model`.
fn assert_reads(vol: &Volume, model: &[u8]) {
    let mut back = vec![0u8; model.len()];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == model, "the disk does not read back as its model");
}

/// Waits, 30 s at most, for the idle background compaction to bring bytes on disk per
/// live byte under `below`; says how it went.
fn wait_for_idle_compaction(vol: &Volume, below: f64, what: &str) {
    let amp = || ratio(&vol.info().unwrap());
    let before = amp();
    let t = std::time::Instant::now();
    while amp() >= below {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "no compaction of {what} after 30 s idle ({before:.2} -> {:.2})",
            amp()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    eprintln!(
        "idle compaction of {what}: {before:.2} -> {:.2} after {:?}",
        amp(),
        t.elapsed()
    );
}

#[test]
fn compaction_gives_back_the_space_of_overwritten_data() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16u64 << 20;
    let path = common::new_disk(dir.path(), size);
    let vol = Volume::open(&path, &common::small()).unwrap();
    let model = overwrite_four_times(&vol, size, 0);
    let before = vol.info().unwrap();
    vol.compact().unwrap();
    let after = vol.info().unwrap();
    let amp = |i: &mindcastle::volume::stats::Info| ratio(i);
    eprintln!(
        "bytes on disk / live record bytes: {:.2} before compaction, {:.2} after",
        amp(&before),
        amp(&after)
    );
    assert!(amp(&after) < 1.1, "after compaction {:.2}", amp(&after));
    assert!(after.bytes_on_disk < before.bytes_on_disk);
    assert_reads(&vol, &model);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
    // And after reopening.
    vol.close().unwrap();
    let vol = Volume::open(&path, &common::small()).unwrap();
    assert_reads(&vol, &model);
}

#[test]
fn an_idle_disk_compacts_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16u64 << 20;
    let path = common::new_disk(dir.path(), size);
    let vol = Volume::open(&path, &common::small()).unwrap();
    let model = overwrite_four_times(&vol, size, 7);
    // Writes have stopped: within a few idle seconds the background thread merges.
    wait_for_idle_compaction(&vol, 1.1, "levels");
    assert_reads(&vol, &model);
}

/// A tree of one run is what random writes leave when their last checkpoint merged into
/// the bottom level: that merge rewrote only chunks less than half live, so an idle
/// compaction still has the ones between a half and three quarters to give back.
#[test]
fn an_idle_disk_of_one_run_compacts_too() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16u64 << 20;
    let path = common::new_disk(dir.path(), size);
    // Level 0 never fills, so every checkpoint merges into it, the bottom level.
    let mut opts = common::small();
    opts.tuning.level_base = 1 << 40;
    let vol = Volume::open(&path, &opts).unwrap();
    let mut model = common::data(3, size as usize);
    vol.write_at(0, &model).unwrap();
    vol.checkpoint().unwrap();
    // Overwrite two blocks in five, six times (enough entries written for an idle
    // compaction): every first-written chunk stays about 60% live.
    let blocks = size / 4096;
    for round in 0..6u64 {
        overwrite_blocks(&vol, &mut model, 1_000_000 + round * blocks, |b| {
            b % 5 == 0 || b % 5 == 2
        });
    }
    let levels = vol.info().unwrap().levels.len();
    assert_eq!(levels, 1, "the test needs a tree of one run");
    let before = ratio(&vol.info().unwrap());
    assert!(
        before > 1.3,
        "expected 60%-live chunks, amplification {before:.2}"
    );
    wait_for_idle_compaction(&vol, 1.15, "a one-run tree");
    assert_reads(&vol, &model);
    vol.close().unwrap();
    let vol = Volume::open(&path, &common::small()).unwrap();
    assert_reads(&vol, &model);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
}

/// Bytes of the chunk files in a disk's data folder.
fn folder_bytes(vol: &Volume) -> u64 {
    std::fs::read_dir(vol.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().len() >= 64)
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

/// A kept snapshot holds the chunks the head overwrote: rewriting their live records
/// would free nothing and store them twice. Forgetting the snapshot lets them go.
#[test]
fn compaction_never_copies_what_a_kept_snapshot_holds() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16u64 << 20;
    let path = common::new_disk(dir.path(), size);
    let vol = Volume::open(&path, &common::small()).unwrap();
    let original = common::data(5, size as usize);
    vol.write_at(0, &original).unwrap();
    let snap = vol.snapshot().unwrap();
    vol.compact().unwrap();
    // Overwrite three blocks in ten: every chunk of the original is 70% live in the
    // head (rewritten at a compaction if nothing else held it) and whole in the snapshot.
    let model = overwrite_three_in_ten(&vol, &original);
    let before = folder_bytes(&vol);
    vol.compact().unwrap();
    let after = folder_bytes(&vol);
    eprintln!("data folder with a kept snapshot: {before} -> {after} bytes at compaction");
    assert!(
        after <= before + before / 20,
        "compaction copied what the snapshot holds: {before} -> {after} bytes"
    );
    assert_reads(&vol, &model);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
    // Without the snapshot the same compaction gives the overwritten space back.
    vol.forget_snapshot(&snap.id).unwrap();
    vol.compact().unwrap();
    let freed = folder_bytes(&vol);
    eprintln!("after forgetting it: {freed} bytes");
    assert!(freed < before * 9 / 10, "{before} -> {freed} bytes");
    assert_reads(&vol, &model);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
}

/// Overwrites three blocks in ten of `vol`, which holds `original` (every chunk of the
/// original 70% live afterwards); returns the model of `vol`.
fn overwrite_three_in_ten(vol: &Volume, original: &[u8]) -> Vec<u8> {
    let mut model = original.to_vec();
    overwrite_blocks(vol, &mut model, 3_000_000, |b| b % 10 < 3);
    model
}

/// A new 16 MiB disk in `dir` written whole with data numbered `seed`, then compacted
/// to one run: (its `.swap` path, the open disk, what it holds).
fn one_run_disk(dir: &std::path::Path, seed: u64) -> (std::path::PathBuf, Volume, Vec<u8>) {
    let size = 16u64 << 20;
    let path = common::new_disk(dir, size);
    let vol = Volume::open(&path, &common::small()).unwrap();
    let original = common::data(seed, size as usize);
    vol.write_at(0, &original).unwrap();
    vol.compact().unwrap();
    (path, vol, original)
}

/// Chunks nine tenths live are above the seven eighths a compaction copies by
/// itself, but a disk made of them holds a tenth of its live bytes dead: compaction
/// goes on (sparsest first, up to fifteen sixteenths live) until at most 1/32 is.
#[test]
fn compaction_brings_dead_bytes_under_a_thirty_second_of_the_live() {
    let dir = tempfile::tempdir().unwrap();
    let (path, vol, original) = one_run_disk(dir.path(), 17);
    let mut model = original.clone();
    overwrite_blocks(&vol, &mut model, 4_000_000, |b| b % 10 == 4);
    let before = vol.info().unwrap();
    let dead = |i: &mindcastle::volume::stats::Info| {
        folder_bytes(&vol).saturating_sub(i.stored_record_bytes) as f64
            / i.stored_record_bytes as f64
    };
    let dead_before = dead(&before);
    vol.compact().unwrap();
    let after = vol.info().unwrap();
    let dead_after = dead(&after);
    eprintln!("dead (and index) bytes per live byte: {dead_before:.3} -> {dead_after:.3}");
    assert!(
        dead_before > 0.09,
        "expected a tenth dead, {dead_before:.3}"
    );
    // 1/32 dead, plus the index chunks (under 1% here).
    assert!(dead_after < 0.045, "after compaction {dead_after:.3}");
    assert_reads(&vol, &model);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
    vol.close().unwrap();
    let vol = Volume::open(&path, &common::small()).unwrap();
    assert_reads(&vol, &model);
}

/// A clone's chunks are hard links to its source's: rewriting them in the clone frees
/// nothing while the source keeps its name, so compaction leaves them.
#[test]
fn compaction_never_copies_chunks_a_clone_shares() {
    let dir = tempfile::tempdir().unwrap();
    let (_, src, original) = one_run_disk(dir.path(), 11);
    let clone = dir.path().join("clone.swap");
    src.clone_to(&src.root_ref().unwrap().unwrap(), &clone)
        .unwrap();
    let vol = Volume::open(&clone, &common::small()).unwrap();
    let model = overwrite_three_in_ten(&vol, &original);
    // What the two folders take on the file system: each file once, however many names.
    let on_disk = || {
        use std::os::unix::fs::MetadataExt;
        let mut seen = std::collections::HashSet::new();
        [src.data_dir(), vol.data_dir()]
            .iter()
            .flat_map(|d| std::fs::read_dir(d).unwrap().filter_map(|e| e.ok()))
            .filter(|e| e.file_name().len() >= 64)
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file() && seen.insert(m.ino()))
            .map(|m| m.len())
            .sum::<u64>()
    };
    let before = on_disk();
    vol.compact().unwrap();
    let after = on_disk();
    eprintln!("source and clone together: {before} -> {after} bytes at the clone's compaction");
    assert!(
        after <= before + before / 20,
        "compaction copied chunks the source still holds: {before} -> {after} bytes"
    );
    assert_reads(&vol, &model);
    assert_reads(&src, &original);
    assert!(vol.fsck(&|_| {}).unwrap().problems.is_empty());
}

/// A disk read through `fallback=` (a published folder) does not own the published
/// chunks: compaction must not copy them into its own folder.
#[test]
fn compaction_never_copies_a_fallbacks_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let (a, vol, original) = one_run_disk(dir.path(), 13);
    let size = original.len() as u64;
    vol.close().unwrap();
    let data = mindcastle::volume::data_dir(&a, &mindcastle::volume::read_swap(&a).unwrap());
    std::fs::rename(&data, dir.path().join("published")).unwrap();
    let b = dir.path().join("b.swap");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(&b, format!("{text}fallback=published\n")).unwrap();
    let vol = Volume::open(&b, &common::small()).unwrap();
    let model = overwrite_three_in_ten(&vol, &original);
    let before = folder_bytes(&vol);
    vol.compact().unwrap();
    let after = folder_bytes(&vol);
    eprintln!("local data folder over a fallback: {before} -> {after} bytes at compaction");
    assert!(
        after <= before + (size / 20),
        "compaction copied the fallback's chunks: {before} -> {after} bytes"
    );
    assert_reads(&vol, &model);
    vol.close().unwrap();
    let vol = Volume::open(&b, &common::small()).unwrap();
    assert_reads(&vol, &model);
}
