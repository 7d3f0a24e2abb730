//! Publish and attach elsewhere, with real servers on 127.0.0.1: nginx serving a pushed
//! folder (Range, and WebDAV PUT for `push` over http), and an S3 server (s3s-fs) with
//! SigV4 keys. Host A and host B are separate processes with separate folders; B has
//! only the `.swap` that `push --swap-out` wrote.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{have, tool_ok, Server};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

use common::web::{free_port, nginx, wait_port, Daemon};

use common::s3::{KEY, SECRET};

/// s3s-fs on 127.0.0.1 with SigV4 keys, data under `root`, bucket `bucket` made.
fn s3(root: &Path) -> (Daemon, u16) {
    common::s3::start(root)
}

fn s3_env(cmd: &mut Command, port: u16) -> &mut Command {
    cmd.envs(common::s3::env(port))
}

fn run_ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{cmd:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Host A: a disk with `len` bytes of data written at 1 MiB, closed.
fn host_a(dir: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    std::fs::create_dir_all(dir).unwrap();
    let swap = dir.join("a.swap");
    let size = format!("{}M", ((len >> 20) + 8).max(64));
    run_ok(common::bin().args(["create", "--size", &size, s(&swap)]));
    let data = common::data(77, len);
    let img = dir.join("img");
    let mut full = vec![0u8; 1 << 20];
    full.extend_from_slice(&data);
    std::fs::write(&img, &full).unwrap();
    run_ok(common::bin().args(["import", s(&swap), s(&img)]));
    (swap, full)
}

fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    v.sort();
    v
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap()
}

#[test]
fn push_over_webdav_then_serve_from_nginx_on_another_host() {
    if !have("nginx") || !have("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let web = dir.path().join("www");
    std::fs::create_dir_all(&web).unwrap();
    let (_nginx, port) = nginx(dir.path(), &web);
    let (a_swap, image) = host_a(&dir.path().join("a"), 256 << 20);
    let url = format!("http://127.0.0.1:{port}/pub/d1");
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_swap = b_dir.join("b.swap");
    let out =
        run_ok(common::bin().args(["push", "--json", "--swap-out", s(&b_swap), s(&a_swap), &url]));
    let first = json(&out);
    assert!(first["copied"].as_u64().unwrap() > 3, "{first}");
    let published = files(&web.join("pub/d1"));
    // Pushing again copies nothing.
    let again = json(&run_ok(common::bin().args([
        "push",
        "--json",
        s(&a_swap),
        &url,
    ])));
    assert_eq!(again["copied"], 0, "{again}");
    assert_eq!(again["present"], first["chunks"]);
    // Host B: only b.swap. Serve it over NBD and read every byte back.
    let text = std::fs::read_to_string(&b_swap).unwrap();
    assert!(text.contains(&format!("fallback={url}")), "{text}");
    let server = Server::start(&b_dir, &b_swap, &[]);
    let back = b_dir.join("back.img");
    tool_ok("nbdcopy", &[&server.uri(), s(&back)]);
    let got = std::fs::read(&back).unwrap();
    assert!(got[..image.len()] == image[..], "B read different bytes");
    assert!(got[image.len()..].iter().all(|&b| b == 0));
    // B writes: they stay in B's folder; A's published chunks do not change.
    tool_ok(
        "nbdsh",
        &[
            "-u",
            &server.uri(),
            "-c",
            "h.pwrite(b'\\x5a' * 65536, 0); h.flush()",
        ],
    );
    server.stop();
    assert_eq!(
        files(&web.join("pub/d1")),
        published,
        "the published copy changed"
    );
    let o = common::run(&["export", s(&b_swap), s(&b_dir.join("b.img"))]);
    assert!(o.status.success(), "{o:?}");
    let b_img = std::fs::read(b_dir.join("b.img")).unwrap();
    assert!(b_img[..65536].iter().all(|&b| b == 0x5a));
    assert!(b_img[65536..image.len()] == image[65536..]);
    let o = common::run(&["fsck", s(&b_swap)]);
    assert!(o.status.success(), "{o:?}");
}

#[test]
fn a_folder_copied_into_a_web_root_attaches_and_a_dead_server_fails_cleanly() {
    let Some(mut site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (a_swap, image) = host_a(&dir.join("a"), 6 << 20);
    let sw = mindcastle::volume::read_swap(&a_swap).unwrap();
    let data = mindcastle::volume::data_dir(&a_swap, &sw);
    // Published by a plain copy (chunks only), as with cp -r or rsync.
    std::fs::create_dir_all(web.join("copy")).unwrap();
    for e in std::fs::read_dir(&data).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".lvl") {
            std::fs::copy(e.path(), web.join("copy").join(e.file_name())).unwrap();
        }
    }
    let text = std::fs::read_to_string(&a_swap).unwrap();
    let b_swap = swap_with(
        &dir,
        "b",
        &text,
        &format!("fallback=http://127.0.0.1:{port}/copy\ncache=b-cache\n"),
    );
    let out = dir.join("b.img");
    run_ok(common::bin().args(["export", s(&b_swap), s(&out)]));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
    // The cache now holds what was fetched: with the server gone, a second export
    // still works from the cache alone.
    site.stop();
    std::fs::remove_file(&out).unwrap();
    run_ok(common::bin().args(["export", s(&b_swap), s(&out)]));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
    // Without the cache and with the server gone: a clear error, exit non-zero.
    let c_swap = swap_with(
        &dir,
        "c",
        &text,
        &format!("fallback=http://127.0.0.1:{port}/copy\n"),
    );
    let o = common::bin()
        .args(["export", s(&c_swap), s(&dir.join("c.img"))])
        .env("MINDCASTLE_REMOTE_TIMEOUT", "2s")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&format!("127.0.0.1:{port}")), "{e}");
}

