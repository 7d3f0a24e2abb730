//! The `mindcastle` command: create, info, import, export, the `.swap` contract,
//! chunk names checked with the system `sha512sum`, and the writer lock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use mindcastle::{OpenOptions, Volume};

fn s(p: &std::path::Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn create_import_export_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("demo.swap");
    let o = common::run(&["create", "--size", "64M", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
    let mode = std::fs::metadata(&swap).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the .swap file holds the key");
    // Refuses to overwrite.
    let o = common::run(&["create", s(&swap)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));

    let img = dir.path().join("img");
    let mut d = common::data(3, 20 << 20);
    d.extend(vec![0u8; 8 << 20]);
    d.extend(common::data(4, 5 << 20 | 1234));
    std::fs::write(&img, &d).unwrap();
    // Import from stdin.
    let mut child = common::bin()
        .args(["import", s(&swap), "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&d).unwrap();
    assert!(child.wait().unwrap().success());

    let out = dir.path().join("out.raw");
    let o = common::run(&["export", s(&swap), s(&out)]);
    assert!(o.status.success(), "{o:?}");
    let back = std::fs::read(&out).unwrap();
    assert_eq!(back.len(), 64 << 20);
    assert!(back[..d.len()] == d[..] && back[d.len()..].iter().all(|&b| b == 0));
    // Sparse: the hole after the data is not allocated.
    let blocks = Command::new("stat")
        .args(["-c", "%b", s(&out)])
        .output()
        .unwrap();
    let used: u64 = String::from_utf8_lossy(&blocks.stdout)
        .trim()
        .parse()
        .unwrap();
    assert!(used * 512 < 40 << 20, "export is not sparse: {used} blocks");
    // Export to stdout.
    let o = common::run(&["export", s(&swap), "-"]);
    assert!(o.status.success());
    assert!(o.stdout == back);

    // info --json
    let o = common::run(&["info", "--json", s(&swap)]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["size"], 64 << 20);
    assert_eq!(
        v["logical_bytes"].as_u64().unwrap(),
        ((20 << 20) + (5 << 20) + 4096) as u64
    );
    for k in [
        "uuid",
        "root",
        "levels",
        "chunk_count",
        "bytes_on_disk",
        "compression_ratio",
        "dedup_ratio",
    ] {
        assert!(!v[k].is_null(), "info --json lacks {k}");
    }
    assert!(v["compression_ratio"].as_f64().unwrap() > 1.2);
    let o = common::run(&["fsck", s(&swap)]);
    assert!(o.status.success());
}

#[test]
fn chunk_names_match_system_sha512sum() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), 32 << 20);
    let vol = Volume::open(&path, &OpenOptions::default()).unwrap();
    // A large write's chunks are named on its writer's thread, one at a time.
    vol.write_at(0, &common::data(9, 6 << 20)).unwrap();
    // Scattered small writes go through the log; the checkpoint at close cuts them into
    // several chunks at once and names those together, in SHA-512 lanes where the CPU
    // has them (AVX-512 or AVX2).
    let block = common::data(10, 3000 * 4096);
    for (i, b) in block.chunks(4096).enumerate() {
        let lba = (i as u64 * 2654435761) % 8192;
        vol.write_at(lba * 4096, b).unwrap();
    }
    vol.close().unwrap();
    let files = common::chunk_files(&path);
    assert!(files.len() >= 8, "{} chunk files", files.len());
    let o = Command::new("sha512sum")
        .args(&files)
        .output()
        .expect("sha512sum is installed");
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    for (line, file) in text.lines().zip(&files) {
        let sum = line.split_whitespace().next().unwrap();
        assert_eq!(&sum[..64], file.file_stem().unwrap().to_str().unwrap());
    }
}

#[test]
fn malformed_swap_files_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=1000\n",
            ":2: size 1000 is not a positive multiple of 4096",
        ),
        (
            "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=4096\nkey=nothex\n",
            ":3: key is not 64 hex digits",
        ),
        (
            "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\ngarbage line\n",
            ":2: expected key=value",
        ),
        (
            "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=18446744073709547520\n",
            ":2: size 18446744073709547520 is larger than the largest disk",
        ),
        (
            "uuid=not-a-uuid\nsize=4096\n",
            ":1: uuid 'not-a-uuid' is not a UUID",
        ),
        (
            "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=4096\n",
            ": no key= line",
        ),
    ];
    for (text, want) in cases {
        let p = dir.path().join("bad.swap");
        std::fs::write(&p, text).unwrap();
        let o = common::run(&["info", s(&p)]);
        assert_eq!(o.status.code(), Some(2));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(&format!("bad.swap{want}")), "{err}");
    }
    // A disk with a root but no data folder and no fallback.
    let path = common::new_disk(dir.path(), 1 << 20);
    let v = Volume::open(&path, &OpenOptions::default()).unwrap();
    v.write_at(0, &[1u8; 4096]).unwrap();
    let dd = v.data_dir().to_path_buf();
    v.close().unwrap();
    std::fs::rename(&dd, dir.path().join("moved")).unwrap();
    let o = common::run(&["info", s(&path)]);
    assert_eq!(o.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&o.stderr).contains("is missing and the disk has no fallback="));
}

