//! A small NBD client over a Unix socket (simple replies, one request at a time), for
//! tests that must know exactly which requests were acknowledged before a kill.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nbd_proto::{self as p, cmd, opt, rep};

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b.try_into().unwrap())
}

/// A connection past OPT_GO on the default export.
pub struct Nbd(UnixStream);

impl Nbd {
    /// Connects to `socket` and negotiates the default export.
    pub fn connect(socket: &Path) -> Self {
        // The socket file appears at bind(), a moment before listen(): retry a refusal.
        let mut tries = 0;
        let mut s = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(e) => panic!("connecting to {}: {e}", socket.display()),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).unwrap();
        assert_eq!(&hello[..8], &p::NBDMAGIC.to_be_bytes());
        s.write_all(&3u32.to_be_bytes()).unwrap();
        let mut o = p::IHAVEOPT.to_be_bytes().to_vec();
        o.extend_from_slice(&opt::GO.to_be_bytes());
        o.extend_from_slice(&6u32.to_be_bytes());
        o.extend_from_slice(&[0; 6]);
        s.write_all(&o).unwrap();
        loop {
            let mut h = [0u8; 20];
            s.read_exact(&mut h).unwrap();
            let mut d = vec![0u8; be32(&h[16..20]) as usize];
            s.read_exact(&mut d).unwrap();
            let t = be32(&h[12..16]);
            assert!(t < 1 << 31, "OPT_GO refused: {t:#x}");
            if t == rep::ACK {
                return Self(s);
            }
        }
    }

    fn request(
        &mut self,
        kind: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
    ) -> Vec<u8> {
        let r = p::Request {
            flags,
            kind,
            cookie: 0x6d63,
            offset,
            length,
        };
        self.0.write_all(&r.encode()).unwrap();
        self.0.write_all(payload).unwrap();
        let mut h = [0u8; 16];
        self.0.read_exact(&mut h).unwrap();
        assert_eq!(be32(&h[..4]), p::SIMPLE_REPLY_MAGIC);
        let e = be32(&h[4..8]);
        assert_eq!(e, 0, "NBD command {kind} at {offset}+{length}: errno {e}");
        let mut d = vec![
            0u8;
            if kind == cmd::READ {
                length as usize
            } else {
                0
            }
        ];
        self.0.read_exact(&mut d).unwrap();
        d
    }

    /// Writes `data` at `offset`; returns once the server acknowledged it.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        self.request(cmd::WRITE, 0, offset, data.len() as u32, data);
    }
    /// Zeroes `len` bytes.
    pub fn zero(&mut self, offset: u64, len: u32) {
        self.request(cmd::WRITE_ZEROES, 0, offset, len, &[]);
    }
    /// Trims `len` bytes (they read back as zeros here).
    pub fn trim(&mut self, offset: u64, len: u32) {
        self.request(cmd::TRIM, 0, offset, len, &[]);
    }
    /// FLUSH.
    pub fn flush(&mut self) {
        self.request(cmd::FLUSH, 0, 0, 0, &[]);
    }
    /// Reads `len` bytes.
    pub fn read(&mut self, offset: u64, len: u32) -> Vec<u8> {
        self.request(cmd::READ, 0, offset, len, &[])
    }
}
