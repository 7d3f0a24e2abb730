//! History: snapshots, log, diff, clone, reset, forget and gc, each checked against the
//! data read back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::run;
use mindcastle::volume::history::ranges_of;
use mindcastle::{OpenOptions, Volume};
use proptest::prelude::*;

const SIZE: u64 = 2 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn image(vol: &Volume) -> Vec<u8> {
    let mut buf = vec![0u8; vol.size() as usize];
    vol.read_at(0, &mut buf).unwrap();
    buf
}

fn snapshot_image(path: &Path, id: &str) -> Vec<u8> {
    let v = Volume::open(
        path,
        &OpenOptions {
            snapshot: Some(mindcastle::format::chunk_id::ChunkId::from_hex(id).unwrap()),
            read_only: true,
            no_lock: true,
            ..Default::default()
        },
    )
    .unwrap();
    image(&v)
}

#[derive(Clone, Debug)]
enum Op {
    Write { off: u64, len: usize, seed: u64 },
    Zero { off: u64, len: u64 },
    Trim { off: u64, len: u64 },
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..SIZE, 1usize..40_000, any::<u64>()).prop_map(|(off, len, seed)| Op::Write { off, len, seed }),
        2 => (0..SIZE, 1u64..100_000).prop_map(|(off, len)| Op::Zero { off, len }),
        1 => (0..SIZE, 1u64..100_000).prop_map(|(off, len)| Op::Trim { off, len }),
        1 => Just(Op::Checkpoint),
    ]
}

