//! Serving over a network: NBD over TLS (`serve --tls-certificates`, `--tls-verify-peer`)
//! with libnbd's own clients (`nbdcopy`, `nbdinfo`) and certificates the test makes with
//! `openssl`; clients without TLS or with the wrong certificates refused while a good
//! client goes on; plaintext refused on an address other than loopback; the handshake
//! deadline (200 idle connections do not lock a client out); a capture of the TCP
//! stream holding none of what was written.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{have, path_env};
use common::web::{free_port, wait_port, Daemon};

const SIZE: u64 = 16 << 20;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn openssl(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(o.status.success(), "openssl {args:?}: {o:?}");
}

/// A CA and a certificate it signed for `cn`; `ext` holds the extensions.
fn signed(dir: &Path, ca: &str, name: &str, cn: &str, ext: &str, days: &str) {
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}-cert.pem"),
            "-CAkey",
            &format!("{ca}-key.pem"),
            "-CAcreateserial",
            "-out",
            &format!("{name}-cert.pem"),
            "-days",
            days,
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

fn ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}-cert.pem"),
            "-days",
            "30",
            "-subj",
            &format!("/CN={name}"),
        ],
    );
}

/// Certificates as qemu-nbd, nbdkit and libnbd lay them out: `server/` (ca-cert.pem,
/// server-cert.pem, server-key.pem), and client folders (ca-cert.pem, client-cert.pem,
/// client-key.pem): `good/` (signed by the CA), `stranger/` (trusts the CA, presents
/// another CA's client certificate), `nocert/` (the CA only), `distrust/` (another CA
/// only), `expired/` (a server folder whose certificate expired).
struct Certs {
    root: PathBuf,
}

impl Certs {
    fn make(root: &Path) -> Self {
        let work = root.join("work");
        std::fs::create_dir_all(&work).unwrap();
        ca(&work, "ca");
        ca(&work, "other-ca");
        let server_ext = "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n";
        let client_ext = "extendedKeyUsage=clientAuth\n";
        signed(&work, "ca", "server", "localhost", server_ext, "30");
        signed(&work, "ca", "old-server", "localhost", server_ext, "-1");
        signed(&work, "ca", "client", "alice", client_ext, "30");
        signed(&work, "ca", "bob", "bob", client_ext, "30");
        signed(&work, "ca", "carol", "carol", client_ext, "30");
        signed(&work, "other-ca", "stranger", "mallory", client_ext, "30");
        let put = |folder: &str, files: &[(&str, &str)]| {
            let d = root.join(folder);
            std::fs::create_dir_all(&d).unwrap();
            for (from, to) in files {
                std::fs::copy(work.join(from), d.join(to)).unwrap();
            }
        };
        put(
            "server",
            &[
                ("ca-cert.pem", "ca-cert.pem"),
                ("server-cert.pem", "server-cert.pem"),
                ("server-key.pem", "server-key.pem"),
            ],
        );
        put(
            "expired",
            &[
                ("ca-cert.pem", "ca-cert.pem"),
                ("old-server-cert.pem", "server-cert.pem"),
                ("old-server-key.pem", "server-key.pem"),
            ],
        );
        put(
            "good",
            &[
                ("ca-cert.pem", "ca-cert.pem"),
                ("client-cert.pem", "client-cert.pem"),
                ("client-key.pem", "client-key.pem"),
            ],
        );
        put(
            "stranger",
            &[
                ("ca-cert.pem", "ca-cert.pem"),
                ("stranger-cert.pem", "client-cert.pem"),
                ("stranger-key.pem", "client-key.pem"),
            ],
        );
        for who in ["bob", "carol"] {
            put(
                who,
                &[
                    ("ca-cert.pem", "ca-cert.pem"),
                    (&format!("{who}-cert.pem"), "client-cert.pem"),
                    (&format!("{who}-key.pem"), "client-key.pem"),
                ],
            );
        }
        put("nocert", &[("ca-cert.pem", "ca-cert.pem")]);
        put("distrust", &[("other-ca-cert.pem", "ca-cert.pem")]);
        Self {
            root: root.to_path_buf(),
        }
    }
    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }
}

/// `serve --listen 127.0.0.1:PORT` with `extra` args and `env`; returns it and PORT.
fn serve_tcp(swap: &Path, extra: &[&str], env: &[(&str, &str)]) -> (Daemon, u16) {
    serve_tcp_logged(swap, extra, env, None)
}

