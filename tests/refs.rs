//! Refs at remotes, through the CLI as users run it: `push --ref` to a folder, to an S3
//! server (s3s-fs) and read back through nginx; followers (`push --swap-out` with
//! `--ref`) that take each new version when opened and keep writes of their own;
//! non-fast-forward pushes; pushers racing as processes; signed versions and what a
//! reader that trusts a key refuses (exit 3, nothing returned).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::server::have;

const SIZE: usize = 8 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `cmd`, expects exit `code`, returns stderr.
fn fails(cmd: &mut Command, code: i32) -> String {
    let o = run(cmd);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(code), "{cmd:?}: {err}");
    assert!(
        o.stdout.is_empty() || code != 3,
        "nothing is returned: {cmd:?}"
    );
    err
}

fn mc(args: &[&str]) -> Command {
    let mut c = common::bin();
    c.args(args);
    c
}

/// Gives `swap` writes of its own: `base` with the 4 KiB block at `at` replaced by
/// noise of `seed`, imported through `scratch`; returns the image it now holds.
fn write_own(swap: &Path, base: &[u8], at: usize, seed: u64, scratch: &Path) -> Vec<u8> {
    let mut own = base.to_vec();
    own[at..at + 4096].copy_from_slice(&common::noise(seed, 4096));
    std::fs::write(scratch, &own).unwrap();
    ok(&mut mc(&["import", s(swap), s(scratch)]));
    own
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap()
}

/// `gc --json --keep 1 --grace GRACE` at `publ` with `key_of`'s key: its report.
fn gc_keep_one(key_of: &Path, publ: &Path, grace: &str) -> serde_json::Value {
    json(&ok(&mut mc(&[
        "gc",
        "--json",
        "--keep",
        "1",
        "--grace",
        grace,
        "--key-from",
        s(key_of),
        s(publ),
    ])))
}

/// A writer: a disk with its model image.
struct Writer {
    swap: PathBuf,
    image: Vec<u8>,
    dir: PathBuf,
}

impl Writer {
    fn new(dir: &Path, name: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let swap = dir.join(format!("{name}.swap"));
        ok(&mut mc(&["create", "--size", "8M", s(&swap)]));
        Self {
            swap,
            image: vec![0u8; SIZE],
            dir: dir.to_path_buf(),
        }
    }

    /// Writes `len` bytes of seeded data at `at` (through `import` of the whole image).
    fn write(&mut self, seed: u64, at: usize, len: usize) {
        let d = common::data(seed, len);
        self.image[at..at + len].copy_from_slice(&d);
        let img = self.dir.join("img");
        std::fs::write(&img, &self.image).unwrap();
        ok(&mut mc(&["import", s(&self.swap), s(&img)]));
    }
}