#[test]
fn push_to_s3_then_export_and_pull_on_another_host() {
    if !have("s3s-fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_s3, port) = s3(&dir.path().join("s3root"));
    let (a_swap, image) = host_a(&dir.path().join("a"), 256 << 20);
    let url = "s3://bucket/disks/d1";
    let b_dir = dir.path().join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_swap = b_dir.join("b.swap");
    let first = json(&run_ok(s3_env(
        common::bin().args(["push", "--json", "--swap-out", s(&b_swap), s(&a_swap), url]),
        port,
    )));
    assert!(first["copied"].as_u64().unwrap() > 3);
    // A small change: only the new chunks go.
    let v = mindcastle::Volume::open(&a_swap, &Default::default()).unwrap();
    v.write_at(40 << 20, &common::data(5, 1 << 20)).unwrap();
    v.close().unwrap();
    let second = json(&run_ok(s3_env(
        common::bin().args(["push", "--json", s(&a_swap), url]),
        port,
    )));
    let copied = second["copied"].as_u64().unwrap();
    assert!(
        copied >= 1 && copied < first["copied"].as_u64().unwrap(),
        "{second}"
    );
    // B reads the first push's root (its .swap names it) from S3.
    let out = b_dir.join("b.img");
    run_ok(s3_env(
        common::bin().args(["export", s(&b_swap), s(&out)]),
        port,
    ));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
    // And serves it over NBD, read back whole by nbdcopy.
    if have("nbdcopy") {
        let env = [
            ("AWS_ACCESS_KEY_ID", KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
            ("AWS_REGION", "us-east-1".to_string()),
            ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
        ];
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server = Server::start_with_env(&b_dir, &b_swap, &["--read-only"], &env);
        let back = b_dir.join("back.img");
        tool_ok("nbdcopy", &[&server.uri(), s(&back)]);
        server.stop();
        assert!(std::fs::read(&back).unwrap()[..image.len()] == image[..]);
        std::fs::remove_file(&back).unwrap();
    }
    std::fs::remove_file(&out).unwrap();
    // Pull everything local, then the disk reads without the server.
    let pulled = json(&run_ok(s3_env(
        common::bin().args(["pull", "--json", s(&b_swap)]),
        port,
    )));
    assert!(pulled["copied"].as_u64().unwrap() > 0, "{pulled}");
    drop(_s3);
    let b_swap2 = b_dir.join("b2.swap");
    let text = std::fs::read_to_string(&b_swap).unwrap();
    let local_only: String = text
        .lines()
        .filter(|l| !l.starts_with("fallback="))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&b_swap2, local_only).unwrap();
    let o = common::run(&["fsck", s(&b_swap2)]);
    assert!(o.status.success(), "{o:?}");
}

/// A temporary folder with nginx serving its `www/` on 127.0.0.1.
struct Site {
    dir: tempfile::TempDir,
    web: PathBuf,
    port: u16,
    nginx: Option<Daemon>,
}

impl Site {
    /// None (the test skips, loudly) when nginx is missing outside CI.
    fn start() -> Option<Self> {
        if !have("nginx") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let web = dir.path().join("www");
        std::fs::create_dir_all(&web).unwrap();
        let (daemon, port) = nginx(dir.path(), &web);
        Some(Self {
            dir,
            web,
            port,
            nginx: Some(daemon),
        })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (reads must then come from elsewhere).
    fn stop(&mut self) {
        self.nginx = None;
    }
}

/// Writes `NAME.swap` in `dir`: host A's `.swap` text, a data folder of its own, and
/// `extra` lines (mode 0600, as `create` makes it).
fn swap_with(dir: &Path, name: &str, text: &str, extra: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(format!("{name}.swap"));
    std::fs::write(&p, format!("{text}swapdata={name}-data\n{extra}")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// Opens a disk read-only in this process.
fn open_read_only(swap: &Path) -> mindcastle::volume::Volume {
    mindcastle::volume::Volume::open(
        swap,
        &mindcastle::OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap()
}

/// Host B's `.swap`: host A's disk read through a proxy on `proxy_port` into a cache
/// folder of 64 MiB.
fn cached_reader(dir: &Path, text: &str, proxy_port: u16) -> PathBuf {
    swap_with(
        dir,
        "b",
        text,
        &format!("fallback=http://127.0.0.1:{proxy_port}/pub\ncache=cache\ncachesize=64M\n"),
    )
}

/// Publishes host A's disk into nginx's web root (plain copy of its chunks); returns
/// the `.swap` text and the image.
fn published(dir: &Path, web: &Path, len: usize) -> (String, Vec<u8>) {
    let (a_swap, image) = host_a(&dir.join("a"), len);
    let sw = mindcastle::volume::read_swap(&a_swap).unwrap();
    let data = mindcastle::volume::data_dir(&a_swap, &sw);
    std::fs::create_dir_all(web.join("pub")).unwrap();
    for e in std::fs::read_dir(&data).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".lvl") {
            std::fs::copy(e.path(), web.join("pub").join(e.file_name())).unwrap();
        }
    }
    (std::fs::read_to_string(&a_swap).unwrap(), image)
}

#[test]
fn a_flaky_corrupting_mirror_ahead_of_a_good_one_still_reads_right() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 16 << 20);
    // The first fallback corrupts 1% of answers and fails 10% with 503; the second is
    // clean. Every byte must come back right, with no error.
    let bad = common::proxy::Proxy::start(
        port,
        common::proxy::Faults {
            unavailable_permille: 100,
            corrupt_permille: 10,
            ..Default::default()
        },
        7,
    );
    let good = common::proxy::Proxy::start(port, Default::default(), 8);
    let b_swap = swap_with(
        &dir,
        "b",
        &text,
        &format!(
            "fallback=http://127.0.0.1:{}/pub\nfallback=http://127.0.0.1:{}/pub\n",
            bad.port, good.port
        ),
    );
    let out = dir.join("b.img");
    run_ok(common::bin().args(["export", s(&b_swap), s(&out)]));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
    assert!(bad.requests() > 20, "the first fallback was hardly asked");
    let injected = bad.injected();
    assert!(injected > 0, "no fault was injected");
    // Every source broken, one corrupting every answer and one without the disk: reads
    // fail (exit non-zero), nothing wrong is returned, and the log names the chunk and
    // each source's answer, each source once.
    *bad.faults.lock().unwrap() = common::proxy::Faults {
        corrupt_permille: 1000,
        ..Default::default()
    };
    let (bad_url, empty_url) = (
        format!("http://127.0.0.1:{}/pub", bad.port),
        format!("http://127.0.0.1:{}/nothing", good.port),
    );
    let c_swap = swap_with(
        &dir,
        "c",
        &text,
        &format!("fallback={bad_url}\nfallback={empty_url}\n"),
    );
    let o = common::run(&["export", s(&c_swap), s(&dir.join("c.img"))]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("no source could give the chunk"))
        .unwrap_or_else(|| panic!("no log line names the sources: {err}"));
    assert!(line.contains("chunk="), "{line}");
    for url in [&bad_url, &empty_url] {
        assert_eq!(line.matches(url.as_str()).count(), 1, "{url} in {line}");
    }
    assert!(
        line.contains(&format!("{empty_url}: chunk ")) && line.contains("not found"),
        "{line}"
    );
    assert!(!line.contains("<html"), "{line}");
}

#[test]
fn a_warm_cache_makes_no_request_after_a_restart() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 12 << 20);
    let proxy = common::proxy::Proxy::start(port, Default::default(), 1);
    let b_swap = cached_reader(&dir, &text, proxy.port);
    let before = json(&run_ok(common::bin().args(["info", "--json", s(&b_swap)])));
    // `info` itself reads the root and index (so those are cached now, whole or the
    // nodes it read); the data chunks are still only behind the fallback.
    let loc = &before["locations"];
    let held = |loc: &serde_json::Value| {
        loc["cache"].as_u64().unwrap() + loc["cache_partial"].as_u64().unwrap()
    };
    let reached = held(loc) + loc["remote"].as_u64().unwrap();
    assert!(loc["remote"].as_u64().unwrap() > 3, "{before}");
    assert_eq!(loc["local"], 0);
    let out = dir.join("b.img");
    run_ok(common::bin().args(["export", s(&b_swap), s(&out)]));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
    let after = json(&run_ok(common::bin().args(["info", "--json", s(&b_swap)])));
    assert_eq!(held(&after["locations"]), reached, "{after}");
    assert_eq!(after["locations"]["remote"], 0);
    let cold = proxy.requests();
    assert!(cold > 0);
    let fetched = proxy.body_bytes();
    let stored: u64 = files(&web.join("pub")).iter().map(|f| f.1).sum();
    // Each byte once, but for the few index nodes the first `info` read as ranges
    // before the export fetched their chunk whole.
    assert!(
        fetched <= stored + stored / 100,
        "fetched {fetched} bytes of a {stored}-byte disk"
    );
    std::fs::remove_file(&out).unwrap();
    run_ok(common::bin().args(["export", s(&b_swap), s(&out)]));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
    assert_eq!(
        proxy.requests(),
        cold,
        "a warm cache still asked the server"
    );
}

