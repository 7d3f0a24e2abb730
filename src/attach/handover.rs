//! Hand-over: a new `attach --hand-over` of a disk takes its device from the running
//! attach (say, after an upgrade of the binary) without the kernel seeing it go.
//! For kernel nbd, the running one stops each connection between two requests, answers
//! what is in flight, flushes and checkpoints, and passes its ends of the connections
//! (with the request bytes it had read and not yet taken) to the new process, then
//! exits without closing the device. The new one opens the disk once the old one has
//! let go of it, serves those bytes first and then the connections, and runs the
//! statechange script with `recover`. Requests the kernel sends meanwhile wait in the
//! sockets. For ublk, the running one stops taking requests, flushes, checkpoints,
//! names its device and exits; the kernel holds the device's I/O until the new one
//! recovers it (`ublk`).
//!
//! Wire format, version 1, on the abstract Unix socket `mindcastle-handover-UUID`
//! (only a peer of this process's user id is answered):
//! ```text
//! request  new -> old  b"MCHANDOVER1\n"
//! answer   old -> new  b"MCHOVER1" | u32 LE device index | u32 LE n |
//!                      n x u32 LE unread length            (one message carrying the
//!                                                           n descriptors, SCM_RIGHTS)
//!                      then the n unread byte strings, in descriptor order
//! ublk     old -> new  b"MCHUBLK1" | u32 LE device id, then EOF (the old one exits)
//! refusal  old -> new  b"MCHNO1\n" | UTF-8 reason, then EOF
//! ```

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::sys;
use crate::error::{Error, ErrorKind, Result};

const REQUEST: &[u8] = b"MCHANDOVER1\n";
const ANSWER: &[u8] = b"MCHOVER1";
const REFUSAL: &[u8] = b"MCHNO1\n";
const UBLK_ANSWER: &[u8] = b"MCHUBLK1";
/// How long the new process waits for the old one to stop, flush and checkpoint.
const ANSWER_WITHIN: Duration = Duration::from_secs(300);

fn address(uuid: &str) -> std::io::Result<SocketAddr> {
    SocketAddr::from_abstract_name(format!("mindcastle-handover-{uuid}"))
}

/// What a hand-over gives the new process.
pub enum Handed {
    /// A kernel nbd device and, per connection, our end of it and the bytes read from
    /// it and not yet taken.
    Nbd {
        index: u32,
        conns: Vec<(UnixStream, Vec<u8>)>,
    },
    /// A ublk device to recover once the old process is gone.
    Ublk { id: u32 },
}

/// The old side: waits for a hand-over request and keeps it for the attach loop, which
/// `wake` tells (it sends this process SIGUSR2).
pub struct Listener {
    pending: Arc<Mutex<Option<UnixStream>>>,
}