fn export(swap: &Path) -> Vec<u8> {
    let o = run(&mut mc(&["export", s(swap), "-"]));
    assert!(
        o.status.success(),
        "export: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// A writer `a` with `len` bytes written at 0, pushed as version 1 of `main` to
/// `DIR/pub` with a follower at `DIR/FOLLOWER.swap`: (writer, remote, follower).
fn published(dir: &Path, len: usize, follower: &str) -> (Writer, PathBuf, PathBuf) {
    let publ = dir.join("pub");
    let mut a = Writer::new(&dir.join("a"), "a");
    a.write(1, 0, len);
    let f = dir.join(format!("{follower}.swap"));
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    ok(&mut mc(&[
        "push",
        "--ref",
        "main",
        "--swap-out",
        s(&f),
        s(&a.swap),
        s(&publ),
    ]));
    (a, publ, f)
}

/// A `.swap` written by hand (mode 0600, as it holds the key).
fn write_swap(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A follower `.swap` written by hand: `key_of`'s key, `fallback`, `ref=main`, a new
/// uuid (a disk of its own).
fn hand_follower(path: &Path, key_of: &Path, fallback: &str) {
    let text = std::fs::read_to_string(key_of).unwrap();
    let key = text.lines().find(|l| l.starts_with("key=")).unwrap();
    write_swap(
        path,
        &format!(
            "uuid={}\nsize={SIZE}\n{key}\nfallback={fallback}\nref=main\n",
            uuid::Uuid::new_v4()
        ),
    );
}

fn swap_value(swap: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(swap)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

#[test]
fn a_follower_takes_each_version_and_keeps_writes_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let publ = dir.path().join("pub");
    let mut a = Writer::new(&dir.path().join("a"), "a");
    a.write(1, 0, 1 << 20);
    let follower = dir.path().join("b/f.swap");
    std::fs::create_dir_all(follower.parent().unwrap()).unwrap();
    let out = json(&ok(&mut mc(&[
        "push",
        "--json",
        "--ref",
        "main",
        "-m",
        "first",
        "--swap-out",
        s(&follower),
        s(&a.swap),
        s(&publ),
    ])));
    assert_eq!(out["ref"]["seq"], 1);
    assert_eq!(out["ref"]["created"], true);
    assert_eq!(swap_value(&follower, "ref").as_deref(), Some("main"));
    assert_eq!(swap_value(&follower, "refseq").as_deref(), Some("1"));
    assert_eq!(export(&follower), a.image);
    let mut images = vec![a.image.clone()];
    for v in 2..=4u64 {
        a.write(v, (v as usize) << 20, 300 << 10);
        let out = json(&ok(&mut mc(&[
            "push",
            "--json",
            "--ref",
            "main",
            s(&a.swap),
            s(&publ),
        ])));
        assert_eq!(out["ref"]["seq"], v);
        images.push(a.image.clone());
        // A read-only open takes the newest version (and notes it: no data folder, so
        // nothing else writes the .swap).
        assert_eq!(export(&follower), a.image, "version {v}");
        assert_eq!(swap_value(&follower, "refseq"), Some(v.to_string()));
    }
    // A push of an unchanged disk makes no version.
    let out = json(&ok(&mut mc(&[
        "push",
        "--json",
        "--ref",
        "main",
        s(&a.swap),
        s(&publ),
    ])));
    assert_eq!(out["ref"]["created"], false);
    assert_eq!(out["ref"]["seq"], 4);
    // update moves the .swap itself (fast-forward), then has nothing to do.
    a.write(5, 5 << 20, 4096);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    images.push(a.image.clone());
    let up = json(&ok(&mut mc(&["update", "--json", s(&follower)])));
    assert_eq!(up["outcome"], "moved");
    assert_eq!(up["newest_seq"], 5);
    assert_eq!(swap_value(&follower, "refseq").as_deref(), Some("5"));
    let up = json(&ok(&mut mc(&["update", "--json", s(&follower)])));
    assert_eq!(up["outcome"], "current");
    // log lists every version, newest first, with the chain between them checked.
    let log = json(&ok(&mut mc(&["log", "--json", "--ref", "main", s(&publ)])));
    let seqs: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![5, 4, 3, 2, 1]);
    assert_eq!(log[4]["message"], "first");

    // The follower writes: its writes stay, even when a newer version appears.
    let own = write_own(&follower, &a.image, 0, 9, &dir.path().join("b/img"));
    a.write(5, 6 << 20, 4096);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    assert_eq!(
        export(&follower),
        own,
        "a newer version never drops the disk's own writes"
    );
    let e = fails(&mut mc(&["update", s(&follower)]), 5);
    assert!(e.contains("writes of its own"), "{e}");
    // Its state is its own to push: not a fast-forward of main (version 5 moved past
    // its refseq=4), so refused, then pushed under another name.
    let e = fails(
        &mut mc(&["push", "--ref", "main", s(&follower), s(&publ)]),
        5,
    );
    assert!(e.contains("non-fast-forward"), "{e}");
    ok(&mut mc(&[
        "push",
        "--ref",
        "b-work",
        s(&follower),
        s(&publ),
    ]));
    ok(&mut mc(&["fsck", s(&follower)]));
}

#[test]
fn writes_in_a_followers_log_keep_it_off_a_newer_version() {
    // Writes acknowledged but not yet checkpointed (only in the log) are the disk's
    // own as much as checkpointed ones: a follower killed with them is not moved.
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, follower) = published(dir.path(), 1 << 20, "f");
    let mut model = a.image.clone();
    {
        // serve, write and flush, then kill -9: the writes are only in the log.
        let srv = common::server::Server::start(dir.path(), &follower, &[]);
        let mut c = common::nbd::Nbd::connect(&srv.socket);
        let w = common::noise(3, 8192);
        c.write(4096, &w);
        c.flush();
        model[4096..4096 + 8192].copy_from_slice(&w);
        drop(srv);
        drop(c);
    }
    // At the newest version still: `update` says what it says of checkpointed writes
    // (a script must not see another answer because no checkpoint ran yet).
    let e = fails(&mut mc(&["update", s(&follower)]), 5);
    assert!(
        e.contains("writes of its own") && e.contains("newest"),
        "{e}"
    );
    a.write(2, 2 << 20, 4096);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    let e = fails(&mut mc(&["update", s(&follower)]), 5);
    assert!(e.contains("writes of its own"), "{e}");
    assert_eq!(export(&follower), model);
}

#[test]
fn a_push_that_does_not_follow_the_ref_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let publ = dir.path().join("pub");
    let mut a = Writer::new(&dir.path().join("a"), "a");
    let mut b = Writer::new(&dir.path().join("b"), "b");
    a.write(1, 0, 1 << 20);
    b.write(2, 0, 1 << 20);
    let out = json(&ok(&mut mc(&[
        "push",
        "--json",
        "--ref",
        "main",
        s(&a.swap),
        s(&publ),
    ])));
    let a_root = out["root"].as_str().unwrap().to_string();
    let e = fails(&mut mc(&["push", "--ref", "main", s(&b.swap), s(&publ)]), 5);
    assert!(e.contains("non-fast-forward") && e.contains(&a_root), "{e}");
    let out = json(&ok(&mut mc(&[
        "push",
        "--json",
        "--ref",
        "main",
        "--force",
        s(&b.swap),
        s(&publ),
    ])));
    assert_eq!(out["ref"]["seq"], 2);
    // a's next push no longer follows (b's version came between).
    a.write(3, 1 << 20, 4096);
    fails(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]), 5);
    // Nothing is lost: both versions are kept and readable.
    let log = json(&ok(&mut mc(&["log", "--json", "--ref", "main", s(&publ)])));
    assert_eq!(log.as_array().unwrap().len(), 2);
    assert_eq!(log[1]["root"], a_root.as_str());
    // Bad names and a plain HTTP remote are refused before anything is copied.
    let e = fails(&mut mc(&["push", "--ref", "../x", s(&a.swap), s(&publ)]), 2);
    assert!(e.contains("not a ref name"), "{e}");
    let e = fails(
        &mut mc(&["push", "--ref", "main", s(&a.swap), "http://127.0.0.1:9/x"]),
        2,
    );
    assert!(e.contains("only if it is absent"), "{e}");
    let e = fails(&mut mc(&["log", "--ref", "nope", s(&publ)]), 4);
    assert!(e.contains("no ref 'nope'"), "{e}");
}