/// [`serve_tcp`], its standard error into `log` when given.
fn serve_tcp_logged(
    swap: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    log: Option<&Path>,
) -> (Daemon, u16) {
    let port = free_port();
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).unwrap()),
        None => Stdio::inherit(),
    };
    let child = common::bin()
        .arg("serve")
        .arg(swap)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .envs(env.iter().copied())
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_port(port);
    (Daemon(child), port)
}

/// A test's folder, its certificates and a new disk in it.
struct Setup {
    dir: tempfile::TempDir,
    certs: Certs,
    swap: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::make(&dir.path().join("certs"));
    let swap = disk(dir.path());
    Setup { dir, certs, swap }
}

fn nbdinfo(uri: &str) -> std::process::Output {
    Command::new("nbdinfo")
        .arg(uri)
        .env("PATH", path_env())
        .output()
        .unwrap()
}

fn disk(dir: &Path) -> PathBuf {
    let swap = dir.join("d.swap");
    let o = common::run(&["create", "--size", &SIZE.to_string(), s(&swap)]);
    assert!(o.status.success(), "{o:?}");
    swap
}

fn tls_uri(port: u16, certs: &Path) -> String {
    format!(
        "nbds://127.0.0.1:{port}/?tls-certificates={}",
        certs.display()
    )
}

/// nbdcopy FROM TO; Ok(()) or its stderr.
fn nbdcopy(from: &str, to: &str) -> Result<(), String> {
    let o = Command::new("nbdcopy")
        .args([from, to])
        .env("PATH", path_env())
        .output()
        .unwrap();
    if o.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&o.stderr).into_owned())
    }
}

/// Writes `image` through `uri`, reads it back, and compares.
fn round_trip(dir: &Path, uri: &str, image: &[u8]) {
    let input = dir.join("in.img");
    let output = dir.join("out.img");
    std::fs::write(&input, image).unwrap();
    nbdcopy(s(&input), uri).unwrap();
    nbdcopy(uri, s(&output)).unwrap();
    assert!(
        std::fs::read(&output).unwrap()[..image.len()] == image[..],
        "{uri}: read back differs"
    );
}

fn tools() -> bool {
    have("openssl") && have("nbdcopy") && have("nbdinfo")
}

#[test]
fn libnbd_clients_read_and_write_over_tls_and_plaintext_is_refused() {
    if !tools() {
        return;
    }
    let Setup { dir, certs, swap } = setup();
    let server = certs.dir("server");
    let (_srv, port) = serve_tcp(&swap, &["--tls-certificates", s(&server)], &[]);
    let image = common::noise(3, SIZE as usize);
    round_trip(dir.path(), &tls_uri(port, &certs.dir("nocert")), &image);
    // The same disk over a Unix socket with TLS (nbds+unix).
    let sock = dir.path().join("tls.sock");
    // A second disk: the first is held by the TCP server.
    let copy = dir.path().join("copy.swap");
    let o = common::run(&["create", "--size", &SIZE.to_string(), s(&copy)]);
    assert!(o.status.success());
    let _unix = Daemon(
        common::bin()
            .args(["serve", "--read-only", "--socket", s(&sock)])
            .args(["--tls-certificates", s(&server), s(&copy)])
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = nbdinfo(&format!(
        "nbds+unix:///?socket={}&tls-certificates={}",
        sock.display(),
        certs.dir("nocert").display()
    ));
    assert!(o.status.success(), "nbdinfo nbds+unix: {o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains(&SIZE.to_string()));
    // A plaintext client is refused, and learns no export.
    let o = nbdinfo(&format!("nbd://127.0.0.1:{port}/"));
    assert!(!o.status.success(), "plaintext client served: {o:?}");
    // A client that does not trust the server's CA refuses it (libnbd checks).
    let o = nbdinfo(&tls_uri(port, &certs.dir("distrust")));
    assert!(
        !o.status.success(),
        "a client trusted a CA it was not given: {o:?}"
    );
    // The good client still gets its data.
    let out = dir.path().join("again.img");
    nbdcopy(&tls_uri(port, &certs.dir("nocert")), s(&out)).unwrap();
    assert!(std::fs::read(&out).unwrap() == image);
}

/// A raw client's option request.
fn option(c: &mut TcpStream, opt: u32, data: &[u8]) {
    let mut m = Vec::new();
    m.extend_from_slice(&0x4948_4156_454F_5054u64.to_be_bytes());
    m.extend_from_slice(&opt.to_be_bytes());
    m.extend_from_slice(&(data.len() as u32).to_be_bytes());
    m.extend_from_slice(data);
    c.write_all(&m).unwrap();
}

/// Reads option replies until a final one (ACK or an error); returns (kind, data) of
/// each.
fn replies(c: &mut TcpStream) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let mut h = [0u8; 20];
        c.read_exact(&mut h).unwrap();
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        let mut d = vec![0u8; len as usize];
        c.read_exact(&mut d).unwrap();
        out.push((kind, d));
        if kind == 1 || kind & (1 << 31) != 0 {
            return out;
        }
    }
}

