//! A minimal generic netlink client: resolve a family by name, send one command with
//! attributes, read its replies and acknowledgement. Just what the kernel nbd driver's
//! netlink interface needs; the byte layout is `<linux/netlink.h>` and
//! `<linux/genetlink.h>` (all integers in host byte order):
//!
//! ```text
//! nlmsghdr  u32 len | u16 type (family id) | u16 flags | u32 seq | u32 port id
//! genlmsghdr u8 cmd | u8 version | u16 reserved
//! nlattr    u16 len (header + payload, unpadded) | u16 type | payload, padded to 4
//! ```
//! The kernel answers with zero or more messages of the family, then `NLMSG_ERROR`
//! carrying an errno (0: done).

use std::fs::File;
use std::io::{Read, Write};

use super::sys::generic_netlink_socket;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const GENL_ID_CTRL: u16 = 0x10;
const CTRL_CMD_GETFAMILY: u8 = 3;
const CTRL_ATTR_FAMILY_ID: u16 = 1;
const CTRL_ATTR_FAMILY_NAME: u16 = 2;
const NLA_F_NESTED: u16 = 0x8000;
const HEADER: usize = 16 + 4;

/// One attribute to send.
#[derive(Debug, Clone)]
pub enum Attr {
    U32(u16, u32),
    U64(u16, u64),
    /// A string, sent with its terminating NUL.
    Str(u16, String),
    Nested(u16, Vec<Attr>),
}

impl Attr {
    fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; 4]);
        let ty = match self {
            Attr::U32(t, v) => {
                out.extend_from_slice(&v.to_ne_bytes());
                *t
            }
            Attr::U64(t, v) => {
                out.extend_from_slice(&v.to_ne_bytes());
                *t
            }
            Attr::Str(t, s) => {
                out.extend_from_slice(s.as_bytes());
                out.push(0);
                *t
            }
            Attr::Nested(t, inner) => {
                for a in inner {
                    a.encode(out);
                }
                *t | NLA_F_NESTED
            }
        };
        let len = (out.len() - start) as u16;
        out[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        out[start + 2..start + 4].copy_from_slice(&ty.to_ne_bytes());
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }
}

/// The attributes of one reply: (type without flags, payload).
pub type Attrs = Vec<(u16, Vec<u8>)>;

/// Reads a u32 attribute of `ty` from `attrs`.
pub fn attr_u32(attrs: &Attrs, ty: u16) -> Option<u32> {
    attrs
        .iter()
        .find(|(t, _)| *t == ty)
        .and_then(|(_, v)| v.get(..4))
        .and_then(|b| b.try_into().ok())
        .map(u32::from_ne_bytes)
}

fn parse_attrs(mut b: &[u8]) -> Attrs {
    let mut out = Vec::new();
    while b.len() >= 4 {
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            break;
        }
        out.push((ty, b[4..len].to_vec()));
        let next = (len + 3) & !3;
        b = b.get(next..).unwrap_or(&[]);
    }
    out
}

/// A socket bound to one generic netlink family.
pub struct Genl {
    sock: File,
    family: u16,
    version: u8,
    seq: u32,
}

impl Genl {
    /// Opens a socket for `family` (by name); `Ok(None)` when the kernel has no such
    /// family (the module is not loaded, or too old).
    pub fn open(family: &str, version: u8) -> std::io::Result<Option<Self>> {
        let mut g = Self {
            sock: File::from(generic_netlink_socket()?),
            family: GENL_ID_CTRL,
            version: 1,
            seq: 0,
        };
        let replies = match g.request(
            CTRL_CMD_GETFAMILY,
            &[Attr::Str(CTRL_ATTR_FAMILY_NAME, family.to_string())],
        ) {
            Ok(r) => r,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
            Err(e) => return Err(e),
        };
        let id = replies.iter().find_map(|a| {
            a.iter()
                .find(|(t, _)| *t == CTRL_ATTR_FAMILY_ID)
                .and_then(|(_, v)| v.get(..2))
                .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        });
        match id {
            Some(id) => {
                g.family = id;
                g.version = version;
                Ok(Some(g))
            }
            None => Ok(None),
        }
    }

    /// Sends `cmd` with `attrs` and waits for the kernel's acknowledgement; returns the
    /// attributes of every reply message before it. A negative errno becomes the error.
    pub fn request(&mut self, cmd: u8, attrs: &[Attr]) -> std::io::Result<Vec<Attrs>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut msg = vec![0u8; HEADER];
        for a in attrs {
            a.encode(&mut msg);
        }
        let len = msg.len() as u32;
        msg[0..4].copy_from_slice(&len.to_ne_bytes());
        msg[4..6].copy_from_slice(&self.family.to_ne_bytes());
        msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg[8..12].copy_from_slice(&seq.to_ne_bytes());
        msg[16] = cmd;
        msg[17] = self.version;
        self.sock.write_all(&msg)?;
        let mut replies = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = self.sock.read(&mut buf)?;
            let mut b = &buf[..n];
            while b.len() >= 16 {
                let mlen = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
                let mtype = u16::from_ne_bytes([b[4], b[5]]);
                let mseq = u32::from_ne_bytes([b[8], b[9], b[10], b[11]]);
                if mlen < 16 || mlen > b.len() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let body = &b[16..mlen];
                if mseq == seq {
                    match mtype {
                        NLMSG_ERROR => {
                            let code = body
                                .get(..4)
                                .map(|c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
                                .unwrap_or(-libc::EIO);
                            return if code == 0 {
                                Ok(replies)
                            } else {
                                Err(std::io::Error::from_raw_os_error(-code))
                            };
                        }
                        NLMSG_DONE => return Ok(replies),
                        _ => replies.push(parse_attrs(body.get(4..).unwrap_or(&[]))),
                    }
                }
                b = b.get((mlen + 3) & !3..).unwrap_or(&[]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_encode_padded_and_nested() {
        let mut out = Vec::new();
        Attr::Str(10, "ab".into()).encode(&mut out);
        // len 4 + 3 (NUL), padded to 8.
        assert_eq!(out, [7, 0, 10, 0, b'a', b'b', 0, 0]);
        let mut out = Vec::new();
        Attr::Nested(7, vec![Attr::Nested(1, vec![Attr::U32(1, 9)])]).encode(&mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(&out[..4], &[16, 0, 7, 0x80]);
        assert_eq!(&out[4..8], &[12, 0, 1, 0x80]);
        assert_eq!(&out[8..16], &[8, 0, 1, 0, 9, 0, 0, 0]);
        let parsed = parse_attrs(&out[4..]);
        assert_eq!(parsed, vec![(1u16, out[8..16].to_vec())]);
        assert_eq!(attr_u32(&parse_attrs(&out[8..]), 1), Some(9));
    }

    #[test]
    fn hostile_lengths_stop_parsing() {
        assert!(parse_attrs(&[200, 0, 1, 0, 1, 2]).is_empty());
        assert!(parse_attrs(&[2, 0, 1, 0]).is_empty());
    }

    #[test]
    fn the_control_family_resolves_on_linux() {
        // Every Linux kernel has the generic netlink controller; nbd may be missing.
        match Genl::open("nlctrl", 2) {
            Ok(g) => assert!(g.is_some(), "nlctrl resolves"),
            Err(e) => eprintln!("SKIPPING: no generic netlink socket here: {e}"),
        }
        assert!(matches!(
            Genl::open("no-such-family-x", 1),
            Ok(None) | Err(_)
        ));
    }
}