#[test]
fn pushers_racing_as_processes_leave_one_chain() {
    // Two hosts push the same ref at once, 20 times, with --force so both always land:
    // every version is there once, consecutive, chained, and each names a root whose
    // chunks were pushed (fsck of a follower pinned to it is clean).
    let dir = tempfile::tempdir().unwrap();
    let publ = dir.path().join("pub");
    let mut a = Writer::new(&dir.path().join("a"), "a");
    // b is a clone of a (the same key), as two hosts building one image would be.
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let mut b = Writer {
        swap: b_dir.join("b.swap"),
        image: a.image.clone(),
        dir: b_dir,
    };
    ok(&mut mc(&["clone", s(&a.swap), s(&b.swap)]));
    let rounds = 20u64;
    for round in 0..rounds {
        a.write(10 + round, 0, 64 << 10);
        b.write(100 + round, 0, 64 << 10);
        let spawn = |w: &Writer| {
            mc(&[
                "push",
                "--json",
                "--ref",
                "main",
                "--force",
                s(&w.swap),
                s(&publ),
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
        };
        let (pa, pb) = (spawn(&a), spawn(&b));
        for p in [pa, pb] {
            let o = p.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let log = json(&ok(&mut mc(&["log", "--json", "--ref", "main", s(&publ)])));
    let rows = log.as_array().unwrap();
    assert_eq!(rows.len() as u64, 2 * rounds);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["seq"].as_u64(), Some(2 * rounds - i as u64));
    }
    let mut roots: Vec<&str> = rows.iter().map(|r| r["root"].as_str().unwrap()).collect();
    roots.sort_unstable();
    roots.dedup();
    assert_eq!(
        roots.len() as u64,
        2 * rounds,
        "no version lost or written twice"
    );
    // The newest version reads as the disk that pushed it last.
    let follower = dir.path().join("f.swap");
    hand_follower(&follower, &a.swap, s(&publ));
    let got = export(&follower);
    assert!(got == a.image || got == b.image);
}

/// A writer, a signing key and a follower that trusts it; returns (writer, publ,
/// follower, key).
fn signed_setup(dir: &Path) -> (Writer, PathBuf, PathBuf, PathBuf) {
    let publ = dir.join("pub");
    let key = dir.join("signing.key");
    let out = ok(&mut mc(&["keygen", s(&key)]));
    assert!(out.contains("trust=ed25519:"), "{out}");
    let mut a = Writer::new(&dir.join("a"), "a");
    a.write(1, 0, 1 << 20);
    let follower = dir.join("f.swap");
    let out = json(&ok(&mut mc(&[
        "push",
        "--json",
        "--ref",
        "main",
        "--sign",
        s(&key),
        "--swap-out",
        s(&follower),
        s(&a.swap),
        s(&publ),
    ])));
    assert!(out["ref"]["signed_by"]
        .as_str()
        .unwrap()
        .starts_with("ed25519:"));
    assert!(swap_value(&follower, "trust").is_some());
    assert_eq!(export(&follower), a.image);
    (a, publ, follower, key)
}

#[test]
fn a_reader_that_trusts_a_key_refuses_everything_else() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, follower, key) = signed_setup(dir.path());
    let v1 = a.image.clone();
    // A signed version 2 is taken.
    a.write(2, 1 << 20, 4096);
    ok(&mut mc(&[
        "push",
        "--ref",
        "main",
        "--sign",
        s(&key),
        s(&a.swap),
        s(&publ),
    ]));
    assert_eq!(export(&follower), a.image);
    ok(&mut mc(&["update", s(&follower)]));
    let v2 = a.image.clone();

    // 1. Unsigned (refused by push without --force, by the reader always).
    a.write(3, 2 << 20, 4096);
    let e = fails(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]), 2);
    assert!(e.contains("is signed"), "{e}");
    ok(&mut mc(&[
        "push",
        "--ref",
        "main",
        "--force",
        s(&a.swap),
        s(&publ),
    ]));
    let e = fails(&mut mc(&["export", s(&follower), "-"]), 3);
    assert!(e.contains("unsigned"), "{e}");
    // 2. Signed by another key.
    let other = dir.path().join("other.key");
    ok(&mut mc(&["keygen", s(&other)]));
    a.write(4, 3 << 20, 4096);
    ok(&mut mc(&[
        "push",
        "--ref",
        "main",
        "--force",
        "--sign",
        s(&other),
        s(&a.swap),
        s(&publ),
    ]));
    let e = fails(&mut mc(&["export", s(&follower), "-"]), 3);
    assert!(e.contains("does not trust"), "{e}");
    // 3. Signed by the trusted key, but pushed by another disk.
    let mut b = Writer::new(&dir.path().join("b"), "b");
    b.write(5, 0, 4096);
    ok(&mut mc(&[
        "push",
        "--ref",
        "main",
        "--force",
        "--sign",
        s(&key),
        s(&b.swap),
        s(&publ),
    ]));
    let e = fails(&mut mc(&["export", s(&follower), "-"]), 3);
    assert!(e.contains("pushed by disk"), "{e}");
    // 4. A version copied under another seq or ref is refused by its own bytes.
    let refs = publ.join("refs/main");
    let newest = std::fs::read_dir(&refs)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 20)
        .max()
        .unwrap();
    let copied = std::fs::read(refs.join("00000000000000000002")).unwrap();
    let next: u64 = newest.parse::<u64>().unwrap() + 1;
    std::fs::write(refs.join(format!("{next:020}")), &copied).unwrap();
    let e = fails(&mut mc(&["export", s(&follower), "-"]), 3);
    assert!(e.contains("not version"), "{e}");
    std::fs::remove_file(refs.join(format!("{next:020}"))).unwrap();

    // 5. Rollback: a mirror that serves only the first version (a copy of the folder
    // made then) is refused by a reader that already took version 2.
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(mirror.join("refs/main")).unwrap();
    for e in std::fs::read_dir(&publ).unwrap().flatten() {
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), mirror.join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(
        refs.join("00000000000000000001"),
        mirror.join("refs/main/00000000000000000001"),
    )
    .unwrap();
    std::fs::copy(
        refs.join("00000000000000000001"),
        mirror.join("refs/main/HEAD"),
    )
    .unwrap();
    let text = std::fs::read_to_string(&follower).unwrap();
    let mirrored = dir.path().join("m.swap");
    write_swap(
        &mirrored,
        &text
            .lines()
            .map(|l| {
                if l.starts_with("fallback=") {
                    format!("fallback={}", s(&mirror))
                } else if l.starts_with("uuid=") {
                    format!("uuid={}", uuid::Uuid::new_v4())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    assert_eq!(swap_value(&mirrored, "refseq").as_deref(), Some("2"));
    let e = fails(&mut mc(&["export", s(&mirrored), "-"]), 3);
    assert!(e.contains("rollback"), "{e}");
    assert_eq!(swap_value(&follower, "refseq").as_deref(), Some("2"));
    let _ = (v1, v2);
}

#[test]
fn refs_at_s3_and_followers_through_nginx() {
    if !have("s3s-fs") || !have("nginx") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_s3, port) = common::s3::start(&dir.path().join("s3root"));
    let env = common::s3::env(port);
    let url = "s3://bucket/disks/d1";
    let mut a = Writer::new(&dir.path().join("a"), "a");
    a.write(1, 0, 1 << 20);
    let follower = dir.path().join("f.swap");
    ok(mc(&[
        "push",
        "--ref",
        "main",
        "--swap-out",
        s(&follower),
        s(&a.swap),
        url,
    ])
    .envs(env.clone()));
    assert_eq!(export_env(&follower, &env), a.image);
    a.write(2, 1 << 20, 4096);
    ok(mc(&["push", "--ref", "main", s(&a.swap), url]).envs(env.clone()));
    assert_eq!(export_env(&follower, &env), a.image);
    let other = Writer::new(&dir.path().join("b"), "b");
    let o = run(mc(&["push", "--ref", "main", s(&other.swap), url]).envs(env.clone()));
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("non-fast-forward"));
    let log = json(&ok(
        mc(&["log", "--json", "--ref", "main", url]).envs(env.clone())
    ));
    assert_eq!(log.as_array().unwrap().len(), 2);
    // gc at the bucket: version 1 and what only it used go; the follower reads on.
    let out = json(&ok(mc(&[
        "gc",
        "--json",
        "--keep",
        "1",
        "--grace",
        "0s",
        "--key-from",
        s(&a.swap),
        url,
    ])
    .envs(env.clone())));
    assert_eq!(out["versions_deleted"], 1);
    assert!(out["garbage_chunks"].as_u64().unwrap() > 0, "{out}");
    assert_eq!(export_env(&follower, &env), a.image);

    // nginx serving a pushed folder: a follower over plain HTTP (no listing, no
    // create) resolves the ref by HEAD and probes.
    let web = dir.path().join("www");
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&web)]));
    let (_nginx, hport) = common::web::nginx(dir.path(), &web);
    let h = dir.path().join("h.swap");
    hand_follower(&h, &a.swap, &format!("http://127.0.0.1:{hport}/"));
    assert_eq!(export(&h), a.image);
    a.write(3, 2 << 20, 4096);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&web)]));
    assert_eq!(export(&h), a.image);
}

