//! Hostile NBD clients over a raw socket: wrong magic, unknown options and commands,
//! out-of-range and oversized requests, truncated packets, disconnects mid-request.
//! Each gets the errno the spec names or a clean close of that connection alone; the
//! server keeps serving others and loses no acknowledged data.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::server::Server;
use nbd_proto::{self as p, cmd, errno, opt, rep};

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap())
}

struct Client(UnixStream);

impl Client {
    /// Connects and completes the greeting (no options yet).
    fn greet(srv: &Server) -> Self {
        let mut s = UnixStream::connect(&srv.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], &p::NBDMAGIC.to_be_bytes());
        s.write_all(&3u32.to_be_bytes()).unwrap();
        Client(s)
    }
    fn option(&mut self, option: u32, data: &[u8]) {
        let mut o = p::IHAVEOPT.to_be_bytes().to_vec();
        o.extend_from_slice(&option.to_be_bytes());
        o.extend_from_slice(&(data.len() as u32).to_be_bytes());
        o.extend_from_slice(data);
        self.0.write_all(&o).unwrap();
    }
    /// Reads one option reply: (reply type, data).
    fn option_reply(&mut self) -> (u32, Vec<u8>) {
        let mut h = [0u8; 20];
        self.0.read_exact(&mut h).unwrap();
        let len = be32(&h[16..20]) as usize;
        let mut d = vec![0u8; len];
        self.0.read_exact(&mut d).unwrap();
        (be32(&h[12..16]), d)
    }
    /// OPT_GO on the default export; returns the reply types seen.
    fn go(&mut self) -> Vec<u32> {
        self.option(opt::GO, &[0, 0, 0, 0, 0, 0]);
        let mut seen = Vec::new();
        loop {
            let (t, _) = self.option_reply();
            seen.push(t);
            if t == rep::ACK || t >= 1 << 31 {
                return seen;
            }
        }
    }
    fn request(&mut self, kind: u16, flags: u16, offset: u64, length: u32, payload: &[u8]) {
        let r = p::Request {
            flags,
            kind,
            cookie: 0xfeed,
            offset,
            length,
        };
        self.0.write_all(&r.encode()).unwrap();
        self.0.write_all(payload).unwrap();
    }
    /// A simple reply's errno, reading `data` bytes of payload on success.
    fn reply(&mut self, data: usize) -> (u32, Vec<u8>) {
        let mut h = [0u8; 16];
        self.0.read_exact(&mut h).unwrap();
        assert_eq!(be32(&h[..4]), p::SIMPLE_REPLY_MAGIC);
        let e = be32(&h[4..8]);
        let mut d = vec![0u8; if e == 0 { data } else { 0 }];
        self.0.read_exact(&mut d).unwrap();
        (e, d)
    }
    fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

fn setup() -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 1 << 20);
    let srv = Server::start(dir.path(), &swap, &[]);
    (dir, srv)
}

#[test]
fn unknown_option_gets_unsup_and_the_handshake_goes_on() {
    let (_d, srv) = setup();
    let mut c = Client::greet(&srv);
    c.option(99, b"whatever");
    assert_eq!(c.option_reply().0, rep::ERR_UNSUP);
    c.option(opt::STARTTLS, &[]);
    assert_eq!(c.option_reply().0, rep::ERR_UNSUP);
    c.option(opt::LIST, b"junk");
    assert_eq!(c.option_reply().0, rep::ERR_INVALID);
    c.option(opt::SET_META_CONTEXT, &[0; 8]);
    assert_eq!(
        c.option_reply().0,
        rep::ERR_INVALID,
        "meta context before structured replies"
    );
    c.option(opt::INFO, &[0, 0, 0, 9, b'x']);
    assert_eq!(c.option_reply().0, rep::ERR_INVALID, "truncated INFO");
    c.option(opt::GO, &[0, 0, 0, 3, b'a', b'b', b'c', 0, 0]);
    assert_eq!(c.option_reply().0, rep::ERR_UNKNOWN, "no such export");
    let seen = c.go();
    assert_eq!(*seen.last().unwrap(), rep::ACK, "{seen:?}");
    c.request(cmd::READ, 0, 0, 512, &[]);
    assert_eq!(c.reply(512), (0, vec![0u8; 512]));
    srv.stop();
}

#[test]
fn bad_magic_closes_only_that_connection() {
    let (_d, srv) = setup();
    let mut good = Client::greet(&srv);
    good.go();
    good.request(cmd::WRITE, 0, 0, 5, b"hello");
    assert_eq!(good.reply(0).0, 0);
    // Bad option magic.
    let mut bad = Client::greet(&srv);
    bad.0.write_all(&[0u8; 16]).unwrap();
    assert!(bad.closed());
    // Bad request magic.
    let mut bad = Client::greet(&srv);
    bad.go();
    bad.0.write_all(&[0xAB; 28]).unwrap();
    assert!(bad.closed());
    // Truncated request, then disconnect.
    let mut bad = Client::greet(&srv);
    bad.go();
    bad.0.write_all(&p::REQUEST_MAGIC.to_be_bytes()).unwrap();
    drop(bad);
    // Truncated write payload, then disconnect.
    let mut bad = Client::greet(&srv);
    bad.go();
    bad.request(cmd::WRITE, 0, 4096, 4096, &[7u8; 100]);
    drop(bad);
    // Oversized write: the connection is closed (its payload cannot be skipped cheaply).
    let mut bad = Client::greet(&srv);
    bad.go();
    bad.request(cmd::WRITE, 0, 0, u32::MAX, &[]);
    assert_eq!(bad.reply(0).0, errno::EOVERFLOW);
    assert!(bad.closed());
    // The good connection still works and its data is intact.
    good.request(cmd::READ, 0, 0, 5, &[]);
    assert_eq!(good.reply(5), (0, b"hello".to_vec()));
    good.request(cmd::READ, 0, 4096, 4, &[]);
    assert_eq!(
        good.reply(4),
        (0, vec![0; 4]),
        "a truncated write must not land"
    );
    srv.stop();
}