impl Listener {
    /// Listens for disk `uuid` on a thread of its own. The name may still be held for
    /// a moment by the process this one took over from, so binding is retried for a
    /// while; failing that, it is logged and hand-over is not offered.
    pub fn start(uuid: &str) -> Self {
        let pending: Arc<Mutex<Option<UnixStream>>> = Arc::default();
        let slot = pending.clone();
        let uuid = uuid.to_string();
        let spawned = std::thread::Builder::new()
            .name("handover".into())
            .spawn(move || {
                let mut tries = 0;
                let listener = loop {
                    match address(&uuid).and_then(|a| UnixListener::bind_addr(&a)) {
                        Ok(l) => break l,
                        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 300 => {
                            tries += 1;
                            std::thread::sleep(Duration::from_millis(100));
                        }
                        Err(e) => {
                            tracing::warn!(
                                error = %e,
                                "no hand-over socket; `attach --hand-over` cannot take this device"
                            );
                            return;
                        }
                    }
                };
                for conn in listener.incoming() {
                    let Ok(mut conn) = conn else { continue };
                    match sys::peer_uid(conn.as_fd()) {
                        Ok(uid) if uid == sys::effective_uid() => {}
                        other => {
                            tracing::warn!(peer = ?other, "hand-over asked by another user; ignored");
                            continue;
                        }
                    }
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut req = [0u8; REQUEST.len()];
                    if conn.read_exact(&mut req).is_err() || req != REQUEST {
                        continue;
                    }
                    let _ = conn.set_read_timeout(None);
                    if let Ok(mut s) = slot.lock() {
                        *s = Some(conn);
                    }
                    if let Err(e) = sys::send_signal(std::process::id() as i32, libc::SIGUSR2) {
                        tracing::warn!(error = %e, "waking the attach for a hand-over");
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no hand-over thread");
        }
        Self { pending }
    }

    /// The hand-over asked for, if any.
    pub fn take(&self) -> Option<UnixStream> {
        self.pending.lock().ok().and_then(|mut s| s.take())
    }
}

/// Refuses a hand-over, telling the new process why.
pub fn refuse(mut peer: UnixStream, why: &str) {
    let _ = peer.write_all(REFUSAL);
    let _ = peer.write_all(why.as_bytes());
}

/// Sends the connections (borrowed: on failure the caller serves them on).
pub fn send(peer: &mut UnixStream, index: u32, conns: &[(UnixStream, Vec<u8>)]) -> Result<()> {
    let mut head = ANSWER.to_vec();
    head.extend_from_slice(&index.to_le_bytes());
    head.extend_from_slice(&(conns.len() as u32).to_le_bytes());
    for (_, unread) in conns {
        head.extend_from_slice(&(unread.len() as u32).to_le_bytes());
    }
    let fds: Vec<_> = conns.iter().map(|(s, _)| s.as_fd()).collect();
    sys::send_with_fds(peer.as_fd(), &head, &fds).map_err(|e| Error::io("handing over", e))?;
    for (_, unread) in conns {
        peer.write_all(unread)
            .map_err(|e| Error::io("handing over", e))?;
    }
    Ok(())
}

/// Names the ublk device handed over; the caller exits right after.
pub fn send_ublk(peer: &mut UnixStream, id: u32) -> Result<()> {
    let mut msg = UBLK_ANSWER.to_vec();
    msg.extend_from_slice(&id.to_le_bytes());
    peer.write_all(&msg)
        .map_err(|e| Error::io("handing over", e))
}

/// The new side: asks the running attach of disk `uuid` for its connections.
pub fn request(uuid: &str) -> Result<Handed> {
    let unavailable = |why: String| Error::new(ErrorKind::Unavailable, why);
    let mut s = address(uuid)
        .and_then(|a| UnixStream::connect_addr(&a))
        .map_err(|e| {
            unavailable(format!(
                "--hand-over: no running attach of disk {uuid} answers ({e})"
            ))
        })?;
    s.write_all(REQUEST)
        .map_err(|e| Error::io("asking for a hand-over", e))?;
    s.set_read_timeout(Some(ANSWER_WITHIN))
        .map_err(|e| Error::io("asking for a hand-over", e))?;
    let mut buf = vec![0u8; 4096];
    let (n, fds) = sys::recv_with_fds(s.as_fd(), &mut buf)
        .map_err(|e| Error::io("receiving a hand-over", e))?;
    buf.truncate(n);
    if fds.is_empty() {
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        buf.extend_from_slice(&rest);
        if let Some(id) = buf.strip_prefix(UBLK_ANSWER) {
            let id: [u8; 4] = id.try_into().map_err(|_| {
                unavailable("--hand-over: the running attach sent a bad ublk answer".into())
            })?;
            return Ok(Handed::Ublk {
                id: u32::from_le_bytes(id),
            });
        }
        return Err(unavailable(match buf.strip_prefix(REFUSAL) {
            Some(why) => format!(
                "--hand-over refused by the running attach: {}",
                String::from_utf8_lossy(why)
            ),
            None => "--hand-over: the running attach sent no connections".to_string(),
        }));
    }
    // The header may have come in pieces (a stream socket); the descriptors came with
    // its first byte.
    let need = |b: &Vec<u8>| -> usize {
        if b.len() < ANSWER.len() + 8 {
            return ANSWER.len() + 8;
        }
        let count = u32::from_le_bytes([b[12], b[13], b[14], b[15]]) as usize;
        ANSWER.len() + 8 + 4 * count.min(sys::MAX_FDS)
    };
    while buf.len() < need(&buf) {
        let mut more = vec![0u8; need(&buf) - buf.len()];
        s.read_exact(&mut more)
            .map_err(|e| Error::io("receiving a hand-over", e))?;
        buf.extend_from_slice(&more);
    }
    if !buf.starts_with(ANSWER) {
        return Err(unavailable(
            "--hand-over: the running attach answered something else".into(),
        ));
    }
    let index = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
    let count = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
    if count != fds.len() || count == 0 {
        return Err(unavailable(format!(
            "--hand-over: {count} connections announced, {} received",
            fds.len()
        )));
    }
    let head = ANSWER.len() + 8 + 4 * count;
    let mut extra = buf.split_off(head);
    let mut conns = Vec::with_capacity(count);
    for (i, fd) in fds.into_iter().enumerate() {
        let at = ANSWER.len() + 8 + 4 * i;
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len > 64 << 20 {
            return Err(unavailable(format!(
                "--hand-over: {len} unread bytes announced"
            )));
        }
        let mut unread = Vec::with_capacity(len);
        let from_extra = len.min(extra.len());
        unread.extend(extra.drain(..from_extra));
        let mut rest = vec![0u8; len - from_extra];
        s.read_exact(&mut rest)
            .map_err(|e| Error::io("receiving a hand-over", e))?;
        unread.extend_from_slice(&rest);
        conns.push((UnixStream::from(fd), unread));
    }
    Ok(Handed::Nbd { index, conns })
}
