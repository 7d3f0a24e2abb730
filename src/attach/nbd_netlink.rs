//! The kernel nbd driver's netlink interface (`<linux/nbd-netlink.h>`, family "nbd",
//! version 1): connect a device with a dead-connection timeout and a backend
//! identifier, hand a running device new sockets after a restart (RECONFIGURE), and
//! disconnect. Unlike the ioctls, a device set up this way belongs to the kernel, not
//! to a thread of ours: when this process dies, the device stays, holding I/O for up to
//! the dead-connection timeout, and the next process takes it over.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::genl::{attr_u32, Attr, Genl};

const CMD_CONNECT: u8 = 1;
const CMD_DISCONNECT: u8 = 2;
const CMD_RECONFIGURE: u8 = 3;

const ATTR_INDEX: u16 = 1;
const ATTR_SIZE_BYTES: u16 = 2;
const ATTR_BLOCK_SIZE_BYTES: u16 = 3;
const ATTR_SERVER_FLAGS: u16 = 5;
const ATTR_SOCKETS: u16 = 7;
const ATTR_DEAD_CONN_TIMEOUT: u16 = 8;
const ATTR_BACKEND_IDENTIFIER: u16 = 10;
const SOCK_ITEM: u16 = 1;
const SOCK_FD: u16 = 1;

/// The backend identifier this disk's device carries (shown in
/// `/sys/block/nbdN/backend`), which lets a restarted process find its device: the
/// uuid, and a hash of the data folder's path, since a copy of a disk (a pulled or
/// pushed `.swap` beside its source) has the same uuid but a folder of its own, and
/// must never take its source's device.
pub fn backend_id(uuid: &str, data_dir: &Path) -> String {
    format!("mindcastle-{uuid}-{}", instance(data_dir))
}

/// 12 hex digits of the SHA-256 of the data folder's canonical path.
pub fn instance(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let h = Sha256::digest(path.as_os_str().as_encoded_bytes());
    h.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// What a device is set up with.
pub struct Setup<'a> {
    pub size: u64,
    pub block: u64,
    pub server_flags: u64,
    pub dead_conn_timeout: Duration,
    pub backend: &'a str,
}

/// A netlink connection to the nbd family.
pub struct NbdNetlink(Genl);

impl NbdNetlink {
    /// `Ok(None)` when the kernel's nbd driver has no netlink interface (not loaded).
    pub fn open() -> std::io::Result<Option<Self>> {
        Ok(Genl::open("nbd", 1)?.map(Self))
    }

    /// Connects a free device (the kernel picks one, adding a device when all are
    /// taken) to `socks`; returns its index.
    pub fn connect(&mut self, s: &Setup<'_>, socks: &[UnixStream]) -> std::io::Result<u32> {
        let attrs = vec![
            Attr::U64(ATTR_SIZE_BYTES, s.size),
            Attr::U64(ATTR_BLOCK_SIZE_BYTES, s.block),
            Attr::U64(ATTR_SERVER_FLAGS, s.server_flags),
            Attr::U64(ATTR_DEAD_CONN_TIMEOUT, s.dead_conn_timeout.as_secs()),
            Attr::Str(ATTR_BACKEND_IDENTIFIER, s.backend.to_string()),
            sockets(socks),
        ];
        let replies = self.0.request(CMD_CONNECT, &attrs)?;
        replies
            .iter()
            .find_map(|a| attr_u32(a, ATTR_INDEX))
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the nbd driver did not say which device it connected",
                )
            })
    }

    /// Gives device `index` (set up for `backend`) a new socket in place of a dead one.
    /// `ENOSPC`: no connection of the device is dead (yet).
    pub fn reconnect(
        &mut self,
        index: u32,
        backend: &str,
        dead_conn_timeout: Duration,
        sock: &UnixStream,
    ) -> std::io::Result<()> {
        let attrs = vec![
            Attr::U32(ATTR_INDEX, index),
            Attr::Str(ATTR_BACKEND_IDENTIFIER, backend.to_string()),
            Attr::U64(ATTR_DEAD_CONN_TIMEOUT, dead_conn_timeout.as_secs()),
            sockets(std::slice::from_ref(sock)),
        ];
        self.0.request(CMD_RECONFIGURE, &attrs).map(|_| ())
    }

    /// Disconnects device `index`: the kernel sends DISC on every connection and lets
    /// the device go once nothing holds it open.
    pub fn disconnect(&mut self, index: u32) -> std::io::Result<()> {
        self.0
            .request(CMD_DISCONNECT, &[Attr::U32(ATTR_INDEX, index)])
            .map(|_| ())
    }
}

fn sockets(socks: &[UnixStream]) -> Attr {
    Attr::Nested(
        ATTR_SOCKETS,
        socks
            .iter()
            .map(|s| Attr::Nested(SOCK_ITEM, vec![Attr::U32(SOCK_FD, s.as_raw_fd() as u32)]))
            .collect(),
    )
}

/// The nbd device whose backend is `backend` and that is still configured (a process
/// serving this disk set it up), if any: after a crash, the one to take over.
pub fn device_of(backend: &str) -> Option<u32> {
    device_of_in(Path::new("/sys/block"), backend)
}

fn device_of_in(sys_block: &Path, backend: &str) -> Option<u32> {
    let rd = std::fs::read_dir(sys_block).ok()?;
    let mut found: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix("nbd")?.parse::<u32>().ok()?;
            let b = std::fs::read_to_string(e.path().join("backend")).ok()?;
            // The pid file is there while the device is configured.
            (b.trim_end() == backend && e.path().join("pid").exists()).then_some(n)
        })
        .collect();
    found.sort();
    found.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_configured_device_of_a_backend() {
        let d = tempfile::tempdir().unwrap();
        let mk = |n: &str, backend: Option<&str>, pid: bool| {
            let p = d.path().join(n);
            std::fs::create_dir(&p).unwrap();
            if let Some(b) = backend {
                std::fs::write(p.join("backend"), format!("{b}\n")).unwrap();
            }
            if pid {
                std::fs::write(p.join("pid"), "1\n").unwrap();
            }
        };
        mk("nbd0", Some("mindcastle-a"), true);
        mk("nbd1", Some("mindcastle-b"), false);
        mk("nbd2", None, true);
        mk("nbd3", Some("mindcastle-b"), true);
        mk("loop0", Some("mindcastle-b"), true);
        assert_eq!(device_of_in(d.path(), "mindcastle-a"), Some(0));
        assert_eq!(device_of_in(d.path(), "mindcastle-b"), Some(3));
        assert_eq!(device_of_in(d.path(), "mindcastle-c"), None);
    }
}