/// A scattered reader through a cache fetches the records it reads, not the chunks
/// they sit in; a restart serves those ranges from the cache, and `info` counts the
/// chunks held in part.
#[test]
fn scattered_reads_fetch_and_keep_only_their_ranges() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 60 << 20);
    let proxy = common::proxy::Proxy::start(port, Default::default(), 2);
    let b_swap = cached_reader(&dir, &text, proxy.port);
    let body = || proxy.body_bytes();
    // 8 reads of 4 KiB, 8 MiB apart (a chunk holds at most 4 MiB stored, under 8 MiB
    // of this data, so each is in its own chunk; a second read in a chunk would fetch
    // it whole), out of order (no read-ahead), after the 1 MiB of zeroes host A left.
    let offsets: Vec<u64> = (0..8u64)
        .map(|i| (1 << 20) + (i * 3 % 8) * (8 << 20) + 8192)
        .collect();
    let read_all = || {
        let v = open_read_only(&b_swap);
        let opened = (proxy.requests(), body());
        for &off in &offsets {
            let mut got = vec![0u8; 4096];
            v.read_at(off, &mut got).unwrap();
            assert!(got[..] == image[off as usize..off as usize + 4096]);
        }
        opened
    };
    let (_, at_open) = read_all();
    let read = (offsets.len() * 4096) as u64;
    let fetched = body() - at_open;
    assert!(
        fetched <= read + read * 3 / 10,
        "fetched {fetched} bytes for {read} bytes of scattered reads"
    );
    let stored: u64 = files(&web.join("pub")).iter().map(|f| f.1).sum();
    assert!(fetched * 20 < stored, "{fetched} of {stored}");
    // Restarted: the ranges come from the cache.
    let (requests, _) = read_all();
    assert_eq!(proxy.requests(), requests, "a held range was asked again");
    let info = json(&run_ok(common::bin().args(["info", "--json", s(&b_swap)])));
    assert!(
        info["locations"]["cache_partial"].as_u64().unwrap() >= 5,
        "{info}"
    );
}

/// A web server that ignores Range and answers 200 with the whole chunk still serves
/// every read, with a cache (which then keeps the chunk) and without one.
#[test]
fn a_server_that_ignores_range_still_serves_every_read() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 24 << 20);
    let proxy = common::proxy::Proxy::start(
        port,
        common::proxy::Faults {
            ignore_range: true,
            ..Default::default()
        },
        4,
    );
    let offsets: Vec<u64> = (0..6u64)
        .map(|i| (1 << 20) + i * (3 << 20) + 12288)
        .collect();
    for (name, extra) in [("b", "cache=cache\ncachesize=64M\n"), ("c", "")] {
        let swap = swap_with(
            &dir,
            name,
            &text,
            &format!("fallback=http://127.0.0.1:{}/pub\n{extra}", proxy.port),
        );
        let before = proxy.requests();
        let v = open_read_only(&swap);
        for &off in offsets.iter().rev() {
            let mut got = vec![0u8; 4096];
            v.read_at(off, &mut got).unwrap();
            assert!(
                got[..] == image[off as usize..off as usize + 4096],
                "{name} at {off}"
            );
        }
        drop(v);
        assert!(proxy.requests() > before, "{name}: nothing was fetched");
        let out = dir.join(format!("{name}.img"));
        run_ok(common::bin().args(["export", s(&swap), s(&out)]));
        assert!(
            std::fs::read(&out).unwrap()[..image.len()] == image[..],
            "{name}"
        );
    }
}