fn export_env(swap: &Path, env: &[(&'static str, String); 4]) -> Vec<u8> {
    let o = run(mc(&["export", s(swap), "-"]).envs(env.clone()));
    assert!(
        o.status.success(),
        "export: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// Reads export `name` of the server at `socket` whole with nbdcopy; None when the
/// server does not offer it.
fn nbd_read(socket: &Path, name: &str) -> Option<Vec<u8>> {
    let o = Command::new("nbdcopy")
        .env("PATH", common::server::path_env())
        .arg(format!("nbd+unix:///{name}?socket={}", s(socket)))
        .arg("-")
        .output()
        .unwrap();
    o.status.success().then_some(o.stdout)
}

/// Waits (bounded) until the server offers export `name`; returns its bytes and how
/// long it took.
fn wait_for_export(
    socket: &Path,
    name: &str,
    limit: std::time::Duration,
) -> (Vec<u8>, std::time::Duration) {
    let t = std::time::Instant::now();
    loop {
        if let Some(b) = nbd_read(socket, name) {
            return (b, t.elapsed());
        }
        assert!(
            t.elapsed() < limit,
            "export {name} not offered within {limit:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn serve_follow_offers_each_version_and_open_connections_keep_theirs() {
    if !have("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, follower) = published(dir.path(), 1 << 20, "b/f");
    // --follow needs --read-only and a .swap with ref=.
    let e = fails(&mut mc(&["serve", "--follow", s(&follower)]), 2);
    assert!(e.contains("--read-only"), "{e}");
    let e = fails(
        &mut mc(&["serve", "--read-only", "--follow", s(&a.swap)]),
        2,
    );
    assert!(e.contains("follows no ref"), "{e}");

    let poll = std::time::Duration::from_millis(300);
    let srv = common::server::Server::start(
        dir.path(),
        &follower,
        &["--read-only", "--follow", "--poll", "300ms"],
    );
    let v1 = a.image.clone();
    assert_eq!(nbd_read(&srv.socket, "").as_deref(), Some(&v1[..]));
    assert_eq!(nbd_read(&srv.socket, "main@1").as_deref(), Some(&v1[..]));
    // A connection opened on version 1 and held across the new versions.
    let mut held = common::nbd::Nbd::connect(&srv.socket);
    let mut images = vec![v1.clone()];
    for v in 2..=4u64 {
        a.write(v, (v as usize) << 20, 256 << 10);
        ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
        images.push(a.image.clone());
        let name = format!("main@{v}");
        let (got, took) = wait_for_export(
            &srv.socket,
            &name,
            poll * 10 + std::time::Duration::from_secs(5),
        );
        assert_eq!(got, a.image, "{name}");
        eprintln!("{name} offered {took:?} after its push (poll {poll:?})");
        // The empty name and "main" now select the newest.
        assert_eq!(nbd_read(&srv.socket, "").as_deref(), Some(&a.image[..]));
        assert_eq!(nbd_read(&srv.socket, "main").as_deref(), Some(&a.image[..]));
        // The held connection still reads version 1, byte for byte, where it changed.
        let at = (v as usize) << 20;
        assert_eq!(
            held.read(at as u64, 256 << 10),
            v1[at..at + (256 << 10)].to_vec()
        );
    }
    // Every version stays offered as it was.
    for (i, img) in images.iter().enumerate() {
        assert_eq!(
            nbd_read(&srv.socket, &format!("main@{}", i + 1)).as_deref(),
            Some(&img[..])
        );
    }
    drop(held);
    srv.stop();

    // SIGUSR2 looks now, whatever the poll interval.
    let srv = common::server::Server::start(
        dir.path(),
        &follower,
        &["--read-only", "--follow", "--poll", "1h"],
    );
    a.write(9, 7 << 20, 4096);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    let pid = srv.child.as_ref().unwrap().id().to_string();
    assert!(Command::new("kill")
        .args(["-USR2", &pid])
        .status()
        .unwrap()
        .success());
    let (got, _) = wait_for_export(&srv.socket, "main@5", std::time::Duration::from_secs(10));
    assert_eq!(got, a.image);
    srv.stop();
}

/// A `.swap` pinned to version `seq` of ref `name` at the folder remote `publ` (read from
/// its version object), with `key_of`'s key: it reads exactly that version.
fn pinned(dir: &Path, publ: &Path, name: &str, seq: u64, key_of: &Path) -> PathBuf {
    let obj = publ.join(mindcastle::format::ref_version::object_name(name, seq));
    let v = mindcastle::format::ref_version::RefVersion::decode(&std::fs::read(&obj).unwrap(), "t")
        .unwrap();
    let text = std::fs::read_to_string(key_of).unwrap();
    let key = text.lines().find(|l| l.starts_with("key=")).unwrap();
    let p = dir.join(format!(
        "pinned-{name}-{seq}-{}.swap",
        uuid::Uuid::new_v4().simple()
    ));
    write_swap(
        &p,
        &format!(
            "uuid={}\nsize={}\n{key}\nsnapshot={}:{}\nsnaphash={}\nfallback={}\n",
            uuid::Uuid::new_v4(),
            v.disk_size,
            v.root.id,
            v.root.size,
            hex::encode(v.root.tag),
            s(publ)
        ),
    );
    p
}

fn chunk_names(publ: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(publ)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".lvl"))
        .collect();
    v.sort();
    v
}

#[test]
fn gc_at_a_remote_keeps_what_kept_versions_need() {
    let dir = tempfile::tempdir().unwrap();
    let publ = dir.path().join("pub");
    let mut a = Writer::new(&dir.path().join("a"), "a");
    let mut images = Vec::new();
    for v in 1..=5u64 {
        a.write(v, ((v as usize) % 4) << 20, 512 << 10);
        ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
        images.push(a.image.clone());
    }
    // Another disk's refused push leaves its chunks behind (orphans).
    let mut b = Writer::new(&dir.path().join("b"), "b");
    b.write(77, 0, 1 << 20);
    fails(&mut mc(&["push", "--ref", "main", s(&b.swap), s(&publ)]), 5);
    let before = chunk_names(&publ);

    // Refusals that delete nothing.
    let e = fails(&mut mc(&["gc", s(&publ)]), 2);
    assert!(e.contains("--key-from"), "{e}");
    let e = fails(
        &mut mc(&["gc", "--key-from", s(&b.swap), "--grace", "0s", s(&publ)]),
        2,
    );
    assert!(e.contains("nothing was deleted"), "{e}");
    let e = fails(&mut mc(&["gc", "--keep", "1", s(&a.swap)]), 2);
    assert!(e.contains("of a remote"), "{e}");
    let out = json(&ok(&mut mc(&[
        "gc",
        "--json",
        "--dry-run",
        "--keep",
        "2",
        "--grace",
        "0s",
        "--key-from",
        s(&a.swap),
        s(&publ),
    ])));
    assert_eq!(out["deleted"], false);
    assert_eq!(out["versions_deleted"], 3);
    assert!(out["garbage_chunks"].as_u64().unwrap() > 0);
    assert_eq!(chunk_names(&publ), before, "a dry run deletes nothing");
    // Inside the grace period (default 1h) nothing goes: every version was superseded
    // minutes ago at most, and every orphan is young.
    let out = json(&ok(&mut mc(&[
        "gc",
        "--json",
        "--keep",
        "1",
        "--key-from",
        s(&a.swap),
        s(&publ),
    ])));
    assert_eq!(out["versions_deleted"], 0);
    assert_eq!(out["garbage_chunks"], 0);
    assert!(out["young_chunks"].as_u64().unwrap() > 0);
    assert_eq!(chunk_names(&publ), before);

    // A lock held by a running push stops a collection (exit 5), and the reverse.
    std::fs::create_dir_all(publ.join("locks")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::fs::write(
        publ.join("locks/push-test"),
        format!("{{\"kind\":\"push\",\"pid\":1,\"host\":\"h\",\"time_ms\":{now}}}"),
    )
    .unwrap();
    let e = fails(&mut mc(&["gc", "--key-from", s(&a.swap), s(&publ)]), 5);
    assert!(e.contains("push") && e.contains("locks/push-test"), "{e}");
    std::fs::remove_file(publ.join("locks/push-test")).unwrap();
    std::fs::write(
        publ.join("locks/gc-test"),
        format!("{{\"kind\":\"gc\",\"pid\":1,\"host\":\"h\",\"time_ms\":{now}}}"),
    )
    .unwrap();
    a.write(6, 5 << 20, 4096);
    let e = fails(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]), 5);
    assert!(e.contains("collection"), "{e}");
    // A stale lock (its holder killed 20 minutes ago) is ignored, then removed.
    let old = now - 20 * 60 * 1000;
    std::fs::write(
        publ.join("locks/gc-test"),
        format!("{{\"kind\":\"gc\",\"pid\":1,\"host\":\"h\",\"time_ms\":{old}}}"),
    )
    .unwrap();
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    images.push(a.image.clone());

    // Keep 2, no grace: versions 5 and 6 stay, whole; the rest and the orphans go.
    let out = json(&ok(&mut mc(&[
        "gc",
        "--json",
        "--keep",
        "2",
        "--grace",
        "0s",
        "--key-from",
        s(&a.swap),
        s(&publ),
    ])));
    assert_eq!(out["deleted"], true);
    assert_eq!(out["versions_deleted"], 4);
    assert_eq!(out["stale_locks"], 1);
    assert!(!publ.join("locks").exists(), "no lock left behind");
    let log = json(&ok(&mut mc(&["log", "--json", "--ref", "main", s(&publ)])));
    let seqs: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![6, 5]);
    for seq in [5u64, 6] {
        let p = pinned(dir.path(), &publ, "main", seq, &a.swap);
        assert_eq!(export(&p), images[seq as usize - 1], "version {seq}");
        ok(&mut mc(&["fsck", s(&p)]));
    }
    assert_eq!(
        chunk_names(&publ).len() as u64,
        out["live_chunks"].as_u64().unwrap()
    );
    // A follower still reads the newest.
    let follower = dir.path().join("f.swap");
    hand_follower(&follower, &a.swap, s(&publ));
    assert_eq!(export(&follower), a.image);
}

/// A follower kept on version 1 by writes of its own reads the rest of its disk from
/// the remote; once that version is collected, a read names the version and what to
/// do, each missing chunk is warned about once, and an export leaves no file behind.
#[test]
fn a_follower_whose_version_was_collected_is_told_why_it_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, f) = published(dir.path(), 4 << 20, "f");
    // One block of its own (import writes from offset 0): the rest stays version 1's.
    let own = dir.path().join("own.raw");
    std::fs::write(&own, common::noise(5, 4096)).unwrap();
    ok(&mut mc(&["import", s(&f), s(&own)]));
    a.write(2, 0, 4 << 20);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    gc_keep_one(&a.swap, &publ, "0s");
    let out = dir.path().join("out.raw");
    let e = fails(&mut mc(&["export", s(&f), s(&out)]), 4);
    assert!(
        e.contains("version 1 of ref 'main'") && e.contains("pull"),
        "{e}"
    );
    assert!(!out.exists(), "a failed export left {}", out.display());
    // Read to stdout, the error is the disk's, not a closed pipe.
    let e = fails(&mut mc(&["export", s(&f), "-"]), 4);
    assert!(!e.contains("standard output closed"), "{e}");
    let mut warned: Vec<&str> = e
        .lines()
        .filter(|l| l.contains("no source could give the chunk"))
        .map(|l| l.split("chunk=").nth(1).unwrap().split(' ').next().unwrap())
        .collect();
    assert!(!warned.is_empty(), "{e}");
    let all = warned.len();
    warned.sort_unstable();
    warned.dedup();
    assert_eq!(
        all,
        warned.len(),
        "a chunk warned about more than once: {e}"
    );
    // The writer's disk itself is whole.
    assert_eq!(export(&a.swap), a.image);
}

#[test]
fn gc_keeps_a_version_a_follower_reads_until_its_grace_ends() {
    if !have("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, follower) = published(dir.path(), 2 << 20, "f");
    let v1 = a.image.clone();
    let srv = common::server::Server::start(
        dir.path(),
        &follower,
        &["--read-only", "--follow", "--poll", "200ms"],
    );
    // Every block of version 1 is rewritten by version 2: none of its data is shared.
    a.write(2, 0, 2 << 20);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    let (got, _) = wait_for_export(&srv.socket, "main@2", std::time::Duration::from_secs(10));
    assert_eq!(got, a.image);
    // Inside the grace period version 1 stays, and its readers with it.
    let out = gc_keep_one(&a.swap, &publ, "1h");
    assert_eq!(out["versions_deleted"], 0);
    assert_eq!(nbd_read(&srv.socket, "main@1").as_deref(), Some(&v1[..]));
    // After it, version 1 goes; reading it is an error, never version 2's bytes.
    let pinned_v1 = pinned(dir.path(), &publ, "main", 1, &a.swap);
    let out = gc_keep_one(&a.swap, &publ, "0s");
    assert_eq!(out["versions_deleted"], 1);
    assert!(out["garbage_chunks"].as_u64().unwrap() > 0);
    let o = Command::new("nbdcopy")
        .env("PATH", common::server::path_env())
        .arg(format!("nbd+unix:///main@1?socket={}", s(&srv.socket)))
        .arg("-")
        .output()
        .unwrap();
    // The server may still hold version 1's files open (a folder remote): then it reads
    // them whole; otherwise it fails. Never other bytes.
    assert!(
        v1[..o.stdout.len()] == o.stdout[..],
        "only version 1's bytes, if any"
    );
    assert_eq!(o.status.success(), o.stdout.len() == v1.len());
    // A new reader of version 1 gets an error naming what is missing.
    let e = fails(&mut mc(&["export", s(&pinned_v1), "-"]), 4);
    assert!(
        e.contains("root ") && (e.contains("not found") || e.contains("No such file")),
        "{e}"
    );
    assert_eq!(nbd_read(&srv.socket, "main").as_deref(), Some(&a.image[..]));
    srv.stop();
}

#[test]
fn push_and_gc_killed_anywhere_leave_every_listed_version_whole() {
    // 16 rounds: write, then a push --ref or a gc --keep 2 --grace 0s killed with
    // SIGKILL after 0-250 ms. After each, every version `log --ref` lists reads as
    // the disk was when it was pushed (fsck clean), and the next command runs (a
    // killed process's lock on this host is stale at once).
    let dir = tempfile::tempdir().unwrap();
    let publ = dir.path().join("pub");
    let mut a = Writer::new(&dir.path().join("a"), "a");
    a.write(1, 0, 1 << 20);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    let mut images: std::collections::HashMap<u64, Vec<u8>> = [(1, a.image.clone())].into();
    let mut x = 0x9e37_79b9_u64;
    let mut killed = 0;
    for round in 0..16u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let push = round % 2 == 0;
        if push {
            a.write(100 + round, ((round as usize) % 6) << 20, 256 << 10);
        }
        let mut cmd = if push {
            mc(&["push", "--ref", "main", s(&a.swap), s(&publ)])
        } else {
            mc(&[
                "gc",
                "--keep",
                "2",
                "--grace",
                "0s",
                "--key-from",
                s(&a.swap),
                s(&publ),
            ])
        };
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(x % 250));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let log = json(&ok(&mut mc(&["log", "--json", "--ref", "main", s(&publ)])));
        let seqs: Vec<u64> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["seq"].as_u64().unwrap())
            .collect();
        if push {
            // A version made by this push names the disk as it is now.
            if let Some(&newest) = seqs.first() {
                images.entry(newest).or_insert_with(|| a.image.clone());
            }
        }
        for seq in &seqs {
            let p = pinned(dir.path(), &publ, "main", *seq, &a.swap);
            assert_eq!(&export(&p), &images[seq], "round {round}: version {seq}");
            ok(&mut mc(&["fsck", s(&p)]));
            std::fs::remove_file(&p).unwrap();
        }
    }
    eprintln!("{killed} of 16 commands killed while running");
    // Whatever was left half done, a whole push and gc still work after.
    a.write(999, 7 << 20, 4096);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    gc_keep_one(&a.swap, &publ, "0s");
    let follower = dir.path().join("f.swap");
    hand_follower(&follower, &a.swap, s(&publ));
    assert_eq!(export(&follower), a.image);
}

