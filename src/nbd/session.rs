//! The transmission phase of one connection: a reader that validates each request and
//! hands it to a task (at most `MAX_IN_FLIGHT` at once) or runs it itself (a small
//! whole-block write; a read of a local disk, small, or up to 1 MiB while every core
//! has a busy connection); replies written whole under a lock, in whatever order they
//! finish. Requests are read through a buffer, and the replies the reader makes itself
//! are held until it has no complete request left to take (or would wait for
//! anything), then written in one go.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use nbd_proto::{self as p, cmd, cmd_flags, errno, state};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::sync::{Mutex, Semaphore};

use super::{Negotiated, PayloadBudget, BASE_ALLOCATION_ID, MAX_IN_FLIGHT, MAX_PAYLOAD};
use crate::buffers::{self, BufferPool};
use crate::cpus;
use crate::error::Error;
use crate::trace::ReadTrace;
use crate::volume::Volume;

/// Bytes of requests read from the client at once.
const READ_BUFFER: usize = 256 << 10;

/// Most block-status descriptors in one reply.
const MAX_DESCRIPTORS: usize = 1024;

type Writer<S> = Arc<Mutex<WriteHalf<S>>>;

/// How a request ends.
enum Outcome {
    Ok,
    Data(ReadReply),
    Status(Vec<(u32, u32)>),
    Err(u32, String),
}

/// The bytes of a READ and how to send them.
struct ReadReply {
    /// A pooled buffer, possibly longer than the reply (kept at its whole length so
    /// its next user needs no zeroing): the reply is its first `len` bytes.
    buf: Vec<u8>,
    len: usize,
    offset: u64,
    /// The client asked for one chunk (NBD_CMD_FLAG_DF): no holes split out.
    dont_fragment: bool,
}

impl ReadReply {
    /// The reply's bytes.
    fn data(&self) -> &[u8] {
        head(&self.buf, self.len)
    }
}

/// The first `len` bytes of a pooled buffer (its callers checked that it holds them).
fn head(buf: &[u8], len: usize) -> &[u8] {
    buf.get(..len).unwrap_or(buf)
}

/// NBD's errno for `e`: the shared classification, in the spec's wire values.
fn errno_of(e: &Error) -> u32 {
    match e.errno() {
        libc::ENOSPC => errno::ENOSPC,
        libc::EINVAL => errno::EINVAL,
        _ => errno::EIO,
    }
}

/// Checks a request against the export; Some(errno) when it must be refused.
pub fn validate(
    r: &p::Request,
    size: u64,
    read_only: bool,
    neg: &Negotiated,
) -> Option<(u32, &'static str)> {
    let end = r.offset.checked_add(u64::from(r.length));
    let writes = matches!(r.kind, cmd::WRITE | cmd::TRIM | cmd::WRITE_ZEROES);
    let known = [
        cmd::READ,
        cmd::WRITE,
        cmd::FLUSH,
        cmd::TRIM,
        cmd::CACHE,
        cmd::WRITE_ZEROES,
        cmd::BLOCK_STATUS,
    ];
    if !known.contains(&r.kind) {
        return Some((errno::EINVAL, "unknown command"));
    }
    let allowed = cmd_flags::FUA
        | cmd_flags::NO_HOLE
        | cmd_flags::DF
        | cmd_flags::REQ_ONE
        | cmd_flags::FAST_ZERO;
    if r.flags & !allowed != 0 {
        return Some((errno::EINVAL, "unknown command flags"));
    }
    if writes && read_only {
        return Some((errno::EPERM, "export is read-only"));
    }
    if r.kind == cmd::BLOCK_STATUS && !neg.base_allocation {
        return Some((errno::EINVAL, "no metadata context negotiated"));
    }
    if r.flags & cmd_flags::DF != 0 && !neg.structured {
        return Some((errno::EINVAL, "DF needs structured replies"));
    }
    if matches!(r.kind, cmd::READ | cmd::WRITE) && r.length > MAX_PAYLOAD {
        return Some((
            errno::EOVERFLOW,
            "request larger than the maximum block size",
        ));
    }
    if r.kind == cmd::CACHE && r.length > super::MAX_CACHE {
        // On a disk behind a URL a CACHE downloads its whole range.
        return Some((errno::EINVAL, "CACHE of more than 64 MiB in one request"));
    }
    if r.kind == cmd::FLUSH {
        return None;
    }
    match end {
        Some(e) if e <= size => None,
        _ if writes => Some((errno::ENOSPC, "request past the end of the export")),
        _ => Some((errno::EINVAL, "request past the end of the export")),
    }
}