/// `info` shows what the fallbacks have served a disk, as counted at the server.
#[test]
fn info_shows_what_each_fallback_served() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 8 << 20);
    let proxy = common::proxy::Proxy::start(port, Default::default(), 6);
    let url = format!("http://127.0.0.1:{}/pub", proxy.port);
    let b_swap = swap_with(&dir, "b", &text, &format!("fallback={url}\n"));
    let body = || proxy.body_bytes();
    let info = json(&run_ok(common::bin().args(["info", "--json", s(&b_swap)])));
    assert_eq!(info["fetched"], serde_json::json!([]), "{info}");
    // That `info` read the root and index (a read-only run: not recorded).
    let (r0, b0) = (proxy.requests(), body());
    assert!(r0 > 0);
    run_ok(common::bin().args(["pull", s(&b_swap)]));
    let info = json(&run_ok(common::bin().args(["info", "--json", s(&b_swap)])));
    let f = &info["fetched"];
    assert_eq!(f.as_array().unwrap().len(), 1, "{info}");
    assert_eq!(f[0]["url"], url.as_str(), "{info}");
    assert_eq!(
        f[0]["requests"].as_u64().unwrap(),
        proxy.requests() - r0,
        "{info}"
    );
    assert_eq!(f[0]["bytes"].as_u64().unwrap(), body() - b0, "{info}");
    assert!((body() - b0) as usize > image.len() / 3, "{info}");
    // A second run adds to the first.
    let before = (proxy.requests(), body());
    let c = dir.join("c.img");
    let out = run_ok(common::bin().args(["info", s(&b_swap)]));
    assert!(
        out.contains(&format!("fetched:           {} requests", before.0 - r0)),
        "{out}"
    );
    // One chunk lost locally: the next pull fetches it again.
    std::fs::remove_file(&common::chunk_files(&b_swap)[0]).unwrap();
    run_ok(common::bin().args(["pull", s(&b_swap)]));
    run_ok(common::bin().args(["export", s(&b_swap), s(&c)]));
    assert!(std::fs::read(&c).unwrap()[..image.len()] == image[..]);
    let info = json(&run_ok(common::bin().args(["info", "--json", s(&b_swap)])));
    assert!(proxy.requests() > before.0);
    assert_eq!(
        info["fetched"][0]["requests"].as_u64().unwrap(),
        proxy.requests() - r0,
        "{info}"
    );
    assert_eq!(
        info["fetched"][0]["bytes"].as_u64().unwrap(),
        body() - b0,
        "{info}"
    );
}

/// One flaky source and nothing behind it: answers that fail with 503 or are cut
/// mid-body are retried, and the read comes back whole with no error. A server that
/// hangs gives a clear error once the deadline passes.
#[test]
fn a_single_flaky_source_is_retried_and_a_hung_one_times_out() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 12 << 20);
    let proxy = common::proxy::Proxy::start(
        port,
        common::proxy::Faults {
            unavailable_permille: 200,
            truncate_permille: 200,
            ..Default::default()
        },
        9,
    );
    for (name, extra) in [("b", ""), ("c", "cache=c-cache\n")] {
        let swap = swap_with(
            &dir,
            name,
            &text,
            &format!("fallback=http://127.0.0.1:{}/pub\n{extra}", proxy.port),
        );
        let out = dir.join(format!("{name}.img"));
        let o = common::bin()
            .args(["export", s(&swap), s(&out)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{name}: {o:?}");
        assert!(
            std::fs::read(&out).unwrap()[..image.len()] == image[..],
            "{name}"
        );
    }
    let injected = proxy.injected();
    let asked = proxy.requests();
    assert!(
        injected >= 2,
        "only {injected} faults injected in {asked} requests"
    );
    // A server that takes requests and never answers.
    let hung = common::proxy::Proxy::start(
        port,
        common::proxy::Faults {
            stall: true,
            ..Default::default()
        },
        10,
    );
    let d_swap = swap_with(
        &dir,
        "d",
        &text,
        &format!("fallback=http://127.0.0.1:{}/pub\n", hung.port),
    );
    let started = std::time::Instant::now();
    let o = common::bin()
        .args(["export", s(&d_swap), s(&dir.join("d.img"))])
        .env("MINDCASTLE_REMOTE_TIMEOUT", "1s")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains(&format!("127.0.0.1:{}", hung.port)), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "gave up only after {:?}",
        started.elapsed()
    );
}