/// Rewrites the first two 16-byte blocks of a sealed record's ciphertext so that it
/// still passes its AES-GCM-SIV tag, as any holder of the disk key can: the record
/// subkey gives POLYVAL's key H (RFC 8452, zero nonce); XORing plaintext block i with
/// r and block i+1 with r·H leaves POLYVAL, and so the tag and the keystream,
/// unchanged. Returns the XOR applied to the plaintext's first 32 bytes.
fn forge_record(ciphertext: &mut [u8], disk_key: &[u8; 32]) -> [u8; 32] {
    use aes::cipher::{BlockEncrypt, KeyInit};
    use polyval::universal_hash::UniversalHash;
    use sha2::Digest;
    let mut h = sha2::Sha512::new();
    h.update(b"mindcastle/v1/record");
    h.update(disk_key);
    let sub = h.finalize();
    let aes = aes::Aes256::new_from_slice(&sub[..32]).unwrap();
    let derive = |counter: u32| {
        let mut b = aes::Block::default();
        b[..4].copy_from_slice(&counter.to_le_bytes());
        aes.encrypt_block(&mut b);
        b
    };
    let mut auth_key = [0u8; 16];
    auth_key[..8].copy_from_slice(&derive(0)[..8]);
    auth_key[8..].copy_from_slice(&derive(1)[..8]);
    let r = [0x5au8; 16];
    let mut p = polyval::Polyval::new(&auth_key.into());
    p.update(&[r.into()]);
    let rh: [u8; 16] = p.finalize().into();
    let mut delta = [0u8; 32];
    delta[..16].copy_from_slice(&r);
    delta[16..].copy_from_slice(&rh);
    for (c, d) in ciphertext.iter_mut().zip(delta) {
        *c ^= d;
    }
    delta
}