fn greeted(port: u16) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut hello = [0u8; 18];
    c.read_exact(&mut hello).unwrap();
    c.write_all(&3u32.to_be_bytes()).unwrap(); // fixed newstyle, no zeroes
    c
}

const OPT_GO: u32 = 7;
const OPT_LIST: u32 = 3;
const OPT_INFO: u32 = 6;
const OPT_STARTTLS: u32 = 5;
const OPT_STRUCTURED: u32 = 8;
const ERR_TLS_REQD: u32 = (1 << 31) + 5;

#[test]
fn a_server_that_requires_tls_names_nothing_before_starttls_and_survives_bad_clients() {
    if !tools() {
        return;
    }
    let Setup { dir, certs, swap } = setup();
    let (_srv, port) = serve_tcp(
        &swap,
        &[
            "--tls-certificates",
            s(&certs.dir("server")),
            "--export",
            "secret-disk-name",
        ],
        &[],
    );
    let image = common::noise(9, 1 << 20);
    let good = format!(
        "nbds://127.0.0.1:{port}/secret-disk-name?tls-certificates={}",
        certs.dir("nocert").display()
    );
    round_trip(dir.path(), &good, &image[..]);
    // Every option but STARTTLS: NBD_REP_ERR_TLS_REQD, no export named or listed.
    let mut c = greeted(port);
    for (opt, data) in [
        (OPT_LIST, Vec::new()),
        (
            OPT_INFO,
            [0u32.to_be_bytes(), 0u32.to_be_bytes()].concat()[..6].to_vec(),
        ),
        (OPT_GO, {
            let mut d = 16u32.to_be_bytes().to_vec();
            d.extend_from_slice(b"secret-disk-name");
            d.extend_from_slice(&0u16.to_be_bytes());
            d
        }),
        (OPT_STRUCTURED, Vec::new()),
    ] {
        option(&mut c, opt, &data);
        let r = replies(&mut c);
        assert_eq!(r.len(), 1, "option {opt}: {r:?}");
        assert_eq!(r[0].0, ERR_TLS_REQD, "option {opt}");
        assert!(
            !String::from_utf8_lossy(&r[0].1).contains("secret-disk-name"),
            "option {opt} named the export"
        );
    }
    drop(c);
    // Hostile clients, interleaved with the good one, which checks its data each time.
    let bad: Vec<Box<dyn Fn()>> = vec![
        // STARTTLS, then plaintext garbage where the TLS handshake should be.
        Box::new(move || {
            let mut c = greeted(port);
            option(&mut c, OPT_STARTTLS, &[]);
            assert_eq!(replies(&mut c)[0].0, 1);
            c.write_all(b"this is not a TLS client hello at all")
                .unwrap();
            let mut b = [0u8; 64];
            let _ = c.read(&mut b);
        }),
        // STARTTLS sent twice in plaintext: the second is garbage to TLS.
        Box::new(move || {
            let mut c = greeted(port);
            option(&mut c, OPT_STARTTLS, &[]);
            assert_eq!(replies(&mut c)[0].0, 1);
            option(&mut c, OPT_STARTTLS, &[]);
            let mut b = [0u8; 64];
            let _ = c.read(&mut b);
        }),
        // Cut mid-handshake.
        Box::new(move || {
            let mut c = greeted(port);
            c.write_all(&0x4948_4156u32.to_be_bytes()).unwrap();
        }),
        // Cut right after STARTTLS.
        Box::new(move || {
            let mut c = greeted(port);
            option(&mut c, OPT_STARTTLS, &[]);
            let _ = replies(&mut c);
        }),
    ];
    let written = dir.path().join("w.img");
    for round in 0..16 {
        for b in &bad {
            b();
        }
        let data = common::noise(100 + round, 65536);
        std::fs::write(&written, &data).unwrap();
        nbdcopy(s(&written), &good).unwrap();
        let back = dir.path().join("r.img");
        nbdcopy(&good, s(&back)).unwrap();
        assert!(
            std::fs::read(&back).unwrap()[..65536] == data[..],
            "round {round}"
        );
    }
}