/// A disk whose index is larger than what is fetched at open opens without it: opening
/// moves a fraction of the bytes, reads come back right meanwhile, and the index chunks
/// then arrive in the cache in the background.
#[test]
fn a_large_index_comes_in_the_background() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 24 << 20);
    let proxy = common::proxy::Proxy::start(port, Default::default(), 12);
    let body = || proxy.body_bytes();
    let open_with = |name: &str, index_at_open: Option<u64>| {
        let swap = swap_with(
            &dir,
            name,
            &text,
            &format!(
                "fallback=http://127.0.0.1:{}/pub\ncache={name}-cache\n",
                proxy.port
            ),
        );
        let b0 = body();
        let v = mindcastle::volume::Volume::open(
            &swap,
            &mindcastle::OpenOptions {
                read_only: true,
                index_at_open,
                ..Default::default()
            },
        )
        .unwrap();
        (swap, v, body() - b0)
    };
    let (_, whole, at_open_whole) = open_with("b", None);
    drop(whole);
    // What opening with the whole index put in the cache: the root and index chunks.
    let whole_files = |name: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(dir.join(format!("{name}-cache")))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".lvl"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let index = whole_files("b");
    assert!(index.len() >= 2, "{index:?}");
    let (_, v, at_open_small) = open_with("c", Some(0));
    assert!(
        at_open_small * 2 < at_open_whole,
        "opening moved {at_open_small} bytes, against {at_open_whole} with the index whole"
    );
    // Nothing read yet: the index chunks arrive by themselves.
    let t = Instant::now();
    while !whole_files("c").is_superset(&index) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the index never arrived: {:?} of {index:?}",
            whole_files("c")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for off in [(2u64 << 20) + 4096, 9 << 20, (20 << 20) + 512] {
        let mut got = vec![0u8; 8192];
        v.read_at(off, &mut got).unwrap();
        assert!(
            got[..] == image[off as usize..off as usize + 8192],
            "at {off}"
        );
    }
    drop(v);
}

/// NBD CACHE on a disk served from a fallback brings the stored bytes of the range into
/// the cache (as a trace prefetch does): with the web server gone, the range reads back.
#[test]
fn nbd_cache_fetches_a_range_into_the_cache() {
    if !have("nbdsh") {
        return;
    }
    let Some(mut site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 16 << 20);
    let proxy = common::proxy::Proxy::start(port, Default::default(), 4);
    let b_swap = cached_reader(&dir, &text, proxy.port);
    let server = Server::start(&dir, &b_swap, &[]);
    let before = proxy.requests();
    tool_ok(
        "nbdsh",
        &["-u", &server.uri(), "-c", "h.cache(8 << 20, 1 << 20)"],
    );
    assert!(proxy.requests() > before, "CACHE fetched nothing");
    server.stop();
    drop(proxy);
    site.stop();
    let v = open_read_only(&b_swap);
    let mut got = vec![0u8; 8 << 20];
    v.read_at(1 << 20, &mut got).unwrap();
    assert!(got[..] == image[1 << 20..9 << 20]);
    // Far outside the range (further than a chunk spans): not fetched, so with every
    // source gone it cannot be read.
    let mut past = vec![0u8; 4096];
    assert!(v.read_at((17 << 20) - 8192, &mut past).is_err());
}