#[test]
fn a_mirror_serving_a_record_forged_under_its_tag_is_refused_by_a_trusting_reader() {
    // A reader holding the disk key runs a mirror and rewrites a record so that its
    // tag still checks. A reader of the same key that trusts only signed versions
    // reads whole chunks checked against their names, so it refuses the forgery (exit
    // 3, no bytes); a reader without trust= takes it (the symmetric key's limit,
    // documented), which shows the forgery is real.
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, follower, key) = signed_setup(dir.path());
    // Incompressible blocks are stored raw: records of 4096 + 16 bytes back to back
    // from offset 0 of each data chunk.
    a.image[2 << 20..3 << 20].copy_from_slice(&common::noise(5, 1 << 20));
    std::fs::write(a.dir.join("img"), &a.image).unwrap();
    ok(&mut mc(&["import", s(&a.swap), s(&a.dir.join("img"))]));
    ok(&mut mc(&[
        "push",
        "--ref",
        "main",
        "--sign",
        s(&key),
        s(&a.swap),
        s(&publ),
    ]));
    let image = a.image.clone();
    let text = std::fs::read_to_string(&a.swap).unwrap();
    let key_line = text.lines().find(|l| l.starts_with("key=")).unwrap();
    let mut disk_key = [0u8; 32];
    hex::decode_to_slice(&key_line[4..], &mut disk_key).unwrap();
    // The mirror: a copy of the published folder with the first record of a data chunk
    // of raw records forged.
    let mirror = dir.path().join("mirror");
    std::fs::create_dir_all(&mirror).unwrap();
    // The record of block 512 (noise: stored raw), as the disk seals it: found in the
    // published chunks by its bytes.
    let block = &image[2 << 20..(2 << 20) + 4096];
    let sealed = {
        use aes_gcm_siv::aead::{Aead, KeyInit, Payload};
        use sha2::Digest;
        let mut h = sha2::Sha512::new();
        h.update(b"mindcastle/v1/record");
        h.update(disk_key);
        let sub = h.finalize();
        let c = aes_gcm_siv::Aes256GcmSiv::new_from_slice(&sub[..32]).unwrap();
        c.encrypt(
            &[0u8; 12].into(),
            Payload {
                msg: block,
                aad: b"mindcastle/record/v1",
            },
        )
        .unwrap()
    };
    let mut forged_one = None;
    for e in std::fs::read_dir(&publ).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            continue;
        }
        let mut bytes = std::fs::read(e.path()).unwrap();
        std::fs::write(mirror.join(e.file_name()), &bytes).unwrap();
        if forged_one.is_none() {
            if let Some(at) = bytes.windows(sealed.len()).position(|w| w == &sealed[..]) {
                let delta = forge_record(&mut bytes[at..at + 4096], &disk_key);
                forged_one = Some((e.file_name(), delta, bytes));
            }
        }
    }
    let (name, delta, forged) = forged_one.expect("the record of block 512 in a chunk");
    std::fs::write(mirror.join(&name), &forged).unwrap();
    copy_dir(&publ.join("refs"), &mirror.join("refs"));
    // Which block that record holds: the one whose bytes the forgery changes.
    let untrusting = dir.path().join("u.swap");
    let trusting = dir.path().join("t.swap");
    for (p, keep_trust) in [(&untrusting, false), (&trusting, true)] {
        let t = std::fs::read_to_string(&follower).unwrap();
        let lines: Vec<String> = t
            .lines()
            .filter(|l| keep_trust || !l.starts_with("trust="))
            .map(|l| {
                if l.starts_with("fallback=") {
                    format!("fallback={}", s(&mirror))
                } else if l.starts_with("uuid=") {
                    format!("uuid={}", uuid::Uuid::new_v4())
                } else {
                    l.to_string()
                }
            })
            .collect();
        write_swap(p, &(lines.join("\n") + "\n"));
    }
    let taken = export(&untrusting);
    let diff: Vec<usize> = (0..image.len()).filter(|&i| taken[i] != image[i]).collect();
    assert_eq!(
        diff.len(),
        32 - delta.iter().filter(|d| **d == 0).count(),
        "the forgery passes the tag check"
    );
    assert!(
        diff.iter()
            .all(|&i| taken[i] == image[i] ^ delta[i - diff[0]]),
        "exactly the forged bytes"
    );
    let o = run(&mut mc(&["export", s(&trusting), "-"]));
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.stdout.is_empty(), "nothing is returned");
    assert!(String::from_utf8_lossy(&o.stderr).contains("do not match its name"));
    // With the honest folder behind the mirror the trusting reader reads right.
    let both = dir.path().join("b.swap");
    let t = std::fs::read_to_string(&trusting).unwrap();
    write_swap(
        &both,
        &t.replace(
            &format!("fallback={}", s(&mirror)),
            &format!("fallback={}\nfallback={}", s(&mirror), s(&publ)),
        )
        .replace(
            t.lines().find(|l| l.starts_with("uuid=")).unwrap(),
            &format!("uuid={}", uuid::Uuid::new_v4()),
        ),
    );
    assert_eq!(export(&both), image);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_follower_whose_version_was_collected_still_moves_and_one_with_writes_stays() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, clean) = published(dir.path(), 1 << 20, "clean");
    let busy = dir.path().join("busy.swap");
    std::fs::copy(&clean, &busy).unwrap();
    let text = std::fs::read_to_string(&busy).unwrap();
    let uuid_line = text
        .lines()
        .find(|l| l.starts_with("uuid="))
        .unwrap()
        .to_string();
    write_swap(
        &busy,
        &text.replace(&uuid_line, &format!("uuid={}", uuid::Uuid::new_v4())),
    );
    // busy writes (a checkpointed state of its own).
    let own = write_own(&busy, &a.image, 8192, 4, &dir.path().join("own.img"));
    for v in 2..=3 {
        a.write(v, 2 << 20, 4096);
        ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    }
    gc_keep_one(&a.swap, &publ, "0s");
    // Version 1, which both came from, is gone at the remote.
    let up = json(&ok(&mut mc(&["update", "--json", s(&clean)])));
    assert_eq!(up["outcome"], "moved");
    assert_eq!(up["newest_seq"], 3);
    assert_eq!(export(&clean), a.image);
    fails(&mut mc(&["update", s(&busy)]), 5);
    assert_eq!(export(&busy), own, "its own writes stay");
}

