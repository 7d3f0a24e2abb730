//! A small HTTP proxy for tests, run on a thread of the test: it forwards each request
//! to an upstream server on 127.0.0.1 (a new upstream connection each; the client's is
//! kept alive between requests), and can add latency,
//! answer 503 instead, or flip a byte of the body, at chosen rates (from a seed). It
//! counts requests and body bytes, so a test can assert on what crossed the network.
//! It can also add the object headers an emulator leaves out
//! (see [`Faults::add_object_headers`]).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to answers (rates in parts per thousand).
#[derive(Clone, Copy, Debug, Default)]
pub struct Faults {
    /// Answer 503 instead of forwarding.
    pub unavailable_permille: u32,
    /// Flip one byte of a 2xx body.
    pub corrupt_permille: u32,
    /// Wait this long before answering.
    pub latency: Duration,
    /// Give 2xx answers without an `ETag` one made from the request's path, and one
    /// without `Last-Modified` a fixed date. The GCS emulator sends neither (real GCS
    /// does) and object_store refuses answers without them; chunk objects never change,
    /// so one tag per path is honest.
    pub add_object_headers: bool,
    /// Drop the request's `Range` header, so the server answers 200 with the whole
    /// object, as a web server without range support does.
    pub ignore_range: bool,
    /// Send half of a 2xx body (its full `Content-Length` announced), then close: a
    /// connection reset mid-body.
    pub truncate_permille: u32,
    /// Read requests and never answer (a server that hangs).
    pub stall: bool,
}

/// Counters of a running proxy.
#[derive(Default)]
pub struct Counts {
    pub requests: AtomicU64,
    pub body_bytes: AtomicU64,
    pub injected: AtomicU64,
}