#[test]
fn an_interrupted_push_resumes_and_never_publishes_a_root_early() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (a_swap, image) = host_a(&dir.join("a"), 24 << 20);
    let root = mindcastle::volume::read_swap(&a_swap)
        .unwrap()
        .snapshot
        .unwrap()
        .id;
    // A slow link; the push is killed part way.
    let proxy = common::proxy::Proxy::start(
        port,
        common::proxy::Faults {
            latency: Duration::from_millis(300),
            ..Default::default()
        },
        3,
    );
    let url = format!("http://127.0.0.1:{}/pub/d", proxy.port);
    let mut push = common::bin()
        .args(["push", s(&a_swap), &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let dest = web.join("pub/d");
    let t = Instant::now();
    while !dest.is_dir() || files(&dest).len() < 3 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the push made no progress"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    push.kill().unwrap();
    push.wait().unwrap();
    let partial = files(&dest).len();
    assert!(
        !dest.join(root.file_name()).exists(),
        "the root was published before its chunks ({partial} files there)"
    );
    // Resumed: only what is missing goes, the root last; then B reads it all.
    let b_swap = dir.join("b.swap");
    let done = json(&run_ok(common::bin().args([
        "push",
        "--json",
        "--swap-out",
        s(&b_swap),
        s(&a_swap),
        &url,
    ])));
    assert!(done["present"].as_u64().unwrap() >= 3, "{done}");
    assert!(dest.join(root.file_name()).exists());
    let out = dir.join("b.img");
    run_ok(common::bin().args(["export", s(&b_swap), s(&out)]));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
}

/// `serve --prefetch` warms the cache beside the server; stopped while the prefetch
/// still runs (every request slowed), the server exits 0 at once: the prefetch stops
/// between fetches and is waited for, so no thread is left fetching at exit.
#[test]
fn serve_with_a_prefetch_warms_the_cache_and_stops_it_at_exit() {
    if !common::server::have("nbdinfo") {
        return;
    }
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 12 << 20);
    let trace = dir.join("all.trace");
    let lines: String = (0..image.len() as u64 / (256 << 10))
        .map(|i| format!("{} {} {}\n", i * (256 << 10), 256 << 10, i + 1))
        .collect();
    std::fs::write(&trace, lines).unwrap();
    // Fast: the whole trace is in the cache before long.
    let proxy = common::proxy::Proxy::start(port, Default::default(), 3);
    let b_swap = cached_reader(&dir, &text, proxy.port);
    let srv =
        common::server::Server::start(&dir, &b_swap, &["--read-only", "--prefetch", s(&trace)]);
    let cache = dir.join("cache");
    let cached = || -> u64 {
        std::fs::read_dir(&cache)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let t = std::time::Instant::now();
    while cached() < (image.len() / 3) as u64 {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(30),
            "the prefetch warmed {} bytes",
            cached()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    srv.stop();
    drop(proxy);
    // Slow: stopped as soon as it serves, its first fetches still under way.
    std::fs::remove_dir_all(&cache).unwrap();
    let slow = common::proxy::Proxy::start(
        port,
        common::proxy::Faults {
            latency: std::time::Duration::from_millis(500),
            ..Default::default()
        },
        4,
    );
    let c_swap = cached_reader(&dir, &text, slow.port);
    let srv =
        common::server::Server::start(&dir, &c_swap, &["--read-only", "--prefetch", s(&trace)]);
    let t = std::time::Instant::now();
    srv.stop();
    assert!(
        t.elapsed() < std::time::Duration::from_secs(10),
        "stopping took {:?} with a prefetch under way",
        t.elapsed()
    );
}

#[test]
fn prefetch_warms_the_cache_in_trace_order() {
    let Some(mut site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 12 << 20);
    let proxy = common::proxy::Proxy::start(port, Default::default(), 2);
    // A trace as `--trace` writes it: the first half of the data, in 256 KiB reads.
    let trace = dir.join("boot.trace");
    let half = (image.len() / 2) as u64;
    let lines: String = (0..half / (256 << 10))
        .map(|i| {
            format!(
                "{} {} {}\n",
                i * (256 << 10),
                256 << 10,
                1_700_000_000_000_000_000u64 + i
            )
        })
        .collect();
    std::fs::write(&trace, lines).unwrap();
    // Without cache= there is nowhere to keep what it fetches: refused.
    let nocache = swap_with(
        &dir,
        "n",
        &text,
        &format!("fallback=http://127.0.0.1:{}/pub\n", proxy.port),
    );
    let o = common::run(&["prefetch", "--trace", s(&trace), s(&nocache)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cache="));
    // A malformed trace names its line.
    let bad = dir.join("bad.trace");
    std::fs::write(&bad, "0 4096 1\nnonsense\n").unwrap();
    let b_swap = cached_reader(&dir, &text, proxy.port);
    let o = common::run(&["prefetch", "--trace", s(&bad), s(&b_swap)]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("bad.trace:2"));
    let p = json(&run_ok(common::bin().args([
        "prefetch",
        "--json",
        "--trace",
        s(&trace),
        s(&b_swap),
    ])));
    assert_eq!(p["bytes"].as_u64().unwrap(), half, "{p}");
    assert!(p["chunks"].as_u64().unwrap() > 0, "{p}");
    assert!(proxy.requests() > 0);
    // Again on the warm cache: nothing fetched, and (warming only) nothing read back
    // and hashed: a damaged kept chunk goes unnoticed here, and the read after it
    // refuses the copy and fetches the chunk again.
    let fetched = proxy.requests();
    // The largest kept chunk: a data chunk (index and root chunks are small here, and
    // opening the disk reads them, which would refuse a damaged copy).
    let (len, damaged) = std::fs::read_dir(dir.join("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "lvl"))
        .map(|p| (std::fs::metadata(&p).unwrap().len() as usize, p))
        .max()
        .expect("the trace kept no whole chunk");
    assert!(len > 256 << 10, "the largest kept chunk is {len} bytes");
    let damaged = &damaged;
    std::fs::write(damaged, vec![0x5a; len]).unwrap();
    let again = json(&run_ok(common::bin().args([
        "prefetch",
        "--json",
        "--trace",
        s(&trace),
        s(&b_swap),
    ])));
    assert_eq!(again["chunks"], p["chunks"], "{again}");
    assert_eq!(proxy.requests(), fetched, "a warm prefetch fetched again");
    assert!(std::fs::read(damaged).unwrap() == vec![0x5a; len]);
    {
        let v = open_read_only(&b_swap);
        let mut got = vec![0u8; half as usize];
        v.read_at(0, &mut got).unwrap();
        assert!(got[..] == image[..half as usize]);
    }
    assert!(
        proxy.requests() > fetched,
        "the damaged copy was not fetched again"
    );
    assert!(std::fs::read(damaged).unwrap() != vec![0x5a; len]);
    // With the server gone, the traced ranges read from the cache.
    drop(proxy);
    site.stop();
    let v = open_read_only(&b_swap);
    let mut got = vec![0u8; half as usize];
    v.read_at(0, &mut got).unwrap();
    assert!(got[..] == image[..half as usize]);
}

/// Azurite's well-known development account.
const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[test]
fn push_to_azurite_then_export_elsewhere() {
    if !have("azurite-blob") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Telemetry off: nothing but 127.0.0.1 is ever contacted.
    let _az = Daemon(
        Command::new("azurite-blob")
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--loose",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ])
            .args(["--location", s(&dir.path().join("azurite"))])
            .env("PATH", common::server::path_env())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let blob_url = format!("http://127.0.0.1:{port}/{AZ_ACCOUNT}");
    // The container, made with Debian's Azure SDK (object_store makes none).
    let make = Command::new("/usr/bin/python3")
        .args([
            "-c",
            &format!(
                "from azure.storage.blob import BlobServiceClient as C; \
                 C.from_connection_string('DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};\
                 AccountKey={AZ_KEY};BlobEndpoint={blob_url};').create_container('bucket')"
            ),
        ])
        .output()
        .unwrap();
    assert!(make.status.success(), "creating the container: {make:?}");
    let az_env = |cmd: &mut Command| -> String {
        run_ok(
            cmd.env("AZURE_STORAGE_ACCOUNT_NAME", AZ_ACCOUNT)
                .env("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY)
                .env("AZURE_STORAGE_USE_EMULATOR", "true")
                .env(
                    "AZURITE_BLOB_STORAGE_URL",
                    format!("http://127.0.0.1:{port}"),
                ),
        )
    };
    push_twice_then_export(dir.path(), "az://bucket/disks/z1", &az_env);
    // Refs at Azure (create-only by If-None-Match): two hosts push one ref at once, 5
    // rounds, with --force so both always land: 10 versions, consecutive, chained.
    let url = "az://bucket/disks/refs";
    let a = dir.path().join("a/a.swap");
    let b = dir.path().join("a/b.swap");
    run_ok(common::bin().args(["clone", s(&a), s(&b)]));
    fn with_az(cmd: &mut Command, port: u16) -> &mut Command {
        cmd.env("AZURE_STORAGE_ACCOUNT_NAME", AZ_ACCOUNT)
            .env("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY)
            .env("AZURE_STORAGE_USE_EMULATOR", "true")
            .env(
                "AZURITE_BLOB_STORAGE_URL",
                format!("http://127.0.0.1:{port}"),
            )
    }
    let az = |cmd: &mut Command| -> Command {
        let mut c = Command::new(cmd.get_program());
        c.args(cmd.get_args());
        with_az(&mut c, port);
        c
    };
    for round in 0..5u64 {
        let mut children = Vec::new();
        for (i, disk) in [&a, &b].into_iter().enumerate() {
            let img = dir.path().join(format!("round-{i}.img"));
            std::fs::write(&img, common::noise(round * 2 + i as u64 + 50, 64 << 10)).unwrap();
            run_ok(common::bin().args(["import", s(disk), s(&img)]));
            children.push(
                az(common::bin().args(["push", "--ref", "main", "--force", s(disk), url]))
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap(),
            );
        }
        for c in children {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
    }
    let log = json(&run_ok(&mut az(
        common::bin().args(["log", "--json", "--ref", "main", url])
    )));
    let seqs: Vec<u64> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=10).rev().collect::<Vec<u64>>());
}

/// Host A pushes a 6 MiB disk to `url` twice (the second copies nothing); host B, with
/// only the `.swap` that `--swap-out` wrote, exports it byte-identical. `env` runs a
/// command with the service's credentials. Returns the chunks the first push copied.
fn push_twice_then_export(dir: &Path, url: &str, env: &dyn Fn(&mut Command) -> String) -> u64 {
    let (a_swap, image) = host_a(&dir.join("a"), 6 << 20);
    let b_dir = dir.join("b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_swap = b_dir.join("b.swap");
    let first = json(&env(common::bin().args([
        "push",
        "--json",
        "--swap-out",
        s(&b_swap),
        s(&a_swap),
        url,
    ])));
    let copied = first["copied"].as_u64().unwrap();
    assert!(copied > 2, "{first}");
    let again = json(&env(common::bin().args([
        "push",
        "--json",
        s(&a_swap),
        url,
    ])));
    assert_eq!(again["copied"], 0, "{again}");
    let out = b_dir.join("b.img");
    env(common::bin().args(["export", s(&b_swap), s(&out)]));
    assert!(std::fs::read(&out).unwrap()[..image.len()] == image[..]);
    copied
}

/// GCS through gcp-storage-emulator (object_store's XML API). The emulator leaves out
/// the `ETag` header that real GCS sends and object_store requires, so the test's proxy
/// adds one per object path; everything else is the emulator's own answer. It does not
/// enforce create-only uploads (S3 and Azure tests cover those).
#[test]
fn push_to_gcs_emulator_then_export_elsewhere() {
    if !have("gcp-storage-emulator") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _gcs = Daemon(
        Command::new("gcp-storage-emulator")
            .args(["start", "--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--in-memory", "--default-bucket", "bucket"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(port);
    let proxy = common::proxy::Proxy::start(
        port,
        common::proxy::Faults {
            add_object_headers: true,
            ..Default::default()
        },
        5,
    );
    // A bearer token, so object_store never asks a cloud metadata address for one.
    let gcs_env = |cmd: &mut Command| -> String {
        run_ok(
            cmd.env(
                "GOOGLE_BASE_URL",
                format!("http://127.0.0.1:{}", proxy.port),
            )
            .env("GOOGLE_BEARER_TOKEN", "emulator"),
        )
    };
    let copied = push_twice_then_export(dir.path(), "gs://bucket/disks/g1", &gcs_env);
    // B's reads went to the emulator, through the proxy.
    assert!(proxy.requests() > copied);
}

/// A disk the original C Mindcastle wrote, published on a web server as its users
/// did (the chunk folder copied to a web root), read over http and converted there.
#[test]
fn original_disk_published_on_nginx_exports_and_converts() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let old = common::legacy_copy(&dir);
    let chunks = old
        .parent()
        .unwrap()
        .join("swapdata-c15c75cd-81ed-7767-13ef-d6efafdcd0b7");
    std::fs::rename(&chunks, web.join("legacy")).unwrap();
    let text = std::fs::read_to_string(&old).unwrap();
    let swap = swap_with(
        &dir,
        "reader",
        &text,
        &format!("fallback=http://127.0.0.1:{port}/legacy\n"),
    );
    let img = dir.join("disk.img");
    let o = common::run(&["export", s(&swap), s(&img)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        common::sha256_file(&img),
        common::fixture_sha256("EXPECTED.sha256")
    );
    let new = dir.join("converted.swap");
    let o = common::run(&["convert", s(&swap), s(&new)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img2 = dir.join("converted.img");
    assert!(common::run(&["export", s(&new), s(&img2)]).status.success());
    assert_eq!(
        common::sha256_file(&img2),
        common::fixture_sha256("EXPECTED.sha256")
    );
}

/// Read-ahead: reading the start of a disk served by nginx forward, in 1 MiB steps,
/// brings the chunks of the stretch after it into the cache before anyone reads them;
/// a scattered reader gets no read-ahead.
#[test]
fn forward_reads_fetch_the_next_chunks_ahead() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 48 << 20);
    let swap = swap_with(
        &dir,
        "b",
        &text,
        &format!("fallback=http://127.0.0.1:{port}/pub\ncache=b-cache\n"),
    );
    let cached = |dir: &Path| -> std::collections::HashSet<String> {
        std::fs::read_dir(dir)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".lvl"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let v = mindcastle::Volume::open(&swap, &mindcastle::OpenOptions::default()).unwrap();
    let engine = v.engine().unwrap();
    let name = |c: &mindcastle::format::chunk_id::ChunkId| c.file_name();
    let first: std::collections::HashSet<String> = engine
        .data_chunks(0, 2048)
        .unwrap()
        .iter()
        .map(name)
        .collect();
    let later: std::collections::HashSet<String> = engine
        .data_chunks(3072, 4096)
        .unwrap()
        .iter()
        .map(name)
        .filter(|c| !first.contains(c))
        .collect();
    assert!(!later.is_empty());
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..8u64 {
        v.read_at(i << 20, &mut buf).unwrap();
        assert!(buf[..] == image[(i << 20) as usize..((i + 1) << 20) as usize]);
    }
    // The chunks of 12-28 MiB arrive without being read.
    let t = std::time::Instant::now();
    while !later
        .iter()
        .all(|c| cached(&dir.join("b-cache")).contains(c))
    {
        assert!(
            t.elapsed().as_secs() < 20,
            "read-ahead fetched {} of {} later chunks",
            later
                .iter()
                .filter(|c| cached(&dir.join("b-cache")).contains(*c))
                .count(),
            later.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(v);

    // Scattered reads: nothing is fetched beyond what is read.
    let swap2 = swap_with(
        &dir,
        "c",
        &text,
        &format!("fallback=http://127.0.0.1:{port}/pub\ncache=c-cache\n"),
    );
    let v = mindcastle::Volume::open(&swap2, &mindcastle::OpenOptions::default()).unwrap();
    let engine = v.engine().unwrap();
    let mut wanted = std::collections::HashSet::new();
    for (i, at) in [40u64, 3, 22, 9, 31, 15, 27].iter().enumerate() {
        let mut b = vec![0u8; 4096];
        v.read_at(at << 20, &mut b).unwrap();
        wanted.extend(
            engine
                .data_chunks((at << 20) / 4096, 1)
                .unwrap()
                .iter()
                .map(name),
        );
        assert!(
            b[..] == image[(at << 20) as usize..(at << 20) as usize + 4096],
            "{i}"
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let index: usize = cached(&dir.join("c-cache"))
        .iter()
        .filter(|c| !wanted.contains(*c))
        .filter(|c| first.contains(*c) || later.contains(*c))
        .count();
    assert_eq!(index, 0, "scattered reads fetched data chunks ahead");
}

/// Uploads are create-only where the service has it: putting a chunk that exists on
/// s3s-fs (which honours `If-None-Match: *`) succeeds without rewriting the object.
#[test]
fn uploads_to_s3_never_rewrite_an_existing_object() {
    if !have("s3s-fs") {
        return;
    }
    use mindcastle::store::ChunkStore;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("s3root");
    let (_s3, port) = s3(&root);
    // The store reads its endpoint and keys from the environment, as the CLI does.
    std::env::set_var("AWS_ACCESS_KEY_ID", KEY);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET);
    std::env::set_var("AWS_REGION", "us-east-1");
    std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"));
    let store = mindcastle::store::remote::RemoteStore::open("s3://bucket/create-only").unwrap();
    let bytes = common::data(11, 100_000);
    let id = store.put(&bytes).unwrap();
    let object = root.join("bucket/create-only").join(id.file_name());
    let before = std::fs::metadata(&object).unwrap();
    // Make the object differ on disk so a rewrite would show, then put again.
    let mut marked = std::fs::read(&object).unwrap();
    marked[0] ^= 1;
    std::fs::write(&object, &marked).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert_eq!(store.put(&bytes).unwrap(), id);
    assert_eq!(
        std::fs::read(&object).unwrap(),
        marked,
        "the second put rewrote the object"
    );
    assert!(before.len() == bytes.len() as u64);
    // A new object still goes up whole.
    let other = common::data(12, 50_000);
    let id2 = store.put(&other).unwrap();
    assert_eq!(store.get(&id2).unwrap(), other);
}

/// A read waiting on a slow remote holds no lock a writer needs: 4 KiB writes (and a
/// flush) to a URL-backed disk all finish while a read of an uncached chunk is still
/// waiting on the server (issue 22, point 6; before, each write waited for the read).
#[test]
fn writes_go_on_while_a_read_waits_on_a_slow_remote() {
    let Some(site) = Site::start() else {
        return;
    };
    let (dir, web, port) = (site.path().to_path_buf(), site.web.clone(), site.port);
    let (text, image) = published(&dir, &web, 12 << 20);
    let proxy = common::proxy::Proxy::start(port, Default::default(), 1);
    let b_swap = cached_reader(&dir, &text, proxy.port);
    let vol = std::sync::Arc::new(
        mindcastle::volume::Volume::open(&b_swap, &mindcastle::OpenOptions::default()).unwrap(),
    );
    proxy.faults.lock().unwrap().latency = Duration::from_secs(3);
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (vol, reading) = (vol.clone(), reading.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let r = vol.read_at(9 << 20, &mut buf);
            reading.store(false, std::sync::atomic::Ordering::SeqCst);
            r.map(|()| buf)
        })
    };
    // A sub-block write into a block only the remote holds must wait for it, but
    // outside the engine's lock: it reads the block before taking it.
    let patch_at = (10u64 << 20) + 7;
    let patcher = {
        let vol = vol.clone();
        std::thread::spawn(move || vol.write_at(patch_at, &[0xAB; 100]))
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut longest = Duration::ZERO;
    for i in 0..20u64 {
        let t = std::time::Instant::now();
        vol.write_at(i * 4096, &common::noise(i, 4096)).unwrap();
        longest = longest.max(t.elapsed());
    }
    vol.flush().unwrap();
    let still_reading = reading.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("longest 4 KiB write while a read and a sub-block write waited 3 s on the remote: {longest:?}");
    assert!(
        still_reading,
        "the writes waited for the slow read to finish"
    );
    assert!(
        !patcher.is_finished(),
        "the writes waited for the sub-block write's fetch to finish"
    );
    let got = reader.join().unwrap().unwrap();
    assert!(got[..] == image[9 << 20..(9 << 20) + 65536]);
    patcher.join().unwrap().unwrap();
    let mut block = vec![0u8; 4096];
    vol.read_at(10 << 20, &mut block).unwrap();
    let mut want = image[10 << 20..(10 << 20) + 4096].to_vec();
    want[7..107].fill(0xAB);
    assert!(
        block == want,
        "the sub-block write kept the remote block's other bytes"
    );
    for i in 0..20u64 {
        let mut b = vec![0u8; 4096];
        vol.read_at(i * 4096, &mut b).unwrap();
        assert!(b == common::noise(i, 4096));
    }
}