#[test]
fn a_follower_with_writes_of_its_own_opens_them_whatever_the_remote_offers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, follower, _key) = signed_setup(dir.path());
    let own = write_own(&follower, &a.image, 0, 8, &dir.path().join("own.img"));
    // An unsigned version lands (pushed with --force by a holder of bucket access).
    a.write(2, 1 << 20, 4096);
    ok(&mut mc(&[
        "push",
        "--ref",
        "main",
        "--force",
        s(&a.swap),
        s(&publ),
    ]));
    assert_eq!(
        export(&follower),
        own,
        "its own state opens, with a warning"
    );
    let e = fails(&mut mc(&["update", s(&follower)]), 3);
    assert!(e.contains("unsigned"), "{e}");
}

/// A ref's disk resized at its source (`resize`): a follower at its version takes the
/// newer version at that version's size (grown: the new space and what was written
/// there; shrunk: the smaller disk), at an open, by `update` and through `serve
/// --follow` (the export's size and bytes are the version's); `size=` follows
/// `snapshot=`. A follower with writes of its own stays on them at its own size.
#[test]
fn a_follower_takes_a_resized_version_at_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, publ, f) = published(dir.path(), 1 << 20, "b/f");
    let srv = have("nbdcopy").then(|| {
        common::server::Server::start(
            dir.path(),
            &f,
            &["--read-only", "--follow", "--poll", "300ms"],
        )
    });
    // Grown to 12 MiB, with data written past the old end.
    ok(&mut mc(&["resize", s(&a.swap), "12M"]));
    a.image.resize(12 << 20, 0);
    a.write(2, 10 << 20, 256 << 10);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    if let Some(srv) = srv {
        let (got, _) = wait_for_export(&srv.socket, "main@2", std::time::Duration::from_secs(10));
        assert_eq!(got.len(), 12 << 20, "the export has the version's size");
        assert!(got == a.image, "serve --follow: version 2's bytes");
        srv.stop();
    }
    assert!(
        export(&f) == a.image,
        "a follower's open takes the grown version"
    );
    assert_eq!(swap_value(&f, "size"), Some((12u64 << 20).to_string()));
    assert_eq!(swap_value(&f, "refseq").as_deref(), Some("2"));
    ok(&mut mc(&["fsck", s(&f)]));

    // Shrunk to 4 MiB: update moves the follower to the smaller disk.
    ok(&mut mc(&["resize", "--shrink", s(&a.swap), "4M"]));
    a.image.truncate(4 << 20);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    let up = json(&ok(&mut mc(&["update", "--json", s(&f)])));
    assert_eq!(up["outcome"], "moved");
    assert_eq!(swap_value(&f, "size"), Some((4u64 << 20).to_string()));
    assert!(export(&f) == a.image, "update takes the shrunk version");

    // With writes of its own, the follower stays on them at its own size.
    let own = write_own(&f, &a.image, 8192, 5, &dir.path().join("own.img"));
    ok(&mut mc(&["resize", s(&a.swap), "8M"]));
    a.image.resize(8 << 20, 0);
    a.write(3, 6 << 20, 4096);
    ok(&mut mc(&["push", "--ref", "main", s(&a.swap), s(&publ)]));
    assert!(export(&f) == own, "its own writes, at its own size");
    fails(&mut mc(&["update", s(&f)]), 5);
    assert_eq!(swap_value(&f, "size"), Some((4u64 << 20).to_string()));
    ok(&mut mc(&["fsck", s(&f)]));
}