/// Serves requests until DISC, EOF or a framing error; reads are logged to `trace`.
pub async fn run<S>(
    stream: S,
    vol: Arc<Volume>,
    neg: Negotiated,
    trace: Option<Arc<ReadTrace>>,
    budget: PayloadBudget,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    run_pausable(stream, Vec::new(), vol, neg, trace, budget, None)
        .await
        .map(|_| ())
}

/// A connection stopped between two requests, to be served on by another process:
/// every request read so far has been answered; `unread` holds the bytes read from the
/// stream but not yet taken (the start of the next requests), to be served first.
pub struct Paused<S> {
    pub stream: S,
    pub unread: Vec<u8>,
}

/// Asks sessions to pause (see [`run_pausable`]).
#[derive(Clone, Default)]
pub struct PauseSignal {
    asked: Arc<std::sync::atomic::AtomicBool>,
    notify: Arc<tokio::sync::Notify>,
}

impl PauseSignal {
    /// Asks every session sharing this signal to pause.
    pub fn pause(&self) {
        self.asked.store(true, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    fn asked(&self) -> bool {
        self.asked.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// [`run`], starting with `unread` (bytes a paused session had read and not taken)
/// and, when `pause` is asked, stopping at the next request boundary: what is in
/// flight is answered and the stream handed back with the bytes not yet taken. No
/// flush is done on pausing (the caller flushes before handing the stream on).
pub async fn run_pausable<S>(
    stream: S,
    unread: Vec<u8>,
    vol: Arc<Volume>,
    neg: Negotiated,
    trace: Option<Arc<ReadTrace>>,
    budget: PayloadBudget,
    pause: Option<PauseSignal>,
) -> std::io::Result<Option<Paused<S>>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    // Buffered: a client with many requests in flight sends them in one go, and they
    // are taken in one read instead of two (header, payload) each.
    let mut rd =
        tokio::io::BufReader::with_capacity(READ_BUFFER, std::io::Cursor::new(unread).chain(rd));
    let wr: Writer<S> = Arc::new(Mutex::new(wr));
    let mut pending = Pending {
        out: Vec::new(),
        vol: vol.clone(),
        held: false,
    };
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let pool = buffers::shared();
    let neg = Arc::new(neg);
    let read_only = !vol.writable() || neg.flags & nbd_proto::flags::READ_ONLY != 0;
    let size = vol.size();
    let mut paused = false;
    let mut busy = Busy::new(&BUSY_SESSIONS);
    loop {
        // Replies held go out before this task could wait on the client.
        if rd.buffer().len() < p::REQUEST_LEN {
            pending.flush(&wr).await?;
            if slots.available_permits() == MAX_IN_FLIGHT {
                // Nothing in flight and no request read: about to wait on the client.
                busy.set(false);
            }
        }
        if let Some(ps) = &pause {
            // Between requests: wait for bytes or for a pause, whichever comes first
            // (fill_buf takes nothing, so a pause loses no byte).
            let asked = ps.notify.notified();
            tokio::pin!(asked);
            asked.as_mut().enable();
            if ps.asked() {
                paused = true;
                break;
            }
            if rd.buffer().len() < p::REQUEST_LEN {
                tokio::select! {
                    r = rd.fill_buf() => { r?; }
                    _ = &mut asked => { paused = true; break; }
                }
            }
        }
        let mut h = [0u8; p::REQUEST_LEN];
        match rd.read_exact(&mut h).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e),
        }
        let req = match p::Request::decode(&h) {
            Ok(r) => r,
            Err(err) => {
                tracing::info!(%err, "bad request; closing the connection");
                break;
            }
        };
        if req.kind == cmd::DISC {
            break;
        }
        busy.set(true);
        // The buffer's share of the server's memory comes first (a WRITE's payload
        // is part of the framing, so reading it waits too).
        let buffer = match req.kind {
            cmd::READ | cmd::WRITE | cmd::CACHE => req.length.min(MAX_PAYLOAD),
            _ => 0,
        };
        let share = if buffer > 0 {
            let ready = budget.try_acquire(buffer);
            if ready.is_none() {
                pending.flush(&wr).await?;
            }
            match ready {
                Some(p) => Some(p),
                None => match budget.acquire(buffer).await {
                    Some(p) => Some(p),
                    None => break,
                },
            }
        } else {
            None
        };
        let mut payload = Vec::new();
        let mut payload_len = 0;
        if req.kind == cmd::WRITE {
            if req.length > MAX_PAYLOAD {
                tracing::info!(len = req.length, "write larger than the maximum; closing");
                let _ = pending.flush(&wr).await;
                let _ = send(
                    &wr,
                    &neg,
                    req.cookie,
                    &Outcome::Err(errno::EOVERFLOW, "too large".into()),
                )
                .await;
                break;
            }
            // At least the payload's length: the pool's buffers keep their whole
            // length (shortening one meant zeroing it again before a longer use).
            payload = pool.take_at_least(req.length as usize);
            payload_len = req.length as usize;
            if payload.len() < payload_len {
                tracing::error!("a pooled buffer shorter than asked; closing");
                break;
            }
            if rd.buffer().len() < payload_len {
                pending.flush(&wr).await?;
            }
            // The payload holds a share of the server's budget: a client that stops
            // sending mid-payload is cut off rather than starving the others.
            match tokio::time::timeout(
                super::payload_timeout(),
                rd.read_exact(payload.get_mut(..payload_len).unwrap_or_default()),
            )
            .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::info!(error = %e, "client went away mid-write");
                    break;
                }
                Err(_) => {
                    tracing::warn!(
                        len = req.length,
                        "write payload not sent within {}s; closing",
                        super::payload_timeout().as_secs()
                    );
                    break;
                }
            }
        }
        if let Some((code, why)) = validate(&req, size, read_only, &neg) {
            pending
                .add(&wr, &neg, req.cookie, &Outcome::Err(code, why.into()))
                .await?;
            continue;
        }
        if let (Some(t), cmd::READ) = (&trace, req.kind) {
            t.record(req.offset, u64::from(req.length));
        }
        let run_here = match req.kind {
            cmd::WRITE => inline(&req) && !vol.write_may_wait(),
            cmd::READ => {
                vol.local_only()
                    && (req.length <= INLINE_MAX
                        || (req.length <= INLINE_READ_MAX && Busy::sessions() >= cpus::available()))
            }
            _ => false,
        };
        if run_here {
            // Small whole-block writes and small reads of a local disk cost
            // microseconds: run them here instead of handing each to the blocking pool
            // and back (context switches dominated random writes: 1.23x with this). A
            // write that may wait for a checkpoint, or a read that may wait on a
            // network, goes to the pool, so this task never blocks for long.
            // A write's log ops stay buffered until the held replies go out: one
            // write(2) hands the whole batch to the kernel before any is acknowledged.
            let outcome = execute(&vol, &req, head(&payload, payload_len), &neg, true, pool);
            pending.held |= req.kind == cmd::WRITE;
            pending.add(&wr, &neg, req.cookie, &outcome).await?;
            pool.give(payload);
            if let Outcome::Data(r) = outcome {
                pool.give(r.buf);
            }
            // Held until the reply is copied out (a large read's reply is written at
            // once): the copy is part of the request's memory.
            drop(share);
            continue;
        }
        pending.flush(&wr).await?;
        let permit = match slots.clone().acquire_owned().await {
            Ok(p) => p,
            Err(_) => break,
        };
        let (vol, wr, neg) = (vol.clone(), wr.clone(), neg.clone());
        tokio::spawn(async move {
            let cookie = req.cookie;
            let n = neg.clone();
            let outcome = match tokio::task::spawn_blocking(move || {
                let o = execute(&vol, &req, head(&payload, payload_len), &n, false, pool);
                pool.give(payload);
                o
            })
            .await
            {
                Ok(o) => o,
                Err(_) => Outcome::Err(errno::EIO, "request task failed".into()),
            };
            if let Err(e) = send(&wr, &neg, cookie, &outcome).await {
                tracing::debug!(error = %e, "reply not delivered");
            }
            if let Outcome::Data(r) = outcome {
                pool.give(r.buf);
            }
            drop(share);
            // The connection before the slot: once every slot is back, a pausing
            // session takes the connection out of the last `Arc` (the task's captures
            // were dropped only after the slot, and the pause could find it still held).
            drop(wr);
            drop(permit);
        });
    }
    // Replies held, and those of requests in flight, go out before we close.
    let _ = pending.flush(&wr).await;
    let _ = slots.acquire_many(MAX_IN_FLIGHT as u32).await;
    if paused {
        // Every reply is out and no task holds the writer any more.
        pending.flush(&wr).await?;
        let mut left = rd.buffer().to_vec();
        let (cursor, rd) = rd.into_inner().into_inner();
        let pos = (cursor.position() as usize).min(cursor.get_ref().len());
        left.extend_from_slice(&cursor.get_ref()[pos..]);
        let wr = Arc::try_unwrap(wr)
            .map_err(|_| std::io::Error::other("a reply task still holds the connection"))?
            .into_inner();
        return Ok(Some(Paused {
            stream: rd.unsplit(wr),
            unread: left,
        }));
    }
    if !read_only {
        let v = vol.clone();
        let _ = tokio::task::spawn_blocking(move || v.flush()).await;
    }
    let mut w = wr.lock().await;
    let _ = w.shutdown().await;
    Ok(None)
}