#[test]
fn tls_verify_peer_takes_only_clients_the_ca_signed() {
    if !tools() {
        return;
    }
    let Setup { dir, certs, swap } = setup();
    let (_srv, port) = serve_tcp(
        &swap,
        &[
            "--tls-certificates",
            s(&certs.dir("server")),
            "--tls-verify-peer",
        ],
        &[],
    );
    let image = common::noise(4, 1 << 20);
    round_trip(dir.path(), &tls_uri(port, &certs.dir("good")), &image);
    for who in ["nocert", "stranger"] {
        let o = nbdinfo(&tls_uri(port, &certs.dir(who)));
        assert!(!o.status.success(), "{who} was served: {o:?}");
    }
    // The server is still up for the good client.
    round_trip(dir.path(), &tls_uri(port, &certs.dir("good")), &image);
}

#[test]
fn bad_tls_setups_are_refused_at_start() {
    if !tools() {
        return;
    }
    let Setup { dir, certs, swap } = setup();
    // A folder without the server's key.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = common::run(&[
        "serve",
        s(&swap),
        "--listen",
        "127.0.0.1:1",
        "--tls-certificates",
        s(&empty),
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("server-cert.pem is missing"));
    // --tls-verify-peer needs certificates.
    let o = common::run(&[
        "serve",
        s(&swap),
        "--listen",
        "127.0.0.1:1",
        "--tls-verify-peer",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // Plaintext on an address other than loopback: refused, saying how to do it.
    let port = free_port();
    let o = common::run(&["serve", s(&swap), "--listen", &format!("0.0.0.0:{port}")]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("without TLS") && e.contains("--tls-certificates"),
        "{e}"
    );
    assert!(
        e.contains("nbds://") && e.contains("openssl req -x509"),
        "{e}"
    );
    // An expired server certificate: the client refuses it.
    let (_srv, port) = serve_tcp(
        &swap,
        &["--tls-certificates", s(&certs.dir("expired"))],
        &[],
    );
    let o = nbdinfo(&tls_uri(port, &certs.dir("nocert")));
    assert!(
        !o.status.success(),
        "an expired certificate was accepted: {o:?}"
    );
}

#[test]
fn idle_connections_do_not_lock_out_a_client_and_are_cut_at_the_deadline() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = disk(dir.path());
    let (_srv, port) = serve_tcp(&swap, &[], &[("MINDCASTLE_NBD_HANDSHAKE_TIMEOUT", "3")]);
    // 200 connections that never finish their handshake (more than the 128 served).
    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let image = common::noise(5, 1 << 20);
    round_trip(dir.path(), &format!("nbd://127.0.0.1:{port}/"), &image);
    // Past the deadline each idle connection is closed by the server.
    std::thread::sleep(Duration::from_secs(4));
    for (i, mut c) in idle.into_iter().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut hello = [0u8; 18];
        c.read_exact(&mut hello).unwrap();
        let mut more = [0u8; 1];
        assert_eq!(
            c.read(&mut more).unwrap(),
            0,
            "idle connection {i} still open"
        );
    }
    round_trip(dir.path(), &format!("nbd://127.0.0.1:{port}/"), &image);
}

