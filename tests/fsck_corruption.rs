//! fsck finds a flipped byte in a data chunk and in an index chunk, and a missing chunk;
//! reads of corrupted data fail instead of returning bytes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use mindcastle::{OpenOptions, Volume};

fn disk_with_data(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = common::new_disk(dir, 16 << 20);
    let vol = Volume::open(&path, &OpenOptions::default()).unwrap();
    let d = common::data(42, 8 << 20);
    vol.write_at(0, &d).unwrap();
    vol.close().unwrap();
    (path, d)
}

/// (data chunks, index chunks, root chunk) of the current root.
fn classify(path: &Path) -> (Vec<PathBuf>, Vec<PathBuf>, PathBuf) {
    let vol = Volume::open(
        path,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    let tree = vol.engine().unwrap().view().unwrap().tree;
    let dir = vol.data_dir().to_path_buf();
    let mut data = Vec::new();
    let mut index = Vec::new();
    for run in tree.runs() {
        index.extend(
            run.desc
                .index_chunks
                .iter()
                .map(|c| dir.join(c.0.file_name())),
        );
        data.extend(run.table.iter().map(|t| dir.join(t.id.file_name())));
    }
    let root = dir.join(vol.root_ref().unwrap().unwrap().id.file_name());
    (data, index, root)
}

fn flip(p: &Path, at: usize) {
    let mut b = std::fs::read(p).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x01;
    std::fs::write(p, b).unwrap();
}

fn fsck(path: &Path) -> (i32, String) {
    let o = common::run(&["fsck", path.to_str().unwrap()]);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

#[test]
fn clean_disk_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = disk_with_data(dir.path());
    let (code, out) = fsck(&path);
    assert_eq!((code, out.as_str()), (0, ""));
}

#[test]
fn flipped_byte_in_data_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = disk_with_data(dir.path());
    let (data, _, _) = classify(&path);
    let victim = &data[data.len() / 2];
    flip(victim, 1000);
    let (code, out) = fsck(&path);
    assert_eq!(code, 1, "{out}");
    let name = victim.file_stem().unwrap().to_str().unwrap();
    assert!(
        out.contains(name) && out.contains("do not match its name"),
        "{out}"
    );
    // Reading the disk must fail rather than return the corrupted block.
    let vol = Volume::open(&path, &OpenOptions::default()).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let err = vol.read_at(0, &mut buf).unwrap_err();
    assert!(err.to_string().contains("authentication failed"), "{err}");
}

/// fsck reads and hashes data chunks eight together, groups on several threads: two bad
/// ones among them are named, and none of the good ones beside them.
#[test]
fn two_flipped_chunks_among_good_ones_are_named_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::disk_of_chunks(dir.path(), 24, 0);
    let (data, _, _) = classify(&path);
    assert!(
        data.len() >= 16,
        "{} data chunks: too few to fill lanes",
        data.len()
    );
    let victims = [&data[1], &data[data.len() - 2]];
    for v in victims {
        flip(v, 5000);
    }
    let (code, out) = fsck(&path);
    assert_eq!(code, 1, "{out}");
    for v in victims {
        let name = v.file_stem().unwrap().to_str().unwrap();
        assert!(out.contains(name), "{name} not named in {out}");
    }
    for good in data.iter().filter(|d| !victims.contains(d)) {
        let name = good.file_stem().unwrap().to_str().unwrap();
        assert!(!out.contains(name), "good chunk {name} named in {out}");
    }
    assert_eq!(out.matches("do not match its name").count(), 2, "{out}");
    // Groups are checked on several threads and reported in order: the same report
    // every time.
    for _ in 0..3 {
        assert_eq!(fsck(&path), (code, out.clone()));
    }
}

#[test]
fn flipped_byte_in_index_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = disk_with_data(dir.path());
    let (_, index, _) = classify(&path);
    flip(&index[0], 100);
    let (code, out) = fsck(&path);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("index chunk") && out.contains("do not match its name"),
        "{out}"
    );
}

#[test]
fn missing_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = disk_with_data(dir.path());
    let (data, _, _) = classify(&path);
    std::fs::remove_file(&data[0]).unwrap();
    let (code, out) = fsck(&path);
    assert_eq!(code, 1, "{out}");
    let name = data[0].file_stem().unwrap().to_str().unwrap();
    assert!(
        out.lines()
            .any(|l| l.contains(name) && l.contains("No such file")),
        "{out}"
    );
}

#[test]
fn corrupted_root_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = disk_with_data(dir.path());
    let (_, _, root) = classify(&path);
    flip(&root, 5);
    let o = common::run(&["export", path.to_str().unwrap(), "/dev/null"]);
    assert_eq!(o.status.code(), Some(3), "corrupt exit code");
    assert!(String::from_utf8_lossy(&o.stderr).contains("contents do not match its name"));
}