/// Largest write run inline on the connection's task, and largest read of a local
/// disk run there whatever the other connections do.
const INLINE_MAX: u32 = 64 << 10;

/// Largest read of a local disk run on the connection's task while at least as many
/// connections as cores have work. A read handed to the blocking pool is decoded on
/// one thread and sent from another, its reply waiting in line for the connection
/// behind others: copying it into the socket then took three times as long as from a
/// buffer the same core just filled (`nbdcopy` out, four connections of 256 KiB reads:
/// 0.6 of the server's CPU per byte inline). With fewer busy connections than cores,
/// the pool is what spreads one connection's reads over the cores (one connection
/// of 256 KiB reads inline: 0.72x).
const INLINE_READ_MAX: u32 = 1 << 20;

/// Marks a session that has work (a request read and not yet answered, or requests
/// waiting to be read) in a count shared by every session of the process, which
/// compete for the same cores.
struct Busy {
    on: bool,
    count: &'static AtomicUsize,
}

static BUSY_SESSIONS: AtomicUsize = AtomicUsize::new(0);

impl Busy {
    fn new(count: &'static AtomicUsize) -> Self {
        Self { on: false, count }
    }

    fn set(&mut self, on: bool) {
        if self.on != on {
            if on {
                self.count.fetch_add(1, Ordering::Relaxed);
            } else {
                self.count.fetch_sub(1, Ordering::Relaxed);
            }
            self.on = on;
        }
    }

