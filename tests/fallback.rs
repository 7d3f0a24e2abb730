//! Folder fallbacks and the cache: a `.swap` copy pointing at another disk's chunk
//! folder reads it, writes stay local, the cache keeps what was fetched, and a damaged
//! mirror is passed over. (URL fallbacks: tests/remote.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use mindcastle::{ErrorKind, OpenOptions, Volume};

const SIZE: u64 = 8 << 20;

fn dir_listing(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".lvl"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Moves disk `a`'s data folder to `to`, as publishing it does; returns `to`.
fn move_data_folder(a: &std::path::Path, to: std::path::PathBuf) -> std::path::PathBuf {
    let src = mindcastle::volume::data_dir(a, &mindcastle::volume::read_swap(a).unwrap());
    std::fs::rename(&src, &to).unwrap();
    to
}

#[test]
fn a_copy_with_a_folder_fallback_reads_the_published_disk_and_writes_locally() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::new_disk(dir.path(), SIZE);
    let vol = Volume::open(&a, &common::small()).unwrap();
    let d = common::data(7, 3 << 20);
    vol.write_at(4096, &d).unwrap();
    vol.close().unwrap();
    let published = move_data_folder(&a, dir.path().join("published"));
    let before = dir_listing(&published);
    // Host B: the .swap with a fallback= line, an empty data folder of its own, a cache.
    let b = dir.path().join("b.swap");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(
        &b,
        format!("{text}fallback=published\ncache=cache\ncachesize=64M\n"),
    )
    .unwrap();
    let vol = Volume::open(&b, &common::small()).unwrap();
    let mut back = vec![0u8; d.len()];
    vol.read_at(4096, &mut back).unwrap();
    assert!(back == d, "read through the fallback differs");
    assert!(
        !dir_listing(&dir.path().join("cache")).is_empty(),
        "nothing cached"
    );
    vol.write_at(0, &common::data(8, 8192)).unwrap();
    vol.close().unwrap();
    assert_eq!(
        dir_listing(&published),
        before,
        "the published folder changed"
    );
    // Reopened, it reads its own write and the published bytes.
    let vol = Volume::open(&b, &OpenOptions::default()).unwrap();
    let mut all = vec![0u8; 4096 + d.len()];
    vol.read_at(0, &mut all).unwrap();
    let mut want = common::data(8, 8192);
    want.extend_from_slice(&d[4096..]);
    assert!(all == want);
    drop(vol);
    let out = common::run(&["fsck", b.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
}

/// A copy of every file of `from` in a new folder `to` (a mirror of a published disk).
fn copy_folder(from: &std::path::Path, to: std::path::PathBuf) -> std::path::PathBuf {
    std::fs::create_dir(&to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

/// Flips one byte in the middle of every data-sized chunk file of `dir` (the chunk
/// keeps its name: a bad copy, as a broken mirror would serve).
fn damage_chunks(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "lvl") {
            let mut b = std::fs::read(&p).unwrap();
            let mid = b.len() / 2;
            b[mid] ^= 0x20;
            std::fs::write(&p, b).unwrap();
            n += 1;
        }
    }
    n
}

#[test]
fn a_bad_copy_in_the_first_fallback_is_passed_over_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::new_disk(dir.path(), SIZE);
    let vol = Volume::open(&a, &common::small()).unwrap();
    let d = common::data(9, 2 << 20);
    vol.write_at(0, &d).unwrap();
    vol.close().unwrap();
    let good = move_data_folder(&a, dir.path().join("good"));
    let bad = copy_folder(&good, dir.path().join("bad"));
    // At least a data chunk, an index chunk and a root, each damaged (how many data
    // chunks 2 MiB makes depends on the key's cut points).
    assert!(damage_chunks(&bad) >= 3);
    let text = std::fs::read_to_string(&a).unwrap();
    // Bad first, good second; with and without a cache in front of them.
    for (name, extra) in [("nocache", ""), ("cached", "cache=cache\n")] {
        let b = dir.path().join(format!("{name}.swap"));
        std::fs::write(
            &b,
            format!("{text}swapdata=data-{name}\nfallback=bad\nfallback=good\n{extra}"),
        )
        .unwrap();
        let vol = Volume::open(&b, &OpenOptions::default()).unwrap();
        let mut back = vec![0u8; d.len()];
        vol.read_at(0, &mut back).unwrap();
        assert!(back == d, "{name}: wrong data");
    }
    // With only the bad copy, reads fail; nothing wrong is returned.
    let b = dir.path().join("onlybad.swap");
    std::fs::write(&b, format!("{text}swapdata=data-onlybad\nfallback=bad\n")).unwrap();
    match Volume::open(&b, &OpenOptions::default()) {
        Err(e) => assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}"),
        Ok(vol) => {
            let mut back = vec![0u8; d.len()];
            let err = vol.read_at(0, &mut back).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
        }
    }
}