/// A running proxy; stops accepting when dropped.
pub struct Proxy {
    pub port: u16,
    pub counts: Arc<Counts>,
    pub faults: Arc<Mutex<Faults>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Forwards to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16, faults: Faults, seed: u64) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let counts = Arc::new(Counts::default());
        let faults = Arc::new(Mutex::new(faults));
        let stop = Arc::new(AtomicBool::new(false));
        let rng = Arc::new(Mutex::new(seed | 1));
        {
            let (counts, faults, stop) = (counts.clone(), faults.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((c, _)) => {
                            let (counts, faults, rng) =
                                (counts.clone(), faults.clone(), rng.clone());
                            std::thread::spawn(move || {
                                let _ = serve(c, upstream, &faults, &counts, &rng);
                            });
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Self {
            port,
            counts,
            faults,
            stop,
        }
    }

    /// Requests forwarded or answered so far.
    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::Relaxed)
    }

    /// Body bytes of the answers forwarded so far.
    pub fn body_bytes(&self) -> u64 {
        self.counts.body_bytes.load(Ordering::Relaxed)
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.counts.injected.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn roll(rng: &Mutex<u64>) -> u32 {
    let mut x = rng.lock().unwrap();
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    (*x % 1000) as u32
}

/// Reads one HTTP message head (up to the blank line) and then `Content-Length` bytes
/// (none when `no_body`: the answer to a HEAD). Buffered: a connection carries one
/// message each way, so nothing read ahead is lost.
fn read_message(s: &mut TcpStream, no_body: bool) -> std::io::Result<(String, Vec<u8>)> {
    let mut r = std::io::BufReader::with_capacity(16 << 10, &*s);
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let before = head.len();
        std::io::BufRead::read_until(&mut r, b'\n', &mut head)?;
        if head.len() == before {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let len = if no_body { Some(0) } else { None };
    let len = len
        .or_else(|| {
            head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            })
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((head, body))
}

/// The message head without header `name` (lower case).
fn without_header(head: &str, name: &str) -> String {
    let mut out = String::new();
    for l in head.split("\r\n").filter(|l| !l.is_empty()) {
        let is_it = l
            .split_once(':')
            .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name));
        if !is_it {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str("\r\n");
    out
}

/// Rewrites the head's `Connection` header: close after this message, or keep alive.
fn with_connection(head: &str, close: bool) -> String {
    let mut out = String::new();
    for l in head.split("\r\n").filter(|l| !l.is_empty()) {
        if !l.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(l);
            out.push_str("\r\n");
        }
    }
    out.push_str(if close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    out
}

/// Answers the requests of one client connection, each forwarded on a new upstream
/// connection. The client's connection is kept open between requests (as web servers
/// and object stores do) when the answer's length is known and it did not ask to close.
fn serve(
    mut c: TcpStream,
    upstream: u16,
    faults: &Mutex<Faults>,
    counts: &Counts,
    rng: &Mutex<u64>,
) -> std::io::Result<()> {
    // Head and body go out in separate writes: without this, Nagle's algorithm holds
    // the body back for the client's delayed ACK on a kept-alive connection.
    c.set_nodelay(true)?;
    loop {
        let Ok((head, body)) = read_message(&mut c, false) else {
            return Ok(()); // the client closed
        };
        let f = *faults.lock().unwrap();
        let is_head = head.starts_with("HEAD ");
        counts.requests.fetch_add(1, Ordering::Relaxed);
        if f.stall {
            // Hold the connection open, answering nothing, until the client gives up.
            let mut sink = [0u8; 4096];
            while matches!(c.read(&mut sink), Ok(n) if n > 0) {}
            return Ok(());
        }
        std::thread::sleep(f.latency);
        if roll(rng) < f.unavailable_permille {
            counts.injected.fetch_add(1, Ordering::Relaxed);
            return c.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
        let mut u = TcpStream::connect(("127.0.0.1", upstream))?;
        let head = if f.ignore_range {
            without_header(&head, "range")
        } else {
            head
        };
        u.write_all(with_connection(&head, true).as_bytes())?;
        u.write_all(&body)?;
        let (rhead, mut rbody) = read_message(&mut u, is_head)?;
        counts
            .body_bytes
            .fetch_add(rbody.len() as u64, Ordering::Relaxed);
        let ok = rhead
            .split_whitespace()
            .nth(1)
            .is_some_and(|code| code.starts_with('2'));
        if ok && !rbody.is_empty() && roll(rng) < f.corrupt_permille {
            counts.injected.fetch_add(1, Ordering::Relaxed);
            let mid = rbody.len() / 2;
            rbody[mid] ^= 0x01;
        }
        let rhead = if ok && f.add_object_headers {
            with_object_headers(&rhead, &head)
        } else {
            rhead
        };
        let asked_close = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("connection")
                    && v.trim().eq_ignore_ascii_case("close")
            })
        });
        if ok && rbody.len() > 1 && roll(rng) < f.truncate_permille {
            counts.injected.fetch_add(1, Ordering::Relaxed);
            c.write_all(with_connection(&rhead, true).as_bytes())?;
            c.write_all(&rbody[..rbody.len() / 2])?;
            return Ok(());
        }
        let keep = !asked_close && (is_head || has_header(&rhead, "content-length"));
        c.write_all(with_connection(&rhead, !keep).as_bytes())?;
        c.write_all(&rbody)?;
        if !keep {
            return Ok(());
        }
    }
}

fn has_header(head: &str, name: &str) -> bool {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .any(|(k, _)| k.trim().eq_ignore_ascii_case(name))
}

/// `response_head` with an `ETag` derived from the path in `request_head` (FNV-1a) and a
/// `Last-Modified`, where it has none.
fn with_object_headers(response_head: &str, request_head: &str) -> String {
    let path = request_head.split_whitespace().nth(1).unwrap_or("");
    let tag = path.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let mut head = response_head.trim_end_matches("\r\n").to_string();
    if !has_header(&head, "etag") {
        head.push_str(&format!("\r\nETag: \"{tag:016x}\""));
    }
    if !has_header(&head, "last-modified") {
        head.push_str("\r\nLast-Modified: Thu, 01 Jan 2026 00:00:00 GMT");
    }
    head.push_str("\r\n\r\n");
    head
}