    /// Sessions of this process that have work now.
    fn sessions() -> usize {
        BUSY_SESSIONS.load(Ordering::Relaxed)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// Whether `r` is a small write of whole blocks without FUA (no read-modify-write,
/// so never a fetch from a remote store, and no fsync).
fn inline(r: &p::Request) -> bool {
    let bs = crate::format::BLOCK_SIZE as u64;
    r.kind == cmd::WRITE
        && r.flags & cmd_flags::FUA == 0
        && r.length <= INLINE_MAX
        && r.offset.is_multiple_of(bs)
        && u64::from(r.length).is_multiple_of(bs)
}

/// Runs one request; `held`: a write leaves its log ops buffered for the caller's
/// [`Volume::hand_off`] before the reply.
fn execute(
    vol: &Volume,
    r: &p::Request,
    payload: &[u8],
    neg: &Negotiated,
    held: bool,
    pool: &BufferPool,
) -> Outcome {
    let len = u64::from(r.length);
    let fua = r.flags & cmd_flags::FUA != 0;
    let res = match r.kind {
        cmd::READ => {
            let len = r.length as usize;
            let mut buf = pool.take_at_least(len);
            let read = match buf.get_mut(..len) {
                Some(into) => vol.read_at(r.offset, into),
                None => Err(Error::internal("a pooled buffer shorter than asked")),
            };
            return match read {
                Ok(()) => Outcome::Data(ReadReply {
                    buf,
                    len,
                    offset: r.offset,
                    dont_fragment: r.flags & cmd_flags::DF != 0,
                }),
                Err(e) => {
                    // Partly filled: handed back, never sent (the next user fills it
                    // whole before sending).
                    pool.give(buf);
                    tracing::warn!(error = %e, offset = r.offset, "read failed");
                    Outcome::Err(errno_of(&e), e.to_string())
                }
            };
        }
        cmd::WRITE if held => vol.write_held(r.offset, payload),
        cmd::WRITE => vol.write_at(r.offset, payload),
        cmd::FLUSH => vol.flush(),
        cmd::TRIM | cmd::WRITE_ZEROES => vol.write_zeroes(r.offset, len),
        cmd::CACHE => {
            if vol.local_only() {
                // Reading warms the node cache and the page cache.
                let mut buf = vec![0u8; r.length.min(MAX_PAYLOAD) as usize];
                vol.read_at(r.offset, &mut buf)
            } else {
                // From fallbacks: the stored bytes of the whole range come into the cache
                // as a trace prefetch fetches them (in parallel, nothing decoded).
                vol.prefetch(&[(r.offset, len)], &|_| {}).map(|_| ())
            }
        }
        cmd::BLOCK_STATUS => {
            return match vol.block_status(r.offset, len) {
                Ok(ext) => {
                    let one = r.flags & cmd_flags::REQ_ONE != 0;
                    let mut d: Vec<(u32, u32)> = Vec::new();
                    for e in ext {
                        let flags = if e.allocated {
                            0
                        } else {
                            state::HOLE | state::ZERO
                        };
                        let mut left = e.length;
                        while left > 0 {
                            let piece = left.min(u64::from(u32::MAX) & !4095);
                            d.push((piece as u32, flags));
                            left -= piece;
                        }
                    }
                    d.truncate(if one { 1 } else { MAX_DESCRIPTORS });
                    Outcome::Status(d)
                }
                Err(e) => Outcome::Err(errno_of(&e), e.to_string()),
            };
        }
        _ => return Outcome::Err(errno::EINVAL, "unknown command".into()),
    };
    let res = res.and_then(|()| {
        if fua && r.kind != cmd::FLUSH {
            vol.flush()
        } else {
            Ok(())
        }
    });
    let _ = neg;
    match res {
        Ok(()) => Outcome::Ok,
        Err(e) => {
            tracing::warn!(error = %e, kind = r.kind, offset = r.offset, "request failed");
            Outcome::Err(errno_of(&e), e.to_string())
        }
    }
}

/// Writes the reply to `cookie` at once. The read data goes out from its own buffer,
/// between the headers (a vectored write), never copied into a reply buffer: for 1 MiB
/// reads that copy was a twentieth of the server's time.
async fn send<S: AsyncWrite>(
    wr: &Writer<S>,
    neg: &Negotiated,
    cookie: u64,
    o: &Outcome,
) -> std::io::Result<()> {
    let mut pieces = Pieces::default();
    encode(&mut pieces, neg, cookie, o);
    let data: &[u8] = match o {
        Outcome::Data(r) => r.data(),
        _ => &[],
    };
    let mut slices = Vec::with_capacity(2 * pieces.cuts.len() + 1);
    let mut at = 0;
    for (cut, range) in &pieces.cuts {
        slices.push(std::io::IoSlice::new(
            pieces.head.get(at..*cut).unwrap_or(&[]),
        ));
        slices.push(std::io::IoSlice::new(
            data.get(range.clone()).unwrap_or(&[]),
        ));
        at = *cut;
    }
    slices.push(std::io::IoSlice::new(pieces.head.get(at..).unwrap_or(&[])));
    slices.retain(|s| !s.is_empty());
    let mut w = wr.lock().await;
    let mut rest: &mut [std::io::IoSlice<'_>] = &mut slices;
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        std::io::IoSlice::advance_slices(&mut rest, n);
    }
    w.flush().await
}

/// A reply as headers and, at `cuts` (offsets in `head`), ranges of the read's data.
#[derive(Default)]
struct Pieces {
    head: Vec<u8>,
    cuts: Vec<(usize, std::ops::Range<usize>)>,
}

impl p::ReplySink for Pieces {
    fn put(&mut self, bytes: &[u8]) {
        self.head.extend_from_slice(bytes);
    }
    fn data(&mut self, _: &[u8], range: std::ops::Range<usize>) {
        self.cuts.push((self.head.len(), range));
    }
}

/// Writes `out` whole, under the writer's lock.
async fn write_out<S: AsyncWrite>(wr: &Writer<S>, out: &[u8]) -> std::io::Result<()> {
    let mut w = wr.lock().await;
    w.write_all(out).await?;
    w.flush().await
}

/// Replies the connection task made itself, written together: a client with many
/// requests in flight gets one write (and one wake-up) for all that were answered in a
/// row, instead of one each.
struct Pending {
    out: Vec<u8>,
    vol: Arc<Volume>,
    /// Replies to writes whose log ops are still buffered: handed to the kernel before
    /// the replies go out, so an acknowledged write survives a kill of this process.
    held: bool,
}

impl Pending {
    /// Replies held before they are written anyway (large read replies).
    const LIMIT: usize = 256 << 10;

    async fn flush<S: AsyncWrite>(&mut self, wr: &Writer<S>) -> std::io::Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.held {
            // Not handed off, not acknowledged: the replies are dropped and the
            // connection closes (the client sees its writes unanswered, never done).
            if let Err(e) = self.vol.hand_off() {
                tracing::warn!(error = %e, "writing the log failed; closing the connection");
                self.out.clear();
                return Err(std::io::Error::other(e.to_string()));
            }
            self.held = false;
        }
        let r = write_out(wr, &self.out).await;
        self.out.clear();
        if self.out.capacity() > Self::LIMIT * 2 {
            self.out = Vec::new();
        }
        r
    }

    /// Adds a reply; writes everything held once past `LIMIT`.
    async fn add<S: AsyncWrite>(
        &mut self,
        wr: &Writer<S>,
        neg: &Negotiated,
        cookie: u64,
        o: &Outcome,
    ) -> std::io::Result<()> {
        encode(&mut self.out, neg, cookie, o);
        if self.out.len() >= Self::LIMIT {
            self.flush(wr).await?;
        }
        Ok(())
    }
}

/// Appends the encoded reply to `cookie` to `out` (the bytes: `nbd_proto::encode_reply`).
fn encode(out: &mut impl p::ReplySink, neg: &Negotiated, cookie: u64, o: &Outcome) {
    let reply = match o {
        Outcome::Ok => p::Reply::Done,
        Outcome::Err(code, msg) => p::Reply::Error(*code, msg),
        Outcome::Data(r) => p::Reply::Data {
            buf: r.data(),
            offset: r.offset,
            dont_fragment: r.dont_fragment,
        },
        Outcome::Status(d) => p::Reply::Status {
            context: BASE_ALLOCATION_ID,
            extents: d,
        },
    };
    p::encode_reply(out, neg.structured, cookie, &reply);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(kind: u16, flags: u16, offset: u64, length: u32) -> p::Request {
        p::Request {
            flags,
            kind,
            cookie: 1,
            offset,
            length,
        }
    }

    #[test]
    fn only_small_whole_block_writes_without_fua_run_inline() {
        assert!(inline(&req(cmd::WRITE, 0, 8192, 4096)));
        assert!(inline(&req(cmd::WRITE, 0, 0, INLINE_MAX)));
        assert!(!inline(&req(cmd::WRITE, 0, 0, INLINE_MAX + 4096)));
        assert!(!inline(&req(cmd::WRITE, 0, 512, 4096)), "read-modify-write");
        assert!(!inline(&req(cmd::WRITE, 0, 0, 1024)), "read-modify-write");
        assert!(!inline(&req(cmd::WRITE, cmd_flags::FUA, 0, 4096)), "fsync");
        assert!(!inline(&req(cmd::READ, 0, 0, 4096)), "may fetch");
    }

    #[test]
    fn a_busy_mark_counts_once_and_is_taken_back_when_dropped() {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let mut a = Busy::new(&COUNT);
        let mut b = Busy::new(&COUNT);
        a.set(true);
        a.set(true);
        assert_eq!(COUNT.load(Ordering::Relaxed), 1);
        b.set(true);
        assert_eq!(COUNT.load(Ordering::Relaxed), 2);
        a.set(false);
        a.set(false);
        assert_eq!(COUNT.load(Ordering::Relaxed), 1);
        drop(b);
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
        a.set(true);
        drop(a);
        assert_eq!(COUNT.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_reply_sent_in_pieces_is_the_same_bytes_as_one_buffer() {
        // Data, a hole, data again (structured replies split holes out), unaligned.
        let mut buf = vec![7u8; 3 * 4096 + 100];
        buf.get_mut(4096..8192).unwrap().fill(0);
        for (structured, dont_fragment) in [(false, false), (true, false), (true, true)] {
            let neg = Negotiated {
                structured,
                base_allocation: false,
                flags: 0,
                export: 0,
            };
            let o = Outcome::Data(ReadReply {
                buf: buf.clone(),
                len: buf.len(),
                offset: 4096 * 5 + 512,
                dont_fragment,
            });
            let mut whole: Vec<u8> = Vec::new();
            encode(&mut whole, &neg, 9, &o);
            let mut pieces = Pieces::default();
            encode(&mut pieces, &neg, 9, &o);
            let mut joined = Vec::new();
            let mut at = 0;
            for (cut, r) in &pieces.cuts {
                joined.extend_from_slice(&pieces.head[at..*cut]);
                joined.extend_from_slice(&buf[r.clone()]);
                at = *cut;
            }
            joined.extend_from_slice(&pieces.head[at..]);
            assert_eq!(joined, whole, "structured {structured}, df {dont_fragment}");
            assert!(whole.len() > buf.len() / 2);
        }
    }

    #[test]
    fn every_malformed_request_is_rejected_with_the_right_errno() {
        let neg = Negotiated {
            structured: false,
            base_allocation: false,
            flags: 0,
            export: 0,
        };
        let full = Negotiated {
            structured: true,
            base_allocation: true,
            flags: 0,
            export: 0,
        };
        let size = 1 << 20;
        let cases: &[(p::Request, bool, &Negotiated, Option<u32>)] = &[
            (req(cmd::READ, 0, 0, 4096), false, &neg, None),
            (req(99, 0, 0, 0), false, &neg, Some(errno::EINVAL)),
            (
                req(cmd::READ, 1 << 9, 0, 512),
                false,
                &neg,
                Some(errno::EINVAL),
            ),
            (req(cmd::READ, 0, size, 1), false, &neg, Some(errno::EINVAL)),
            (
                req(cmd::READ, 0, u64::MAX, 2),
                false,
                &neg,
                Some(errno::EINVAL),
            ),
            (
                req(cmd::READ, 0, 0, MAX_PAYLOAD + 1),
                false,
                &neg,
                Some(errno::EOVERFLOW),
            ),
            (
                req(cmd::WRITE, 0, size - 1, 2),
                false,
                &neg,
                Some(errno::ENOSPC),
            ),
            (
                req(cmd::WRITE_ZEROES, 0, size, 4096),
                false,
                &neg,
                Some(errno::ENOSPC),
            ),
            (
                req(cmd::TRIM, 0, u64::MAX, 4096),
                false,
                &neg,
                Some(errno::ENOSPC),
            ),
            (req(cmd::WRITE, 0, 0, 1), true, &neg, Some(errno::EPERM)),
            (req(cmd::TRIM, 0, 0, 1), true, &neg, Some(errno::EPERM)),
            (
                req(cmd::WRITE_ZEROES, 0, 0, 1),
                true,
                &neg,
                Some(errno::EPERM),
            ),
            (
                req(cmd::BLOCK_STATUS, 0, 0, 4096),
                false,
                &neg,
                Some(errno::EINVAL),
            ),
            (req(cmd::BLOCK_STATUS, 0, 0, 4096), false, &full, None),
            (
                req(cmd::BLOCK_STATUS, 0, size, 4096),
                false,
                &full,
                Some(errno::EINVAL),
            ),
            (
                req(cmd::READ, cmd_flags::DF, 0, 4096),
                false,
                &neg,
                Some(errno::EINVAL),
            ),
            (req(cmd::READ, cmd_flags::DF, 0, 4096), false, &full, None),
            (
                req(cmd::CACHE, 0, size, 1),
                false,
                &neg,
                Some(errno::EINVAL),
            ),
            (req(cmd::FLUSH, 0, 0, 0), true, &neg, None),
            (req(cmd::READ, 0, 0, 4096), true, &neg, None),
        ];
        for (r, ro, n, want) in cases {
            assert_eq!(
                validate(r, size, *ro, n).map(|e| e.0),
                *want,
                "{r:?} read_only={ro}"
            );
        }
        // CACHE: capped per request (a URL-backed disk downloads the whole range).
        let big = 1u64 << 40;
        let cap = super::super::MAX_CACHE;
        assert_eq!(
            validate(&req(cmd::CACHE, 0, 0, cap), big, false, &neg),
            None
        );
        let refused = validate(&req(cmd::CACHE, 0, 0, cap + 1), big, false, &neg);
        assert!(
            matches!(refused, Some((errno::EINVAL, m)) if m.contains("64 MiB")),
            "{refused:?}"
        );
    }
}

#[cfg(test)]
mod pause_tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn write_req(cookie: u64, offset: u64, data: &[u8]) -> Vec<u8> {
        let mut out = p::Request {
            flags: 0,
            kind: cmd::WRITE,
            cookie,
            offset,
            length: data.len() as u32,
        }
        .encode()
        .to_vec();
        out.extend_from_slice(data);
        out
    }

    /// A session paused between requests and a second one started on the same stream
    /// with the bytes the first had read and not taken: every request is answered once
    /// and every write lands, wherever the pause fell.
    #[test]
    fn a_paused_session_hands_on_every_byte() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        for pause_after in [0usize, 1, 7, 30, 63] {
            let dir = tempfile::tempdir().unwrap();
            let vol = Arc::new(Volume::create(&dir.path().join("d.swap"), 4 << 20).unwrap());
            let neg = Negotiated {
                export: 0,
                structured: false,
                base_allocation: false,
                flags: nbd_proto::flags::HAS_FLAGS | nbd_proto::flags::SEND_FLUSH,
            };
            let budget = PayloadBudget::new(64 << 20);
            const N: u64 = 64;
            // Writes of 1-3 blocks and sub-block ones, at their own offsets.
            let mut all = Vec::new();
            let mut want = vec![0u8; 4 << 20];
            for i in 0..N {
                let len = 512 * (1 + (i as usize * 7) % 24);
                let data: Vec<u8> = (0..len).map(|b| (b as u64 * 31 + i) as u8).collect();
                let off = i * 16384 + (i % 3) * 512;
                want[off as usize..off as usize + len].copy_from_slice(&data);
                all.extend(write_req(i + 1, off, &data));
            }
            let got = rt.block_on(async {
                let (client, server) = tokio::net::UnixStream::pair().unwrap();
                let (mut crd, mut cwr) = tokio::io::split(client);
                // All requests at once, so the first session buffers past its pause.
                let sender = tokio::spawn(async move {
                    cwr.write_all(&all).await.unwrap();
                    cwr
                });
                let pause = PauseSignal::default();
                let first = tokio::spawn(run_pausable(
                    server,
                    Vec::new(),
                    vol.clone(),
                    neg.clone(),
                    None,
                    budget.clone(),
                    Some(pause.clone()),
                ));
                let mut cookies = Vec::new();
                let mut r = [0u8; 16];
                for _ in 0..pause_after {
                    crd.read_exact(&mut r).await.unwrap();
                    cookies.push(u64::from_be_bytes(r[8..16].try_into().unwrap()));
                }
                pause.pause();
                let paused = first.await.unwrap().unwrap().expect("paused");
                let second = tokio::spawn(run_pausable(
                    paused.stream,
                    paused.unread,
                    vol.clone(),
                    neg,
                    None,
                    budget,
                    None,
                ));
                while (cookies.len() as u64) < N {
                    // A lost byte leaves a reply that never comes: fail, do not hang.
                    tokio::time::timeout(
                        std::time::Duration::from_secs(20),
                        crd.read_exact(&mut r),
                    )
                    .await
                    .expect("a reply after the pause never came")
                    .unwrap();
                    assert_eq!(&r[4..8], &[0, 0, 0, 0], "error reply");
                    cookies.push(u64::from_be_bytes(r[8..16].try_into().unwrap()));
                }
                drop(sender.await.unwrap());
                second.abort();
                cookies
            });
            let mut sorted = got.clone();
            sorted.sort_unstable();
            assert_eq!(
                sorted,
                (1..=N).collect::<Vec<_>>(),
                "pause after {pause_after}"
            );
            let mut back = vec![0u8; 4 << 20];
            vol.read_at(0, &mut back).unwrap();
            assert!(back == want, "data after a pause at {pause_after}");
        }
    }
}