#[test]
fn a_client_stalling_mid_payload_is_cut_off_and_its_share_returned() {
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 64 << 20);
    // A 32 MiB budget leaves 2 MiB for request buffers: a stalled 2 MiB write holds
    // all of it until the cut-off, and every other write waits for it.
    let srv = Server::start_with_env(
        dir.path(),
        &swap,
        &["--memory", "32M"],
        &[("MINDCASTLE_NBD_PAYLOAD_TIMEOUT", "2")],
    );
    let mut stalled = Client::greet(&srv);
    stalled.go();
    let r = p::Request {
        flags: 0,
        kind: cmd::WRITE,
        cookie: 1,
        offset: 0,
        length: 2 << 20,
    };
    let t = std::time::Instant::now();
    stalled.0.write_all(&r.encode()).unwrap();
    stalled.0.write_all(&[7u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut c = Client::greet(&srv);
    c.go();
    let data = vec![9u8; 1 << 20];
    c.request(cmd::WRITE, 0, 4096, 1 << 20, &data);
    assert_eq!(c.reply(0).0, 0);
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(15),
        "the second write went through after {waited:?}: it should wait for the cut-off"
    );
    assert!(stalled.closed(), "the stalled client is cut off");
    c.request(cmd::READ, 0, 4096, 1 << 20, &[]);
    assert_eq!(c.reply(1 << 20), (0, data));
    // Nothing of the stalled write was applied.
    c.request(cmd::READ, 0, 0, 4096, &[]);
    assert_eq!(c.reply(4096), (0, vec![0u8; 4096]));
    srv.stop();
}

#[test]
fn a_bad_payload_timeout_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 1 << 20);
    for bad in ["0", "soon", "99999"] {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mindcastle"))
            .env("MINDCASTLE_NBD_PAYLOAD_TIMEOUT", bad)
            .args(["info"])
            .arg(&swap)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{bad}: {o:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("MINDCASTLE_NBD_PAYLOAD_TIMEOUT"),
            "{o:?}"
        );
    }
}

#[test]
fn bad_requests_get_the_errno_the_spec_names() {
    let (_d, srv) = setup();
    let mut c = Client::greet(&srv);
    c.go();
    let size = 1u64 << 20;
    c.request(77, 0, 0, 0, &[]);
    assert_eq!(c.reply(0).0, errno::EINVAL, "unknown command");
    c.request(cmd::READ, 0x8000, 0, 512, &[]);
    assert_eq!(c.reply(0).0, errno::EINVAL, "unknown flags");
    c.request(cmd::READ, 0, size - 100, 512, &[]);
    assert_eq!(c.reply(0).0, errno::EINVAL, "read past the end");
    c.request(cmd::READ, 0, u64::MAX - 10, 512, &[]);
    assert_eq!(c.reply(0).0, errno::EINVAL, "offset overflow");
    c.request(cmd::READ, 0, 0, 64 << 20, &[]);
    assert_eq!(c.reply(0).0, errno::EOVERFLOW, "read over the maximum");
    c.request(cmd::WRITE, 0, size - 2, 4, b"abcd");
    assert_eq!(c.reply(0).0, errno::ENOSPC, "write past the end");
    c.request(cmd::WRITE_ZEROES, 0, size, 4096, &[]);
    assert_eq!(c.reply(0).0, errno::ENOSPC);
    c.request(cmd::TRIM, 0, size - 4096, 8192, &[]);
    assert_eq!(c.reply(0).0, errno::ENOSPC);
    c.request(cmd::BLOCK_STATUS, 0, 0, 4096, &[]);
    assert_eq!(
        c.reply(0).0,
        errno::EINVAL,
        "block status without a context"
    );
    // After all that, a write and read still work, and FLUSH/DISC are clean.
    c.request(cmd::WRITE, 1, 512, 3, b"xyz");
    assert_eq!(c.reply(0).0, 0);
    c.request(cmd::FLUSH, 0, 0, 0, &[]);
    assert_eq!(c.reply(0).0, 0);
    c.request(cmd::READ, 0, 510, 6, &[]);
    assert_eq!(c.reply(6), (0, b"\0\0xyz\0".to_vec()));
    c.request(cmd::DISC, 0, 0, 0, &[]);
    assert!(c.closed());
    srv.stop();
}

#[test]
fn export_name_option_and_abort() {
    let (_d, srv) = setup();
    let mut c = Client::greet(&srv);
    c.option(opt::EXPORT_NAME, b"");
    let mut h = [0u8; 10];
    c.0.read_exact(&mut h).unwrap();
    assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), 1 << 20);
    c.request(cmd::READ, 0, 0, 8, &[]);
    assert_eq!(c.reply(8), (0, vec![0; 8]));
    let mut a = Client::greet(&srv);
    a.option(opt::ABORT, &[]);
    assert_eq!(a.option_reply().0, rep::ACK);
    assert!(a.closed());
    srv.stop();
}