#[test]
fn pull_of_one_snapshot_fetches_what_it_needs_and_not_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::new_disk(dir.path(), SIZE);
    let old = common::data(21, 2 << 20);
    let new = common::data(22, 2 << 20);
    let vol = Volume::open(&a, &OpenOptions::default()).unwrap();
    vol.write_at(0, &old).unwrap();
    vol.snapshot_labeled("s1", "before").unwrap();
    vol.write_at(0, &new).unwrap();
    vol.close().unwrap();
    let published = move_data_folder(&a, dir.path().join("published"));
    let b = dir.path().join("b.swap");
    let text = std::fs::read_to_string(&a).unwrap();
    std::fs::write(&b, format!("{text}fallback=published\n")).unwrap();
    let s = |p: &std::path::Path| p.to_str().unwrap().to_owned();

    let out = common::run(&["pull", "--json", "--snapshot", "s1", &s(&b)]);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (chunks, copied) = (j["chunks"].as_u64().unwrap(), j["copied"].as_u64().unwrap());
    assert!(chunks > 0 && copied == chunks, "{j}");
    // Offline: the snapshot reads back whole; the head's data was not fetched.
    let away = dir.path().join("away");
    std::fs::rename(&published, &away).unwrap();
    let log = common::run(&["log", &s(&b)]);
    assert!(log.status.success(), "{log:?}");
    assert!(String::from_utf8_lossy(&log.stdout).contains("s1"));
    let snap = dir.path().join("s1.raw");
    let out = common::run(&["export", "--snapshot", "s1", &s(&b), &s(&snap)]);
    assert!(out.status.success(), "{out:?}");
    let mut want = old.clone();
    want.resize(SIZE as usize, 0);
    assert!(std::fs::read(&snap).unwrap() == want, "snapshot differs");
    let head = dir.path().join("head.raw");
    let out = common::run(&["export", &s(&b), &s(&head)]);
    assert!(
        !out.status.success(),
        "the head's data should be missing: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("chunk"),
        "{out:?}"
    );
    // A whole pull then makes the head readable offline too.
    std::fs::rename(&away, &published).unwrap();
    let out = common::run(&["pull", "--json", &s(&b)]);
    assert!(out.status.success(), "{out:?}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["present"].as_u64().unwrap(), copied, "{j}");
    std::fs::rename(&published, &away).unwrap();
    let out = common::run(&["export", "--force", &s(&b), &s(&head)]);
    assert!(out.status.success(), "{out:?}");
    let mut want = new.clone();
    want.resize(SIZE as usize, 0);
    assert!(std::fs::read(&head).unwrap() == want, "head differs");
    let out = common::run(&["pull", "--snapshot", "nope", &s(&b)]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
}

/// fsck reads a fallback's chunks eight at a time (hashed together in SHA-512 lanes):
/// with every copy in the first fallback damaged, each chunk is taken from the next
/// one and the disk is clean; with only the damaged copies, fsck fails and names them.
#[test]
fn fsck_through_a_damaged_then_a_good_fallback_checks_every_chunk_from_the_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let a = common::disk_of_chunks(dir.path(), 16, 100);
    let good = move_data_folder(&a, dir.path().join("good"));
    let bad = copy_folder(&good, dir.path().join("bad"));
    let damaged = damage_chunks(&bad);
    assert!(damaged >= 16, "{damaged} chunks damaged");
    let text = std::fs::read_to_string(&a).unwrap();
    let b = swap_of(dir.path(), "both", &text, "fallback=bad\nfallback=good\n");
    let out = common::run(&["fsck", "--json", b.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        report["problems"].as_array().map(Vec::len),
        Some(0),
        "{stdout}"
    );
    assert!(report["chunks_checked"].as_u64().unwrap() >= 16, "{stdout}");
    // Only the damaged copies: fsck fails, naming chunks that do not match.
    let only = swap_of(dir.path(), "onlybad", &text, "fallback=bad\n");
    let out = common::run(&["fsck", only.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
}

/// Writes `NAME.swap` in `dir`: the disk of `text` over data folder `data-NAME`, with
/// `lines` (fallbacks, cache) after it.
fn swap_of(dir: &std::path::Path, name: &str, text: &str, lines: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.swap"));
    std::fs::write(&p, format!("{text}swapdata=data-{name}\n{lines}")).unwrap();
    p
}

/// A disk of `mib` MiB of `common::data` chunks from `seed`, and those bytes.
fn disk_and_data(dir: &std::path::Path, mib: u64, seed: u64) -> (std::path::PathBuf, Vec<u8>) {
    let a = common::disk_of_chunks(dir, mib, seed);
    let want = (0..mib)
        .flat_map(|i| common::data(seed + i, 1 << 20))
        .collect();
    (a, want)
}

/// Reads the disk of `text` from its data folder `swapdata` alone (no fallback, no
/// cache) and checks it holds `want` and passes fsck.
fn reads_alone(dir: &std::path::Path, text: &str, swapdata: &str, want: &[u8]) {
    let alone = dir.join(format!("{swapdata}-alone.swap"));
    std::fs::write(&alone, format!("{text}swapdata={swapdata}\n")).unwrap();
    let vol = Volume::open(&alone, &OpenOptions::default()).unwrap();
    let mut back = vec![0u8; want.len()];
    vol.read_at(0, &mut back).unwrap();
    assert!(back == want, "{swapdata}: the data differs");
    vol.close().unwrap();
    let o = common::run(&["fsck", alone.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
}

/// `pull` through a damaged mirror listed before a good one takes every chunk from the
/// good one (chunks are read and checked in groups, each group asking the next source
/// for what the first could not give whole); with only the damaged mirror it fails,
/// naming a chunk, and stores no chunk under a name its bytes do not have.
#[test]
fn pull_through_a_damaged_then_a_good_fallback_takes_every_chunk_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (a, want) = disk_and_data(dir.path(), 20, 300);
    let good = move_data_folder(&a, dir.path().join("good"));
    let bad = copy_folder(&good, dir.path().join("bad"));
    assert!(damage_chunks(&bad) >= 16);
    let text = std::fs::read_to_string(&a).unwrap();
    let hashes_to_its_name = |f: &std::path::Path| {
        let id = mindcastle::format::chunk_id::ChunkId::of(&std::fs::read(f).unwrap());
        f.file_name().unwrap().to_string_lossy() == id.file_name()
    };
    let b = swap_of(dir.path(), "both", &text, "fallback=bad\nfallback=good\n");
    let out = common::run(&["pull", "--json", b.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let local = common::chunk_files(&b);
    assert_eq!(t["copied"].as_u64(), Some(local.len() as u64), "{t}");
    assert!(local.len() >= 16, "{t}");
    for f in &local {
        assert!(hashes_to_its_name(f), "{} was pulled damaged", f.display());
    }
    // Both mirrors gone: the disk reads whole from its own folder.
    reads_alone(dir.path(), &text, "data-both", &want);
    // Only the damaged mirror: the pull fails on a chunk, and keeps nothing damaged.
    let only = swap_of(dir.path(), "onlybad", &text, "fallback=bad\n");
    let out = common::run(&["pull", only.to_str().unwrap()]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("do not match its name"), "{err}");
    for f in common::chunk_files(&only) {
        assert!(hashes_to_its_name(&f), "{} was pulled damaged", f.display());
    }
}

/// `pull` through `cache=` takes what the cache holds from it and the rest from the
/// fallback, and keeps nothing more in the cache: the pulled chunks live in the data
/// folder, and a second copy in the cache would only take space.
#[test]
fn pull_through_a_cache_takes_its_chunks_and_adds_none_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, want) = disk_and_data(dir.path(), 12, 500);
    let published = move_data_folder(&a, dir.path().join("pub"));
    let text = std::fs::read_to_string(&a).unwrap();
    let b = swap_of(dir.path(), "b", &text, "fallback=pub\ncache=cache\n");
    // A reader fills the cache with the chunks behind the first 3 MiB.
    {
        let vol = Volume::open(&b, &OpenOptions::default()).unwrap();
        let mut head = vec![0u8; 3 << 20];
        vol.read_at(0, &mut head).unwrap();
        assert!(head[..] == want[..3 << 20]);
        vol.close().unwrap();
    }
    let cache = dir.path().join("cache");
    let cached = dir_listing(&cache);
    assert!(!cached.is_empty(), "the read kept nothing in the cache");
    // Those are only in the cache now: the pull must take them from there.
    for (name, _) in &cached {
        let _ = std::fs::remove_file(published.join(name));
    }
    let out = common::run(&["pull", "--json", b.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let t: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(t["copied"].as_u64().unwrap() > cached.len() as u64, "{t}");
    assert_eq!(dir_listing(&cache), cached, "the pull changed the cache");
    // Fallback and cache gone: the data folder holds the disk.
    reads_alone(dir.path(), &text, "data-b", &want);
}