#[test]
fn unknown_keys_survive_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), 1 << 20);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("owner=alice\n");
    std::fs::write(&path, text).unwrap();
    let v = Volume::open(&path, &OpenOptions::default()).unwrap();
    v.write_at(0, &[7u8; 4096]).unwrap();
    v.close().unwrap();
    let after = std::fs::read_to_string(&path).unwrap();
    assert!(
        after.contains("owner=alice") && after.contains("snapshot="),
        "{after}"
    );
}

#[test]
fn second_writer_gets_the_holders_pid() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), 1 << 20);
    let _held = Volume::open(&path, &OpenOptions::default()).unwrap();
    let o = common::run(&["import", s(&path), "/dev/null"]);
    assert_eq!(o.status.code(), Some(5));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("in use by process {}", std::process::id())),
        "{err}"
    );
}

#[test]
fn snapshot_stays_readable_after_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = common::new_disk(dir.path(), 8 << 20);
    let v = Volume::open(&path, &common::small()).unwrap();
    let a = common::data(1, 1 << 20);
    v.write_at(0, &a).unwrap();
    let snap = v.snapshot().unwrap();
    let b = common::data(2, 1 << 20);
    v.write_at(0, &b).unwrap();
    v.close().unwrap();
    let old = dir.path().join("old.raw");
    let o = common::run(&["export", "--snapshot", &snap.id.to_hex(), s(&path), s(&old)]);
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&old).unwrap()[..1 << 20] == a[..]);
    let v = Volume::open(&path, &OpenOptions::default()).unwrap();
    let mut cur = vec![0u8; 1 << 20];
    v.read_at(0, &mut cur).unwrap();
    assert!(cur == b);
    assert!(v.fsck(&|_| {}).unwrap().problems.is_empty());
}

