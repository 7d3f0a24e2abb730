//! Disks written by the original C Mindcastle (`tests/fixtures/legacy-c`, a 64 MiB ext4
//! disk the original wrote): read as the original read them, converted, refused where
//! only a v1 disk will do, damage reported by chunk, and the two formats never taken
//! for each other.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::server::{have, tool_ok, Server};
use common::{fixture_sha256, legacy_copy, run, sha256_file, tree_sums};
use mindcastle::volume::DiskFormat;
use mindcastle::{ErrorKind, OpenOptions, Volume};

/// The tree chunk named by the fixture's `snapshot=` (its only level).
const TREE: &str = "c9c1b69a6d48ccddca149e54b14409cd85de7d80cc87c6899bfce58c7a2c4956";
/// The data chunk holding the records of the first blocks.
const FIRST_DATA: &str = "a0698d971270cb1b4602a62821fd0d16013247675f1bd20b44401e270b0d618f";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_only() -> OpenOptions {
    OpenOptions {
        read_only: true,
        ..Default::default()
    }
}

#[test]
fn export_reads_every_byte_as_the_original_did_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let swap = legacy_copy(dir.path());
    let folder = swap.parent().unwrap().to_path_buf();
    let before = tree_sums(&folder);
    let img = dir.path().join("disk.img");
    let o = run(&["export", s(&swap), s(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256_file(&img), fixture_sha256("EXPECTED.sha256"));
    assert_eq!(
        tree_sums(&folder),
        before,
        "export changed the original's folder"
    );
}

#[test]
fn convert_copies_every_block_keeps_holes_and_leaves_the_source_alone() {
    let dir = tempfile::tempdir().unwrap();
    let swap = legacy_copy(dir.path());
    let folder = swap.parent().unwrap().to_path_buf();
    let before = tree_sums(&folder);
    let new = dir.path().join("new.swap");
    let o = run(&["convert", "--json", s(&swap), s(&new)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["blocks"], 16384, "{report}");
    assert_eq!(report["size"], 64u64 << 20);
    assert_eq!(tree_sums(&folder), before, "convert changed the source");
    assert!(!dir.path().join("new.swap.converting").exists());

    let img = dir.path().join("new.img");
    assert!(run(&["export", s(&new), s(&img)]).status.success());
    assert_eq!(sha256_file(&img), fixture_sha256("EXPECTED.sha256"));
    let f = run(&["fsck", "--json", s(&new)]);
    assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stdout));
    let fsck: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
    assert_eq!(fsck["problems"], serde_json::json!([]), "{fsck}");
    assert!(fsck["records_checked"].as_u64().unwrap() > 1000, "{fsck}");

    // The new disk is a v1 disk with a new key; zero blocks are stored as nothing.
    let old = mindcastle::volume::read_swap(&swap).unwrap();
    let conv = mindcastle::volume::read_swap(&new).unwrap();
    assert_ne!(old.key, conv.key, "the default is a new key");
    assert_ne!(old.uuid, conv.uuid);
    let v = Volume::open(&new, &read_only()).unwrap();
    assert_eq!(v.format(), DiskFormat::V1);
    let zeros = report["zero_blocks"].as_u64().unwrap();
    let ext = v.block_status(0, 64 << 20).unwrap();
    let allocated: u64 = ext.iter().filter(|e| e.allocated).map(|e| e.length).sum();
    assert_eq!(allocated / 4096, 16384 - zeros, "zero blocks take no space");
    v.close().unwrap();

    // --key-from-old keeps the key; a target that exists is never overwritten; a v1
    // disk is not converted again.
    let keep = dir.path().join("keep.swap");
    assert!(run(&["convert", "--key-from-old", s(&swap), s(&keep)])
        .status
        .success());
    assert_eq!(mindcastle::volume::read_swap(&keep).unwrap().key, old.key);
    let again = run(&["convert", s(&swap), s(&keep)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    let v1 = run(&["convert", s(&new), s(&dir.path().join("x.swap"))]);
    assert_eq!(v1.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&v1.stderr).contains("already in this version's format"));
    let small = run(&[
        "convert",
        "--size",
        "32M",
        s(&swap),
        s(&dir.path().join("y.swap")),
    ]);
    assert_eq!(
        small.status.code(),
        Some(2),
        "a smaller disk would lose blocks"
    );
}

#[test]
fn a_convert_that_did_not_finish_leaves_no_target_and_is_named_next_time() {
    let dir = tempfile::tempdir().unwrap();
    let swap = legacy_copy(dir.path());
    let new = dir.path().join("new.swap");
    // What a convert killed half way leaves: the .converting disk, no NEW.swap.
    Volume::create(&dir.path().join("new.swap.converting"), 64 << 20)
        .unwrap()
        .close()
        .unwrap();
    let o = run(&["convert", s(&swap), s(&new)]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("new.swap.converting") && err.contains("swapdata-"),
        "{err}"
    );
    assert!(!new.exists());
}

#[test]
fn commands_that_need_this_versions_format_name_convert() {
    let dir = tempfile::tempdir().unwrap();
    let swap = legacy_copy(dir.path());
    let folder = swap.parent().unwrap().to_path_buf();
    let before = tree_sums(&folder);
    let img = dir.path().join("x.img");
    std::fs::write(&img, vec![1u8; 4096]).unwrap();
    let dest = dir.path().join("pushed");
    for args in [
        vec!["import", s(&swap), s(&img)],
        vec!["fsck", s(&swap)],
        vec!["push", s(&swap), s(&dest)],
        vec!["serve", s(&swap), "--socket", "/nonexistent/x.sock"],
        vec!["attach", s(&swap), "/bin/true"],
    ] {
        let o = run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("original C Mindcastle") && err.contains("mindcastle convert"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(tree_sums(&folder), before);
    // info inspects it (before a convert) and says what it is.
    let o = run(&["info", "--json", s(&swap)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["format"], "original", "{info}");
    assert_eq!(info["levels"], 1);
    assert_eq!(info["chunk_count"], 16);
    let o = run(&["info", s(&swap)]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("mindcastle convert"));
}

#[test]
fn a_flipped_byte_is_reported_by_chunk_and_never_read_as_data() {
    for (chunk, at) in [(FIRST_DATA, 100u64), (TREE, 32768 + 100)] {
        let dir = tempfile::tempdir().unwrap();
        let swap = legacy_copy(dir.path());
        let file = swap
            .parent()
            .unwrap()
            .join("swapdata-c15c75cd-81ed-7767-13ef-d6efafdcd0b7")
            .join(format!("{chunk}.lvl"));
        let mut bytes = std::fs::read(&file).unwrap();
        bytes[at as usize] ^= 0x40;
        std::fs::write(&file, &bytes).unwrap();
        let img = dir.path().join("out.img");
        let o = run(&["export", s(&swap), s(&img)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{chunk}: {err}");
        assert!(err.contains(chunk), "the error names {chunk}: {err}");
        let new = dir.path().join("new.swap");
        let c = run(&["convert", s(&swap), s(&new)]);
        assert_eq!(c.status.code(), Some(3));
        assert!(String::from_utf8_lossy(&c.stderr).contains(chunk));
        assert!(
            !new.exists(),
            "a convert that failed made {}",
            new.display()
        );
    }
}

/// The formats are told apart by which AEAD opens the root, so neither is ever read as
/// the other: a table of `.swap` files over folders of both kinds.
#[test]
fn v1_and_original_disks_are_never_taken_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let swap = legacy_copy(dir.path());
    let original = mindcastle::volume::read_swap(&swap).unwrap();
    let text = std::fs::read_to_string(&swap).unwrap();

    // A v1 disk with data, and one whose root is the only chunk.
    let v1 = dir.path().join("v1.swap");
    let v = Volume::create(&v1, 64 << 20).unwrap();
    v.write_at(0, &common::data(1, 1 << 20)).unwrap();
    v.close().unwrap();
    let empty = dir.path().join("empty.swap");
    Volume::create(&empty, 64 << 20).unwrap().close().unwrap();
    let v1_swap = mindcastle::volume::read_swap(&v1).unwrap();
    let v1_dir = mindcastle::volume::data_dir(&v1, &v1_swap);
    let v1_text = std::fs::read_to_string(&v1).unwrap();

    let write = |name: &str, text: String| {
        let p = swap.parent().unwrap().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // The original's folder under another key.
    let other_key = write(
        "other-key.swap",
        text.replace(&hex(&original.key.unwrap()), &"ab".repeat(32)),
    );
    // The original's root with a wrong snaphash.
    let bad_hash = write(
        "bad-hash.swap",
        text.replace(
            &hex(&original.snapshot.unwrap().tag),
            "00112233445566778899aabbccddeeff",
        ),
    );
    // A v1 disk's key and folder, naming the original's tree chunk (whole 32 KiB
    // nodes, so it passes the size check) as its root.
    std::fs::copy(
        swap.parent()
            .unwrap()
            .join("swapdata-c15c75cd-81ed-7767-13ef-d6efafdcd0b7")
            .join(format!("{TREE}.lvl")),
        v1_dir.join(format!("{TREE}.lvl")),
    )
    .unwrap();
    let v1_root = v1_swap.snapshot.unwrap();
    let v1_over_tree = dir.path().join("v1-tree.swap");
    std::fs::write(
        &v1_over_tree,
        v1_text.replace(
            &format!("{}:{}", v1_root.id.to_hex(), v1_root.size),
            &format!("{TREE}:589824"),
        ),
    )
    .unwrap();
    // The original's key and root over an empty v1 disk's folder (no such root).
    let empty_dir =
        mindcastle::volume::data_dir(&empty, &mindcastle::volume::read_swap(&empty).unwrap());
    let original_over_v1 = dir.path().join("orig-v1.swap");
    std::fs::write(
        &original_over_v1,
        format!("{text}swapdata={}\n", empty_dir.display()),
    )
    .unwrap();

    type Want = Result<DiskFormat, ErrorKind>;
    let table: Vec<(&Path, Want)> = vec![
        (&swap, Ok(DiskFormat::Original)),
        (&v1, Ok(DiskFormat::V1)),
        (&empty, Ok(DiskFormat::V1)),
        (&other_key, Err(ErrorKind::Corrupt)),
        (&bad_hash, Err(ErrorKind::Corrupt)),
        (&v1_over_tree, Err(ErrorKind::Corrupt)),
        (&original_over_v1, Err(ErrorKind::NotFound)),
    ];
    for (p, want) in table {
        let got = Volume::open(p, &read_only()).map(|v| v.format());
        match (&got, &want) {
            (Ok(g), Ok(w)) => assert_eq!(g, w, "{}", p.display()),
            (Err(e), Err(k)) => assert_eq!(e.kind(), *k, "{}: {e}", p.display()),
            _ => panic!(
                "{}: got {:?}, want {want:?}",
                p.display(),
                got.map_err(|e| e.to_string())
            ),
        }
    }
    // The v1 disk reads back what was written (not through the original's reader).
    let v = Volume::open(&v1, &read_only()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    v.read_at(0, &mut buf).unwrap();
    assert!(buf == common::data(1, 1 << 20));
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn serve_read_only_offers_the_original_disk_to_nbd_clients() {
    if !have("nbdcopy") || !have("nbdinfo") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = legacy_copy(dir.path());
    let server = Server::start(dir.path(), &swap, &["--read-only"]);
    let info = tool_ok("nbdinfo", &["--json", &server.uri()]);
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["exports"][0]["is_read_only"], true, "{info}");
    assert_eq!(info["exports"][0]["export-size"], 64u64 << 20);
    let img = dir.path().join("nbd.img");
    tool_ok("nbdcopy", &[&server.uri(), s(&img)]);
    assert_eq!(sha256_file(&img), fixture_sha256("EXPECTED.sha256"));
    server.stop();
}

#[test]
fn an_original_disk_reads_through_a_fallback_folder() {
    let dir = tempfile::tempdir().unwrap();
    let swap = legacy_copy(dir.path());
    // Published elsewhere: the chunks move to another folder, the .swap names it.
    let published = dir.path().join("published");
    std::fs::rename(
        swap.parent()
            .unwrap()
            .join("swapdata-c15c75cd-81ed-7767-13ef-d6efafdcd0b7"),
        &published,
    )
    .unwrap();
    let mut text = std::fs::read_to_string(&swap).unwrap();
    text.push_str(&format!("fallback={}\n", published.display()));
    std::fs::write(&swap, text).unwrap();
    let img = dir.path().join("disk.img");
    let o = run(&["export", s(&swap), s(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(sha256_file(&img), fixture_sha256("EXPECTED.sha256"));
}