#[test]
fn a_capture_of_a_tls_connection_holds_none_of_its_data() {
    if !tools() {
        return;
    }
    let Setup { dir, certs, swap } = setup();
    let (_srv, port) = serve_tcp(&swap, &["--tls-certificates", s(&certs.dir("server"))], &[]);
    // A recording proxy on 127.0.0.1: every byte each way is kept.
    let captured = Arc::new(Mutex::new(Vec::<u8>::new()));
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_port = proxy.local_addr().unwrap().port();
    {
        let captured = captured.clone();
        std::thread::spawn(move || {
            for client in proxy.incoming() {
                let client = client.unwrap();
                let upstream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), upstream.try_clone().unwrap()),
                    (upstream, client),
                ] {
                    let captured = captured.clone();
                    std::thread::spawn(move || {
                        let mut b = [0u8; 65536];
                        while let Ok(n) = from.read(&mut b) {
                            if n == 0 || to.write_all(&b[..n]).is_err() {
                                break;
                            }
                            captured.lock().unwrap().extend_from_slice(&b[..n]);
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
    }
    let marker: Vec<u8> = b"MINDCASTLE-MARKER-7f3a9c"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    round_trip(
        dir.path(),
        &tls_uri(proxy_port, &certs.dir("nocert")),
        &marker,
    );
    std::thread::sleep(Duration::from_millis(300));
    let cap = captured.lock().unwrap();
    assert!(cap.len() > 2 << 20, "the proxy saw {} bytes", cap.len());
    assert!(
        !cap.windows(24).any(|w| w == b"MINDCASTLE-MARKER-7f3a9c"),
        "the marker crossed the wire in the clear"
    );
}

#[test]
fn qemu_img_reads_and_writes_over_tls_with_its_x509_credentials() {
    if !tools() || !have("qemu-img") {
        return;
    }
    let Setup { dir, certs, swap } = setup();
    let (_srv, port) = serve_tcp(
        &swap,
        &[
            "--tls-certificates",
            s(&certs.dir("server")),
            "--tls-verify-peer",
        ],
        &[],
    );
    let object = format!(
        "tls-creds-x509,id=tls0,endpoint=client,dir={}",
        certs.dir("good").display()
    );
    let target = format!("driver=nbd,host=127.0.0.1,port={port},tls-creds=tls0");
    let image = common::noise(8, 4 << 20);
    let raw = dir.path().join("q.raw");
    std::fs::write(&raw, &image).unwrap();
    let qemu = |args: &[&str]| {
        let o = Command::new("qemu-img")
            .args(args)
            .env("PATH", path_env())
            .output()
            .unwrap();
        assert!(o.status.success(), "qemu-img {args:?}: {o:?}");
        o.stdout
    };
    // qemu-img writes the image into the export, then reads it back into a file.
    qemu(&[
        "convert",
        "-n",
        "--object",
        &object,
        "-f",
        "raw",
        s(&raw),
        "--target-image-opts",
        &target,
    ]);
    let back = dir.path().join("back.raw");
    qemu(&[
        "convert",
        "--object",
        &object,
        "--image-opts",
        &target,
        "-O",
        "raw",
        s(&back),
    ]);
    assert!(std::fs::read(&back).unwrap()[..image.len()] == image[..]);
    let info = qemu(&["info", "--object", &object, "--image-opts", &target]);
    assert!(
        String::from_utf8_lossy(&info).contains("16 MiB"),
        "{}",
        String::from_utf8_lossy(&info)
    );
}

#[test]
fn allow_lists_give_each_client_certificate_its_access() {
    if !tools() {
        return;
    }
    let Setup { dir, certs, swap } = setup();
    let log = dir.path().join("serve.log");
    let (_srv, port) = serve_tcp_logged(
        &swap,
        &[
            "--tls-certificates",
            s(&certs.dir("server")),
            "--tls-verify-peer",
            "--export",
            "disk",
            "--allow",
            "disk=alice,bob:ro",
        ],
        &[],
        Some(&log),
    );
    let uri = |who: &str| {
        format!(
            "nbds://127.0.0.1:{port}/disk?tls-certificates={}",
            certs.dir(who).display()
        )
    };
    let info = |who: &str| nbdinfo(&uri(who));
    // alice (CN=alice, the "good" folder) reads and writes.
    let image = common::noise(6, 1 << 20);
    round_trip(dir.path(), &uri("good"), &image);
    // bob reads, read-only: his writes are refused and change nothing.
    let o = info("bob");
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("is_read_only: true"));
    let other = dir.path().join("other.img");
    std::fs::write(&other, common::noise(7, 1 << 20)).unwrap();
    assert!(nbdcopy(s(&other), &uri("bob")).is_err(), "bob wrote");
    let back = dir.path().join("bob.img");
    nbdcopy(&uri("bob"), s(&back)).unwrap();
    assert!(std::fs::read(&back).unwrap()[..image.len()] == image[..]);
    // carol has a certificate the CA signed, but no rule: refused, and the log names her.
    let o = info("carol");
    assert!(!o.status.success(), "carol was served: {o:?}");
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refused by --allow") && text.contains("carol"),
        "{text}"
    );
    // --allow needs identities: without --tls-verify-peer it is refused at start.
    let o = common::run(&[
        "serve",
        s(&swap),
        "--listen",
        "127.0.0.1:1",
        "--tls-certificates",
        s(&certs.dir("server")),
        "--allow",
        "disk=alice",
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
}

/// What a kernel-device test set up, undone in reverse on drop (also when it fails).
#[derive(Default)]
struct Undo(Vec<Box<dyn FnOnce()>>);

impl Drop for Undo {
    fn drop(&mut self) {
        while let Some(f) = self.0.pop() {
            f();
        }
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    let o = Command::new(cmd)
        .args(args)
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(o.status.success(), "{cmd} {args:?}: {o:?}");
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Mounts the TLS export at `uri` as a kernel block device (nbdfuse's file on a loop
/// device) on `at`, runs `f` on the mounted folder, and undoes it all.
fn on_kernel_device(home: &Path, uri: &str, work: &Path, at: &str, f: impl FnOnce(&Path)) {
    let mut undo = Undo::default();
    let fuse_dir = work.join(format!("fuse-{at}"));
    let mnt = work.join(format!("mnt-{at}"));
    std::fs::create_dir_all(&fuse_dir).unwrap();
    std::fs::create_dir_all(&mnt).unwrap();
    let mut child = Command::new("nbdfuse")
        .arg(&fuse_dir)
        .arg(uri)
        .env("PATH", path_env())
        .env("HOME", home)
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let file = fuse_dir.join("nbd");
    let t = Instant::now();
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) != SIZE {
        assert!(
            t.elapsed() < Duration::from_secs(20) && matches!(child.try_wait(), Ok(None)),
            "nbdfuse did not mount the TLS export"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    {
        let fuse_dir = fuse_dir.clone();
        undo.0.push(Box::new(move || {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&fuse_dir)
                .status();
            let t = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }));
    }
    let dev = sh("losetup", &["--find", "--show", s(&file)]);
    {
        let dev = dev.clone();
        undo.0.push(Box::new(move || {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }));
    }
    if at == "first" {
        sh("mkfs.ext4", &["-q", &dev]);
    }
    sh("mount", &[&dev, s(&mnt)]);
    {
        let mnt = mnt.clone();
        undo.0.push(Box::new(move || {
            let _ = Command::new("umount").arg(&mnt).status();
        }));
    }
    f(&mnt);
}

#[test]
fn a_client_host_mounts_a_tls_export_through_nbdfuse_and_a_loop_device() {
    if !tools() || !have("nbdfuse") || !have("losetup") || !have("mkfs.ext4") {
        return;
    }
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    if !root || !Path::new("/dev/fuse").exists() || !Path::new("/dev/loop-control").exists() {
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs root, /dev/fuse and loop devices under CI=true"
        );
        eprintln!("SKIPPING: needs root, /dev/fuse and /dev/loop-control");
        return;
    }
    let Setup { dir, certs, swap } = setup();
    let (_srv, port) = serve_tcp(&swap, &["--tls-certificates", s(&certs.dir("server"))], &[]);
    // nbdfuse takes no certificate folder in the URI: libnbd looks in
    // $HOME/.pki/libnbd (then /etc/pki/libnbd) for the CA.
    let home = dir.path().join("home");
    let pki = home.join(".pki/libnbd");
    std::fs::create_dir_all(&pki).unwrap();
    std::fs::copy(
        certs.dir("nocert").join("ca-cert.pem"),
        pki.join("ca-cert.pem"),
    )
    .unwrap();
    let uri = format!("nbds://127.0.0.1:{port}/");
    let payload = common::noise(11, 3 << 20);
    on_kernel_device(&home, &uri, dir.path(), "first", |mnt| {
        std::fs::write(mnt.join("f.bin"), &payload).unwrap();
        sh("sync", &[]);
    });
    on_kernel_device(&home, &uri, dir.path(), "again", |mnt| {
        assert!(std::fs::read(mnt.join("f.bin")).unwrap() == payload);
    });
}

/// A psktool-style key file with a random 32-byte key for each user.
fn psk_file(path: &Path, users: &[&str]) {
    let lines: String = users
        .iter()
        .enumerate()
        .map(|(i, u)| format!("{u}:{}\n", hex_key(i as u64 + 1)))
        .collect();
    std::fs::write(path, lines).unwrap();
}

fn hex_key(seed: u64) -> String {
    common::noise(seed * 7919, 32)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn pre_shared_keys_work_with_libnbd_and_qemu_and_name_identities_for_allow_lists() {
    if !tools() || !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = disk(dir.path());
    let keys = dir.path().join("keys.psk");
    psk_file(&keys, &["alice", "bob", "carol"]);
    let log = dir.path().join("serve.log");
    let (_srv, port) = serve_tcp_logged(
        &swap,
        &["--tls-psk", s(&keys), "--allow", "*=alice,bob:ro"],
        &[],
        Some(&log),
    );
    let uri = |user: &str, file: &Path| {
        format!(
            "nbds://{user}@127.0.0.1:{port}/?tls-psk-file={}",
            file.display()
        )
    };
    let image = common::noise(12, 2 << 20);
    round_trip(dir.path(), &uri("alice", &keys), &image);
    // bob: read-only.
    let o = nbdinfo(&uri("bob", &keys));
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("is_read_only: true"));
    // carol has a key but no rule; alice with a wrong key; a user with no key.
    let wrong = dir.path().join("wrong.psk");
    std::fs::write(
        &wrong,
        format!("alice:{}\nmallory:{}\n", hex_key(99), hex_key(98)),
    )
    .unwrap();
    for (who, file) in [("carol", &keys), ("alice", &wrong), ("mallory", &wrong)] {
        let o = nbdinfo(&uri(who, file));
        assert!(
            !o.status.success(),
            "{who} with {} was served: {o:?}",
            file.display()
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("refused by --allow") && text.contains("carol"),
        "{text}"
    );
    // qemu with its tls-creds-psk object (a folder holding keys.psk).
    let qdir = dir.path().join("qemu-psk");
    std::fs::create_dir_all(&qdir).unwrap();
    std::fs::copy(&keys, qdir.join("keys.psk")).unwrap();
    let object = format!(
        "tls-creds-psk,id=tls0,endpoint=client,username=alice,dir={}",
        qdir.display()
    );
    let back = dir.path().join("q.raw");
    let o = Command::new("qemu-img")
        .args(["convert", "--object", &object, "--image-opts"])
        .arg(format!(
            "driver=nbd,host=127.0.0.1,port={port},tls-creds=tls0"
        ))
        .args(["-O", "raw", s(&back)])
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(o.status.success(), "qemu-img over PSK: {o:?}");
    assert!(std::fs::read(&back).unwrap()[..image.len()] == image[..]);
    // Bad key files are refused at start, naming the line.
    let bad = dir.path().join("bad.psk");
    std::fs::write(&bad, "alice:not-hex\n").unwrap();
    let o = common::run(&[
        "serve",
        s(&swap),
        "--listen",
        "127.0.0.1:1",
        "--tls-psk",
        s(&bad),
    ]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("line 1"),
        "{o:?}"
    );
}

#[test]
fn nbdsh_writes_and_reads_over_tls() {
    if !tools() || !have("nbdsh") {
        return;
    }
    let Setup {
        dir: _dir,
        certs,
        swap,
    } = setup();
    let (_srv, port) = serve_tcp(&swap, &["--tls-certificates", s(&certs.dir("server"))], &[]);
    // nbdsh's -u refuses a certificate folder in the URI unless allowed first.
    let o = Command::new("nbdsh")
        .args(["-c", "h.set_uri_allow_local_file(True)"])
        .args([
            "-c",
            &format!("h.connect_uri({:?})", tls_uri(port, &certs.dir("nocert"))),
        ])
        .args([
            "-c",
            "assert h.get_size() == 16 << 20\n\
             h.pwrite(b'tls!' * 1024, 65536)\n\
             h.flush()\n\
             assert h.pread(4096, 65536) == b'tls!' * 1024\n\
             print('nbdsh over TLS ok')",
        ])
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("nbdsh over TLS ok"));
}