#[test]
fn memory_budget_flag_and_variable_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("m.swap");
    let o = common::run(&["create", "--size", "16M", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
    // Too small, and not a size: exit 2 naming the problem, before anything is opened.
    let o = common::run(&["--memory", "1M", "info", s(&swap)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("minimum of 32 MiB"));
    let o = common::bin()
        .args(["info", s(&swap)])
        .env("MINDCASTLE_MEMORY", "lots")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("memory budget \"lots\""));
    // A valid budget, as a global flag after the subcommand too.
    let o = common::run(&["info", s(&swap), "--memory", "64M"]);
    assert!(o.status.success(), "{o:?}");
    // The memtable knob: a bad value is refused, a good one works.
    for bad in ["lots", "8", "99999999999"] {
        let o = common::bin()
            .args(["info", s(&swap)])
            .env("MINDCASTLE_MEMTABLE_ENTRIES", bad)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("MINDCASTLE_MEMTABLE_ENTRIES"));
    }
    let o = common::bin()
        .args(["info", s(&swap)])
        .env("MINDCASTLE_MEMTABLE_ENTRIES", "64")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn serve_never_deletes_what_is_not_a_stale_socket() {
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 1 << 20);
    // A regular file at the socket path is kept, and named in the refusal.
    let file = dir.path().join("precious");
    std::fs::write(&file, b"keep me").unwrap();
    let o = common::run(&["serve", s(&swap), "--socket", s(&file)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("is not a socket"));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    // A socket someone still answers on is not taken over.
    let live = dir.path().join("live.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&live).unwrap();
    let o = common::run(&["serve", s(&swap), "--socket", s(&live)]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("already listening"));
    assert!(live.exists());
}

/// Attach's front-end flags are checked before anything is opened or attached: a
/// flag that would do nothing with the front end chosen is refused, not ignored.
#[test]
fn attach_front_end_flags_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("f.swap");
    let o = common::run(&["create", "--size", "16M", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
    let script = dir.path().join("s.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let refused: &[(&[&str], &str)] = &[
        (
            &["--frontend", "bogus"],
            "expected auto, ublk, nbd, nbd-ioctl or fuse",
        ),
        (&["--frontend", "nbd", "--fuse"], "contradict"),
        (
            &["--fuse", "--recover"],
            "FUSE + loop devices go with their process",
        ),
        (&["--fuse", "--hand-over"], "cannot be handed over"),
        (
            &["--frontend", "nbd-ioctl", "--hand-over"],
            "cannot be handed over",
        ),
        (&["--recover", "--hand-over"], "cannot be used with"),
        (
            &["--frontend", "fuse", "--reconnect-timeout", "5s"],
            "not to --frontend fuse",
        ),
        (
            &["--frontend", "nbd-ioctl", "--reconnect-timeout", "5s"],
            "not to --frontend nbd-ioctl",
        ),
        (&["--reconnect-timeout", "0s"], "at least 1s"),
        (&["--reconnect-timeout", "1500ms"], "whole seconds"),
        (&["--reconnect-timeout", "soon"], "not a duration"),
    ];
    for (flags, why) in refused {
        let mut args = vec!["attach"];
        args.extend_from_slice(flags);
        args.extend([s(&swap), s(&script)]);
        let o = common::run(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(why), "{flags:?}: {err}");
    }
    // --hand-over of a disk that does not exist, and of one nothing serves.
    let o = common::run(&[
        "attach",
        "--hand-over",
        s(&dir.path().join("none.swap")),
        s(&script),
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not exist"));
    let o = common::run(&["attach", "--hand-over", s(&swap), s(&script)]);
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("no running attach of disk"));
    // Nothing of it touched the disk.
    let o = common::run(&["fsck", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
}

/// An image larger than the disk is refused before anything is written: the disk
/// keeps what it held. (From stdin the length is not known ahead; the import then
/// stops at the disk's end with the same message.)
#[test]
fn an_image_larger_than_the_disk_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 4 << 20);
    let before = common::noise(3, 4 << 20);
    let img = dir.path().join("fits");
    std::fs::write(&img, &before).unwrap();
    let o = common::run(&["import", s(&swap), s(&img)]);
    assert!(o.status.success(), "{o:?}");
    let big = dir.path().join("big");
    std::fs::write(&big, common::noise(4, (4 << 20) + 4096)).unwrap();
    let o = common::run(&["import", s(&swap), s(&big)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("larger than the 4194304-byte disk") && err.contains("nothing was written"),
        "{err}"
    );
    let o = common::run(&["export", s(&swap), "-"]);
    assert!(o.status.success(), "{o:?}");
    assert!(o.stdout == before, "the refused import changed the disk");
}

fn set_size(swap: &std::path::Path, size: u64) {
    let text = std::fs::read_to_string(swap).unwrap();
    let edited: String = text
        .lines()
        .map(|l| {
            if l.starts_with("size=") {
                format!("size={size}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(swap, edited).unwrap();
}

fn export(swap: &std::path::Path, extra: &[&str]) -> Vec<u8> {
    let out = swap.with_extension("out");
    let mut args = vec!["export", "--force"];
    args.extend_from_slice(extra);
    args.extend([s(swap), s(&out)]);
    let o = common::run(&args);
    assert!(o.status.success(), "{o:?}");
    std::fs::read(&out).unwrap()
}

/// `resize`: a grow reads zeros in the new space, a shrink needs `--shrink` and drops
/// exactly the blocks past the new end (counted in `--json`), growing back after a
/// shrink reads zeros there, not the dropped bytes; a snapshot taken before keeps its
/// own size and bytes through the shrink and a `gc`; `size=` and `info` follow.
#[test]
fn resize_grows_and_shrinks_only_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("r.swap");
    assert!(common::run(&["create", "--size", "16M", s(&swap)])
        .status
        .success());
    let img = dir.path().join("img");
    let mut d = common::noise(7, 12 << 20);
    d[(12 << 20) - 4096..].fill(0); // a zero block just inside: not data, not counted
    std::fs::write(&img, &d).unwrap();
    assert!(common::run(&["import", s(&swap), s(&img)]).status.success());
    let o = common::run(&["snapshot", "--name", "before", s(&swap)]);
    assert!(o.status.success(), "{o:?}");

    let o = common::run(&["resize", s(&swap), "8M"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass --shrink"));
    assert_eq!(
        &export(&swap, &[])[..12 << 20],
        &d[..],
        "a refused shrink changed the disk"
    );

    let o = common::run(&["resize", "--shrink", "--json", s(&swap), "8M"]);
    assert!(o.status.success(), "{o:?}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["size_before"], 16 << 20);
    assert_eq!(r["size"], 8 << 20);
    assert_eq!(r["dropped_blocks"], (4 << 20) / 4096 - 1);
    let text = std::fs::read_to_string(&swap).unwrap();
    assert!(text.contains(&format!("size={}\n", 8 << 20)), "{text}");
    assert_eq!(export(&swap, &[]), d[..8 << 20]);

    let o = common::run(&["resize", s(&swap), "24M"]);
    assert!(o.status.success(), "{o:?}");
    let back = export(&swap, &[]);
    assert_eq!(back.len(), 24 << 20);
    assert_eq!(back[..8 << 20], d[..8 << 20]);
    assert!(
        back[8 << 20..].iter().all(|&b| b == 0),
        "dropped bytes came back"
    );
    let o = common::run(&["info", "--json", s(&swap)]);
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["size"], 24 << 20);

    assert!(common::run(&["gc", s(&swap)]).status.success());
    let snap = export(&swap, &["--snapshot", "before"]);
    assert_eq!(snap.len(), 16 << 20);
    assert_eq!(
        snap[..12 << 20],
        d[..],
        "the snapshot lost bytes in the shrink"
    );
    let o = common::run(&["fsck", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
    // A size that is not a multiple of 4096 is refused, and so is a disk of the
    // original's format (convert it first), which is left as it was.
    let o = common::run(&["resize", s(&swap), "5000"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let legacy = common::legacy_copy(dir.path());
    let before = common::tree_sums(legacy.parent().unwrap());
    let o = common::run(&["resize", s(&legacy), "1G"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("convert"),
        "{o:?}"
    );
    assert_eq!(common::tree_sums(legacy.parent().unwrap()), before);
}

/// Features that meet a resize: a clone of a snapshot taken before it has the
/// snapshot's size, a clone of the head and a pushed copy the new one; a delta from
/// that snapshot to the grown disk is refused by the smaller clone (exit 2, naming
/// `resize`, nothing written) and applies once the clone is resized; `reset` to the
/// snapshot takes its size, and back to the state it left, the grown one.
#[test]
fn clones_copies_deltas_and_resets_across_a_resize() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let swap = p("a.swap");
    assert!(common::run(&["create", "--size", "8M", s(&swap)])
        .status
        .success());
    let small = common::noise(3, 8 << 20);
    std::fs::write(p("small"), &small).unwrap();
    assert!(common::run(&["import", s(&swap), s(&p("small"))])
        .status
        .success());
    assert!(common::run(&["snapshot", "--name", "s8", s(&swap)])
        .status
        .success());
    assert!(common::run(&["resize", s(&swap), "16M"]).status.success());
    let mut big = small.clone();
    big.resize(16 << 20, 0);
    big[12 << 20..13 << 20].copy_from_slice(&common::noise(4, 1 << 20));
    big[..4096].fill(9);
    std::fs::write(p("big"), &big).unwrap();
    assert!(common::run(&["import", s(&swap), s(&p("big"))])
        .status
        .success());

    let c8 = p("c8.swap");
    let o = common::run(&["clone", &format!("{}@s8", s(&swap)), s(&c8)]);
    assert!(o.status.success(), "{o:?}");
    assert!(export(&c8, &[]) == small, "a clone of the snapshot before");
    let ch = p("ch.swap");
    assert!(common::run(&["clone", s(&swap), s(&ch)]).status.success());
    assert!(export(&ch, &[]) == big, "a clone of the grown head");
    let o = common::run(&[
        "push",
        "--swap-out",
        s(&p("copy.swap")),
        s(&swap),
        s(&p("pub")),
    ]);
    assert!(o.status.success(), "{o:?}");
    assert!(export(&p("copy.swap"), &[]) == big, "a pushed copy");

    let stream = p("d.stream");
    let o = common::run(&[
        "export",
        "--changed-since",
        "s8",
        "--format",
        "stream",
        s(&swap),
        s(&stream),
    ]);
    assert!(o.status.success(), "{o:?}");
    let o = common::run(&["apply", s(&stream), s(&c8)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mindcastle resize"),
        "{o:?}"
    );
    assert!(export(&c8, &[]) == small, "a refused apply wrote nothing");
    assert!(common::run(&["resize", s(&c8), "16M"]).status.success());
    let o = common::run(&["apply", s(&stream), s(&c8)]);
    assert!(o.status.success(), "{o:?}");
    assert!(
        export(&c8, &[]) == big,
        "the delta applied after the resize"
    );
    // A reset to the snapshot from before the grow takes its size; the state left is
    // kept whole at its own, and a reset to it grows the disk back.
    let o = common::run(&["reset", s(&swap), "s8"]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("the snapshot's size"), "{out}");
    assert!(export(&swap, &[]) == small, "reset to the smaller snapshot");
    let text = std::fs::read_to_string(&swap).unwrap();
    assert!(text.contains(&format!("size={}\n", 8 << 20)), "{text}");
    let o = common::run(&["log", "--json", s(&swap)]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let left = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|n| n.contains("before reset"))
        })
        .unwrap_or_else(|| panic!("no state-left snapshot: {log}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = common::run(&["reset", s(&swap), &left]);
    assert!(o.status.success(), "{o:?}");
    assert!(export(&swap, &[]) == big, "reset back to the grown state");
    for d in [&swap, &c8, &ch] {
        let o = common::run(&["fsck", s(d)]);
        assert!(o.status.success(), "{o:?}");
    }
}

/// An edit of `size=` never drops data: smaller than blocks that hold data, a
/// writable open is refused (naming `resize --shrink`) and a read-only one reads the
/// smaller disk; put back, every byte is there. `resize --shrink` works from the
/// edited file. Smaller with nothing past it, the edit is taken; larger, the new space
/// reads zeros.
#[test]
fn an_edit_of_size_never_drops_data() {
    let dir = tempfile::tempdir().unwrap();
    let swap = dir.path().join("e.swap");
    assert!(common::run(&["create", "--size", "16M", s(&swap)])
        .status
        .success());
    let d = common::noise(8, 16 << 20);
    let img = dir.path().join("img");
    std::fs::write(&img, &d).unwrap();
    assert!(common::run(&["import", s(&swap), s(&img)]).status.success());

    set_size(&swap, 8 << 20);
    let small = dir.path().join("small");
    std::fs::write(&small, &d[..4096]).unwrap();
    let o = common::run(&["import", s(&swap), s(&small)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("size=8388608 is smaller than the disk (16777216 bytes)")
            && err.contains("resize --shrink"),
        "{err}"
    );
    assert_eq!(
        export(&swap, &[]),
        d[..8 << 20],
        "read-only: the smaller disk"
    );
    set_size(&swap, 16 << 20);
    assert_eq!(export(&swap, &[]), d, "put back, every byte is there");

    set_size(&swap, 8 << 20);
    let o = common::run(&["resize", "--shrink", s(&swap), "8M"]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("2048 blocks past the new end dropped"));
    set_size(&swap, 16 << 20);
    let back = export(&swap, &[]);
    assert_eq!(back[..8 << 20], d[..8 << 20]);
    assert!(
        back[8 << 20..].iter().all(|&b| b == 0),
        "dropped bytes came back"
    );

    // Nothing past the new end (data ends at 8 MiB): the edit is taken.
    let o = common::run(&["import", s(&swap), s(&small)]);
    assert!(o.status.success(), "{o:?}");
    set_size(&swap, 12 << 20);
    let o = common::run(&["import", s(&swap), s(&small)]);
    assert!(o.status.success(), "{o:?}");
    let back = export(&swap, &[]);
    assert_eq!(back.len(), 12 << 20);
    assert_eq!(back[..8 << 20], d[..8 << 20]);
    let o = common::run(&["fsck", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
}

/// A disk a version before 2026-12-04 shrank by an edit of `size=` (the blocks past
/// the end only hidden) reads zeros there once `size=` grows again: the writable open
/// drops them; a read-only open before that still reads only the smaller disk.
#[test]
fn growing_over_blocks_an_old_version_hid_reads_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 16 << 20);
    let d = common::noise(9, 16 << 20);
    let vol = Volume::open(&swap, &OpenOptions::default()).unwrap();
    vol.write_at(0, &d).unwrap();
    vol.close().unwrap();
    set_size(&swap, 8 << 20);
    let old = OpenOptions {
        unchecked_size_edit: true,
        ..OpenOptions::default()
    };
    let vol = Volume::open(&swap, &old).unwrap();
    vol.write_at(0, &d[..4096]).unwrap();
    vol.close().unwrap();
    assert_eq!(export(&swap, &[]), d[..8 << 20]);

    set_size(&swap, 16 << 20);
    let vol = Volume::open(&swap, &OpenOptions::default()).unwrap();
    let mut back = vec![1u8; 16 << 20];
    vol.read_at(0, &mut back).unwrap();
    vol.close().unwrap();
    assert_eq!(back[..8 << 20], d[..8 << 20]);
    assert!(
        back[8 << 20..].iter().all(|&b| b == 0),
        "hidden bytes came back"
    );
    let back = export(&swap, &[]);
    assert!(
        back[8 << 20..].iter().all(|&b| b == 0),
        "hidden bytes came back"
    );
}