fn apply(vol: &Volume, model: &mut [u8], ops: &[Op]) {
    for op in ops {
        match *op {
            Op::Write { off, len, seed } => {
                let len = (len as u64).min(SIZE - off);
                let d = common::data(seed, len as usize);
                vol.write_at(off, &d).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&d);
            }
            Op::Zero { off, len } | Op::Trim { off, len } => {
                let len = len.min(SIZE - off);
                vol.write_zeroes(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            Op::Checkpoint => {
                vol.checkpoint().unwrap();
            }
        }
    }
}

/// The blocks whose bytes differ between two images.
fn differing(a: &[u8], b: &[u8]) -> Vec<u64> {
    a.chunks(4096)
        .zip(b.chunks(4096))
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .map(|(i, _)| i as u64)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    /// Snapshot A, more random writes, zeroes and trims, snapshot B: each snapshot
    /// reads as the model did when it was taken, and `diff A B` (and `diff A` against
    /// the head) lists exactly the blocks whose bytes differ.
    #[test]
    fn snapshots_read_as_taken_and_diff_is_exact(
        before in proptest::collection::vec(op(), 1..25),
        after in proptest::collection::vec(op(), 0..25),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = common::new_disk(dir.path(), SIZE);
        let vol = Volume::open(&path, &common::small()).unwrap();
        let mut model = vec![0u8; SIZE as usize];
        apply(&vol, &mut model, &before);
        let a = vol.snapshot_labeled("a", "before").unwrap();
        let at_a = model.clone();
        apply(&vol, &mut model, &after);
        let head = vol.diff_blocks(&a, None).unwrap();
        let b = vol.snapshot_labeled("b", "").unwrap();
        let want = differing(&at_a, &model);
        prop_assert_eq!(&head, &want, "diff A head");
        prop_assert_eq!(vol.diff_blocks(&a, Some(&b)).unwrap(), want.clone(), "diff A B");
        prop_assert_eq!(vol.diff_blocks(&b, Some(&a)).unwrap(), want, "diff B A");
        prop_assert!(vol.diff_blocks(&a, Some(&a)).unwrap().is_empty());
        vol.close().unwrap();
        prop_assert!(snapshot_image(&path, &a.id.to_hex()) == at_a, "snapshot A");
        prop_assert!(snapshot_image(&path, &b.id.to_hex()) == model, "snapshot B");
    }
}

#[test]
fn ranges_merge_adjacent_blocks() {
    let r = ranges_of([1, 2, 3, 7, 9, 10]);
    let got: Vec<(u64, u64)> = r.iter().map(|r| (r.offset, r.length)).collect();
    assert_eq!(
        got,
        vec![(4096, 3 * 4096), (7 * 4096, 4096), (9 * 4096, 2 * 4096)]
    );
}

/// The CLI end to end: snapshot with names, log, diff --json, export --snapshot,
/// reset (which keeps the state it leaves), gc --dry-run (deletes nothing), forget and
/// gc (frees the bytes only the forgotten snapshot held).
#[test]
fn cli_snapshot_log_diff_reset_forget_gc() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let swap = d.join("d.swap");
    assert!(run(&["create", "--size", "16M", s(&swap)]).status.success());
    let first = common::noise(1, 1 << 20);
    std::fs::write(d.join("first.img"), &first).unwrap();
    assert!(run(&["import", s(&swap), s(&d.join("first.img"))])
        .status
        .success());
    let o = run(&[
        "snapshot",
        "--name",
        "base",
        "-m",
        "first state",
        "--json",
        s(&swap),
    ]);
    assert!(o.status.success(), "{o:?}");
    let snap: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let base = snap["id"].as_str().unwrap().to_string();
    assert_eq!(base.len(), 64);
    // A name in use is refused.
    let o = run(&["snapshot", "--name", "base", s(&swap)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");

    // 64 KiB at 4 MiB and 8 KiB at 0 change.
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.write_at(4 << 20, &common::noise(2, 64 << 10)).unwrap();
    v.write_at(0, &common::noise(3, 8 << 10)).unwrap();
    v.close().unwrap();
    let o = run(&["snapshot", "--name", "second", s(&swap)]);
    assert!(o.status.success());

    let o = run(&["diff", "--json", s(&swap), "base", "second"]);
    assert!(o.status.success(), "{o:?}");
    let diff: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        diff,
        serde_json::json!({"ranges": [{"offset": 0, "length": 8192},
            {"offset": 4194304, "length": 65536}], "bytes": 73728})
    );
    // By id prefix too.
    let o = run(&["diff", "--json", s(&swap), &base[..10]]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap(),
        diff
    );

    let o = run(&["log", "--json", s(&swap)]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["second", "base"], "newest first");
    assert_eq!(log[1]["message"], "first state");
    assert!(log[1]["added_bytes"].as_u64().unwrap() >= 1 << 20, "{log}");
    assert!(log[0]["added_bytes"].as_u64().unwrap() < 1 << 20, "{log}");

    let img = d.join("base.img");
    assert!(run(&["export", "--snapshot", &base, s(&swap), s(&img)])
        .status
        .success());
    let exported = std::fs::read(&img).unwrap();
    assert!(exported[..1 << 20] == first[..] && exported[1 << 20..].iter().all(|&b| b == 0));

    // Reset to base: the head reads as base; the state left is kept and listed.
    let o = run(&["reset", s(&swap), "base"]);
    assert!(o.status.success(), "{o:?}");
    let now = d.join("now.img");
    assert!(run(&["export", s(&swap), s(&now)]).status.success());
    assert!(std::fs::read(&now).unwrap() == exported);
    let o = run(&["log", "--json", s(&swap)]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 3);
    let saved = log[0]["id"].as_str().unwrap().to_string();
    assert!(log[0]["message"].as_str().unwrap().contains("before reset"));
    let saved_img = d.join("saved.img");
    assert!(
        run(&["export", "--snapshot", &saved, s(&swap), s(&saved_img)])
            .status
            .success()
    );
    let saved_bytes = std::fs::read(&saved_img).unwrap();
    assert!(saved_bytes[4 << 20..(4 << 20) + (64 << 10)] == common::noise(2, 64 << 10)[..]);

    // gc --dry-run deletes nothing.
    let before = common::chunk_files(&swap);
    let o = run(&["gc", "--dry-run", "--json", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
    assert_eq!(common::chunk_files(&swap), before);

    // Forget what holds the changed data; gc leaves fsck clean and base intact.
    let o = run(&["forget", s(&swap), "second", &saved]);
    assert!(o.status.success(), "{o:?}");
    let out = String::from_utf8_lossy(&o.stdout);
    let freed: u64 = out
        .lines()
        .find_map(|l| l.strip_suffix(" bytes freed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no bytes freed line: {out}"));
    assert!(freed >= 64 << 10, "{out}");
    let o = run(&["gc", "--json", s(&swap)]);
    assert!(o.status.success(), "{o:?}");
    let after = common::chunk_files(&swap);
    assert!(
        after.len() < before.len(),
        "{} -> {}",
        before.len(),
        after.len()
    );
    assert!(run(&["fsck", s(&swap)]).status.success());
    let o = run(&["log", "--json", s(&swap)]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 1);
    assert_eq!(log[0]["name"], "base");
    let o = run(&["diff", s(&swap), "second"]);
    assert_eq!(
        o.status.code(),
        Some(4),
        "a forgotten snapshot is not found"
    );
}

/// A clone diverges without changing its source; forgetting and collecting the
/// source's snapshot leaves the clone readable and fsck-clean.
#[test]
fn clone_diverges_and_outlives_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let swap = d.join("src.swap");
    let v = Volume::create(&swap, 8 << 20).unwrap();
    v.write_at(0, &common::noise(7, 2 << 20)).unwrap();
    let snap = v.snapshot_labeled("golden", "").unwrap();
    v.write_at(0, &common::noise(8, 1 << 20)).unwrap();
    v.close().unwrap();
    let clone = d.join("clone.swap");
    let o = run(&["clone", &format!("{}@golden", s(&swap)), s(&clone)]);
    assert!(o.status.success(), "{o:?}");
    let src_sw = mindcastle::volume::read_swap(&swap).unwrap();
    let cl_sw = mindcastle::volume::read_swap(&clone).unwrap();
    assert_ne!(src_sw.uuid, cl_sw.uuid);
    assert_eq!(src_sw.key, cl_sw.key, "same key: data still deduplicates");

    let c = Volume::open(&clone, &OpenOptions::default()).unwrap();
    let mut got = vec![0u8; 2 << 20];
    c.read_at(0, &mut got).unwrap();
    assert!(
        got == common::noise(7, 2 << 20),
        "the clone starts at the snapshot"
    );
    c.write_at(1 << 20, &common::noise(9, 4096)).unwrap();
    c.close().unwrap();

    let s_img = {
        let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
        let img = image(&v);
        assert!(img[..1 << 20] == common::noise(8, 1 << 20)[..]);
        assert!(img[1 << 20..2 << 20] == common::noise(7, 2 << 20)[1 << 20..]);
        v.forget(&[snap]).unwrap();
        v.gc(false).unwrap();
        v.close().unwrap();
        img
    };
    // The source is unchanged by the clone's write, and the clone by the source's gc.
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    assert!(image(&v) == s_img);
    v.close().unwrap();
    let c = Volume::open(&clone, &OpenOptions::default()).unwrap();
    let img = image(&c);
    assert!(img[..1 << 20] == common::noise(7, 2 << 20)[..1 << 20]);
    assert!(img[1 << 20..(1 << 20) + 4096] == common::noise(9, 4096)[..]);
    c.close().unwrap();
    let o = run(&["fsck", s(&clone)]);
    assert!(o.status.success(), "{o:?}");
    // Removing the source entirely does not break the clone.
    std::fs::remove_dir_all(mindcastle::volume::data_dir(&swap, &src_sw)).unwrap();
    let o = run(&["fsck", s(&clone)]);
    assert!(o.status.success(), "{o:?}");
}

/// `mindcastle snapshot` while `serve` holds the disk asks the server, which takes the
/// named snapshot; `log` shows it after the server stops.
#[test]
fn snapshot_command_asks_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 8 << 20);
    let server = common::server::Server::start(dir.path(), &swap, &[]);
    let o = run(&[
        "snapshot",
        "--name",
        "live",
        "-m",
        "while serving",
        s(&swap),
    ]);
    assert!(o.status.success(), "{o:?}");
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(id.len(), 64, "{id}");
    // A second request with the same name gets the server's refusal.
    let o = run(&["snapshot", "--name", "live", s(&swap)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    server.stop();
    let o = run(&["log", "--json", s(&swap)]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(log[0]["id"], id.as_str());
    assert_eq!(log[0]["name"], "live");
    assert_eq!(log[0]["message"], "while serving");
}

/// `serve` offers every kept snapshot as a read-only export by name or id (listed by
/// NBD_OPT_LIST); a client reading one sees that snapshot, a write gets EPERM; a
/// snapshot taken while serving (SIGUSR1) is offered at once.
#[test]
fn serve_offers_snapshots_as_read_only_exports() {
    use common::server::{have, tool, tool_ok, Server};
    if !have("nbdinfo") || !have("nbdcopy") || !have("nbdsh") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 8 << 20);
    let v = Volume::open(&swap, &OpenOptions::default()).unwrap();
    v.write_at(0, &common::noise(1, 1 << 20)).unwrap();
    let before = v.snapshot_labeled("before-upgrade", "").unwrap();
    v.write_at(0, &common::noise(2, 1 << 20)).unwrap();
    let unnamed = v.snapshot_labeled("", "").unwrap();
    v.write_at(0, &common::noise(3, 4096)).unwrap();
    let head_img = image(&v);
    v.close().unwrap();
    let server = Server::start(dir.path(), &swap, &[]);
    let sock = server.socket.display().to_string();
    let uri = |name: &str| format!("nbd+unix:///{name}?socket={sock}");

    let list = tool_ok("nbdinfo", &["--list", "--json", &uri("")]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let names: Vec<&str> = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    let unnamed_hex = unnamed.id.to_hex();
    assert_eq!(
        names,
        vec!["", "before-upgrade", unnamed_hex.as_str()],
        "{list}"
    );

    let read = |name: &str| {
        let out = dir.path().join(format!("{}.img", name.len()));
        let _ = std::fs::remove_file(&out);
        tool_ok("nbdcopy", &[&uri(name), out.to_str().unwrap()]);
        std::fs::read(&out).unwrap()
    };
    let snap = read("before-upgrade");
    assert!(snap[..1 << 20] == common::noise(1, 1 << 20)[..]);
    assert!(read(&before.id.to_hex()) == snap, "by id too");
    assert!(read(&unnamed_hex)[..1 << 20] == common::noise(2, 1 << 20)[..]);
    assert!(read("") == head_img);

    let o = tool(
        "nbdsh",
        &[
            "-u",
            &uri("before-upgrade"),
            "-c",
            // Strict mode off: the server itself must refuse the write.
            "import errno\nassert h.is_read_only()\nh.set_strict_mode(0)\ntry:\n    h.pwrite(b'x' * 4096, 0)\n    print('wrote')\nexcept nbd.Error as e:\n    print('errno', e.errno in (errno.EPERM, 'EPERM'))",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("errno True"),
        "{out} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = tool("nbdinfo", &[&uri("no-such-snapshot")]);
    assert!(!o.status.success());

    // SIGUSR1 while serving: the new snapshot is an export right away.
    let pid = server.child.as_ref().unwrap().id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-USR1", &pid])
        .status()
        .unwrap()
        .success());
    let t = std::time::Instant::now();
    loop {
        let l = tool_ok("nbdinfo", &["--list", "--json", &uri("")]);
        let l: serde_json::Value = serde_json::from_slice(&l.stdout).unwrap();
        if l["exports"].as_array().unwrap().len() == 4 {
            break;
        }
        assert!(t.elapsed().as_secs() < 30, "no fourth export: {l}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    server.stop();
}

/// `export --changed-since A` writes only what changed: applied to A's image (or a
/// clone of A) it gives B's; its size is within 5% of the changed bytes; a damaged
/// stream is refused.
#[test]
fn incremental_export_applies_to_a_to_give_b() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let swap = d.join("d.swap");
    let v = Volume::create(&swap, 16 << 20).unwrap();
    v.write_at(0, &common::noise(1, 6 << 20)).unwrap();
    v.snapshot_labeled("a", "").unwrap();
    // Scattered changes: writes, an unaligned write, zeroes over data.
    v.write_at(1 << 20, &common::noise(2, 300 << 10)).unwrap();
    v.write_at((5 << 20) + 100, &common::noise(3, 10_000))
        .unwrap();
    v.write_zeroes(3 << 20, 64 << 10).unwrap();
    v.write_at(12 << 20, &common::noise(4, 1 << 20)).unwrap();
    v.snapshot_labeled("b", "").unwrap();
    let changed: u64 = v
        .diff_blocks(
            &v.find_snapshot("a").unwrap(),
            Some(&v.find_snapshot("b").unwrap()),
        )
        .unwrap()
        .len() as u64
        * 4096;
    v.close().unwrap();

    let (a_img, b_img) = (d.join("a.img"), d.join("b.img"));
    assert!(run(&["export", "--snapshot", "a", s(&swap), s(&a_img)])
        .status
        .success());
    assert!(run(&["export", "--snapshot", "b", s(&swap), s(&b_img)])
        .status
        .success());
    let delta = d.join("ab.delta");
    let o = run(&[
        "export",
        "--snapshot",
        "b",
        "--changed-since",
        "a",
        "--format",
        "stream",
        s(&swap),
        s(&delta),
    ]);
    assert!(o.status.success(), "{o:?}");
    let size = std::fs::metadata(&delta).unwrap().len();
    assert!(
        size as f64 / changed as f64 <= 1.05,
        "{size} for {changed} changed bytes"
    );

    let o = run(&["apply", s(&delta), s(&a_img)]);
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&a_img).unwrap() == std::fs::read(&b_img).unwrap());

    // Into a disk: a clone of A.
    let clone = d.join("c.swap");
    assert!(run(&["clone", &format!("{}@a", s(&swap)), s(&clone)])
        .status
        .success());
    assert!(run(&["apply", s(&delta), s(&clone)]).status.success());
    let c_img = d.join("c.img");
    assert!(run(&["export", s(&clone), s(&c_img)]).status.success());
    assert!(std::fs::read(&c_img).unwrap() == std::fs::read(&b_img).unwrap());

    // Raw: the changed ranges at their offsets, holes elsewhere.
    let raw = d.join("ab.raw");
    let o = run(&[
        "export",
        "--snapshot",
        "b",
        "--changed-since",
        "a",
        s(&swap),
        s(&raw),
    ]);
    assert!(o.status.success(), "{o:?}");
    let r = std::fs::read(&raw).unwrap();
    let b = std::fs::read(&b_img).unwrap();
    assert_eq!(r.len(), b.len());
    assert!(r[12 << 20..13 << 20] == b[12 << 20..13 << 20]);
    assert!(r[8 << 20..9 << 20].iter().all(|&x| x == 0));

    // A flipped byte or a cut stream is refused before it is called applied.
    let mut bytes = std::fs::read(&delta).unwrap();
    bytes[200] ^= 1;
    std::fs::write(d.join("bad.delta"), &bytes).unwrap();
    let o = run(&["apply", s(&d.join("bad.delta")), s(&a_img)]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let cut = std::fs::read(&delta).unwrap();
    std::fs::write(d.join("cut.delta"), &cut[..cut.len() / 2]).unwrap();
    let o = run(&["apply", s(&d.join("cut.delta")), s(&a_img)]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    // Two streams joined: refused, not the first applied and called done.
    let mut joined = std::fs::read(&delta).unwrap();
    joined.extend_from_slice(&std::fs::read(&delta).unwrap());
    std::fs::write(d.join("joined.delta"), &joined).unwrap();
    let before = std::fs::read(&a_img).unwrap();
    let o = run(&["apply", s(&d.join("joined.delta")), s(&a_img)]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("two streams joined"));
    assert!(
        std::fs::read(&a_img).unwrap() == before,
        "the image changed"
    );
}

/// Each snapshot is also `snapshots/ID.swap` beside the disk (as in the original): a
/// disk of its own that reads as the snapshot, refuses writes (`readonly=true`), can
/// be cloned into a writable disk that outlives the source, and goes with `forget`.
#[test]
fn snapshot_swap_files_open_on_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let swap = d.join("d.swap");
    let v = Volume::create(&swap, 8 << 20).unwrap();
    v.write_at(0, &common::noise(1, 1 << 20)).unwrap();
    let snap = v.snapshot_labeled("s", "").unwrap();
    v.write_at(0, &common::noise(2, 1 << 20)).unwrap();
    v.close().unwrap();
    let file = d
        .join("snapshots")
        .join(format!("{}.swap", snap.id.to_hex()));
    assert!(file.exists(), "{} missing", file.display());
    let img = d.join("s.img");
    let o = run(&["export", s(&file), s(&img)]);
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&img).unwrap()[..1 << 20] == common::noise(1, 1 << 20)[..]);
    let o = run(&["import", s(&file), s(&img)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mindcastle clone"),
        "{o:?}"
    );

    let clone = d.join("c.swap");
    assert!(run(&["clone", s(&file), s(&clone)]).status.success());
    let sw = mindcastle::volume::read_swap(&swap).unwrap();
    std::fs::remove_dir_all(mindcastle::volume::data_dir(&swap, &sw)).unwrap();
    let c_img = d.join("c.img");
    let o = run(&["export", s(&clone), s(&c_img)]);
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&c_img).unwrap() == std::fs::read(&img).unwrap());

    // forget removes the file (on a disk that still has its data).
    let swap2 = d.join("e.swap");
    let v = Volume::create(&swap2, 8 << 20).unwrap();
    let snap = v.snapshot_labeled("", "").unwrap();
    let file = d
        .join("snapshots")
        .join(format!("{}.swap", snap.id.to_hex()));
    assert!(file.exists());
    v.forget(&[snap]).unwrap();
    v.close().unwrap();
    assert!(!file.exists());
}

/// `push` carries snapshots and their names: a host reading the pushed copy lists,
/// diffs and exports them; `diff` there fetches index chunks only (the cache holds no
/// data chunk afterwards).
#[test]
fn pushed_snapshots_are_readable_and_diff_fetches_index_only() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let swap = d.join("a.swap");
    let v = Volume::create(&swap, 16 << 20).unwrap();
    v.write_at(0, &common::noise(1, 4 << 20)).unwrap();
    v.snapshot_labeled("one", "first").unwrap();
    v.write_at(8 << 20, &common::noise(2, 1 << 20)).unwrap();
    v.snapshot_labeled("two", "").unwrap();
    let data_chunks: std::collections::HashSet<String> = v
        .engine()
        .unwrap()
        .view()
        .unwrap()
        .tree
        .runs()
        .flat_map(|r| r.table.iter().map(|t| t.id.file_name()).collect::<Vec<_>>())
        .collect();
    v.close().unwrap();
    let published = d.join("published");
    let remote = d.join("b").join("remote.swap");
    std::fs::create_dir_all(d.join("b")).unwrap();
    let o = run(&["push", s(&swap), s(&published), "--swap-out", s(&remote)]);
    assert!(o.status.success(), "{o:?}");
    let mut text = std::fs::read_to_string(&remote).unwrap();
    text.push_str("cache=cache\n");
    std::fs::write(&remote, text).unwrap();

    let o = run(&["log", "--json", s(&remote)]);
    assert!(o.status.success(), "{o:?}");
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(log[1]["name"], "one");
    assert_eq!(log[1]["message"], "first");
    let o = run(&["diff", "--json", s(&remote), "one", "two"]);
    assert!(o.status.success(), "{o:?}");
    let diff: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(diff["bytes"], 1 << 20);
    let cached: Vec<String> = std::fs::read_dir(d.join("b").join("cache"))
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        cached.iter().any(|c| c.ends_with(".lvl")),
        "the index came through the cache: {cached:?}"
    );
    assert!(
        cached.iter().all(|c| !data_chunks.contains(c)),
        "diff fetched data chunks: {cached:?}"
    );
    let img = d.join("one.img");
    let o = run(&["export", "--snapshot", "one", s(&remote), s(&img)]);
    assert!(o.status.success(), "{o:?}");
    assert!(std::fs::read(&img).unwrap()[..4 << 20] == common::noise(1, 4 << 20)[..]);
}
