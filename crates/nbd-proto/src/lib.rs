//! NBD wire protocol (fixed newstyle handshake, simple and structured replies), after
//! `doc/proto.md` of NetworkBlockDevice/nbd. Constants and pure encode/decode functions
//! only: no sockets, no async. All integers on the wire are big-endian.

#![forbid(unsafe_code)]

/// `NBDMAGIC`, first 8 bytes the server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`, after NBDMAGIC and before every client option.
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Magic of option replies.
pub const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Magic of requests.
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Magic of simple replies.
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Magic of structured reply chunks.
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

/// Handshake flags (server).
pub mod handshake {
    /// NBD_FLAG_FIXED_NEWSTYLE
    pub const FIXED_NEWSTYLE: u16 = 1;
    /// NBD_FLAG_NO_ZEROES
    pub const NO_ZEROES: u16 = 2;
    /// Client flag NBD_FLAG_C_FIXED_NEWSTYLE
    pub const C_FIXED_NEWSTYLE: u32 = 1;
    /// Client flag NBD_FLAG_C_NO_ZEROES
    pub const C_NO_ZEROES: u32 = 2;
}

/// Option types.
pub mod opt {
    /// NBD_OPT_EXPORT_NAME
    pub const EXPORT_NAME: u32 = 1;
    /// NBD_OPT_ABORT
    pub const ABORT: u32 = 2;
    /// NBD_OPT_LIST
    pub const LIST: u32 = 3;
    /// NBD_OPT_STARTTLS
    pub const STARTTLS: u32 = 5;
    /// NBD_OPT_INFO
    pub const INFO: u32 = 6;
    /// NBD_OPT_GO
    pub const GO: u32 = 7;
    /// NBD_OPT_STRUCTURED_REPLY
    pub const STRUCTURED_REPLY: u32 = 8;
    /// NBD_OPT_LIST_META_CONTEXT
    pub const LIST_META_CONTEXT: u32 = 9;
    /// NBD_OPT_SET_META_CONTEXT
    pub const SET_META_CONTEXT: u32 = 10;
}

/// Option reply types.
pub mod rep {
    /// NBD_REP_ACK
    pub const ACK: u32 = 1;
    /// NBD_REP_SERVER
    pub const SERVER: u32 = 2;
    /// NBD_REP_INFO
    pub const INFO: u32 = 3;
    /// NBD_REP_META_CONTEXT
    pub const META_CONTEXT: u32 = 4;
    /// NBD_REP_ERR_UNSUP
    pub const ERR_UNSUP: u32 = (1 << 31) + 1;
    /// NBD_REP_ERR_POLICY
    pub const ERR_POLICY: u32 = (1 << 31) + 2;
    /// NBD_REP_ERR_INVALID
    pub const ERR_INVALID: u32 = (1 << 31) + 3;
    /// NBD_REP_ERR_PLATFORM
    pub const ERR_PLATFORM: u32 = (1 << 31) + 4;
    /// NBD_REP_ERR_TLS_REQD
    pub const ERR_TLS_REQD: u32 = (1 << 31) + 5;
    /// NBD_REP_ERR_UNKNOWN (no such export)
    pub const ERR_UNKNOWN: u32 = (1 << 31) + 6;
    /// NBD_REP_ERR_SHUTDOWN
    pub const ERR_SHUTDOWN: u32 = (1 << 31) + 7;
    /// NBD_REP_ERR_TOO_BIG
    pub const ERR_TOO_BIG: u32 = (1 << 31) + 9;
}

/// NBD_INFO_* types.
pub mod info {
    /// NBD_INFO_EXPORT: size u64, flags u16
    pub const EXPORT: u16 = 0;
    /// NBD_INFO_NAME
    pub const NAME: u16 = 1;
    /// NBD_INFO_DESCRIPTION
    pub const DESCRIPTION: u16 = 2;
    /// NBD_INFO_BLOCK_SIZE: min u32, preferred u32, max u32
    pub const BLOCK_SIZE: u16 = 3;
}

/// Transmission flags.
pub mod flags {
    /// NBD_FLAG_HAS_FLAGS
    pub const HAS_FLAGS: u16 = 1;
    /// NBD_FLAG_READ_ONLY
    pub const READ_ONLY: u16 = 1 << 1;
    /// NBD_FLAG_SEND_FLUSH
    pub const SEND_FLUSH: u16 = 1 << 2;
    /// NBD_FLAG_SEND_FUA
    pub const SEND_FUA: u16 = 1 << 3;
    /// NBD_FLAG_SEND_TRIM
    pub const SEND_TRIM: u16 = 1 << 5;
    /// NBD_FLAG_SEND_WRITE_ZEROES
    pub const SEND_WRITE_ZEROES: u16 = 1 << 6;
    /// NBD_FLAG_SEND_DF
    pub const SEND_DF: u16 = 1 << 7;
    /// NBD_FLAG_CAN_MULTI_CONN
    pub const CAN_MULTI_CONN: u16 = 1 << 8;
    /// NBD_FLAG_SEND_CACHE
    pub const SEND_CACHE: u16 = 1 << 10;
    /// NBD_FLAG_SEND_FAST_ZERO
    pub const SEND_FAST_ZERO: u16 = 1 << 11;
}

/// Commands.
pub mod cmd {
    /// NBD_CMD_READ
    pub const READ: u16 = 0;
    /// NBD_CMD_WRITE
    pub const WRITE: u16 = 1;
    /// NBD_CMD_DISC
    pub const DISC: u16 = 2;
    /// NBD_CMD_FLUSH
    pub const FLUSH: u16 = 3;
    /// NBD_CMD_TRIM
    pub const TRIM: u16 = 4;
    /// NBD_CMD_CACHE
    pub const CACHE: u16 = 5;
    /// NBD_CMD_WRITE_ZEROES
    pub const WRITE_ZEROES: u16 = 6;
    /// NBD_CMD_BLOCK_STATUS
    pub const BLOCK_STATUS: u16 = 7;
}

/// Command flags.
pub mod cmd_flags {
    /// NBD_CMD_FLAG_FUA
    pub const FUA: u16 = 1;
    /// NBD_CMD_FLAG_NO_HOLE
    pub const NO_HOLE: u16 = 1 << 1;
    /// NBD_CMD_FLAG_DF
    pub const DF: u16 = 1 << 2;
    /// NBD_CMD_FLAG_REQ_ONE
    pub const REQ_ONE: u16 = 1 << 3;
    /// NBD_CMD_FLAG_FAST_ZERO
    pub const FAST_ZERO: u16 = 1 << 4;
}

/// Structured reply chunk types and flags.
pub mod reply {
    /// NBD_REPLY_FLAG_DONE
    pub const FLAG_DONE: u16 = 1;
    /// NBD_REPLY_TYPE_NONE
    pub const NONE: u16 = 0;
    /// NBD_REPLY_TYPE_OFFSET_DATA
    pub const OFFSET_DATA: u16 = 1;
    /// NBD_REPLY_TYPE_OFFSET_HOLE
    pub const OFFSET_HOLE: u16 = 2;
    /// NBD_REPLY_TYPE_BLOCK_STATUS
    pub const BLOCK_STATUS: u16 = 5;
    /// NBD_REPLY_TYPE_ERROR
    pub const ERROR: u16 = (1 << 15) + 1;
}

/// Error numbers on the wire.
pub mod errno {
    /// EPERM
    pub const EPERM: u32 = 1;
    /// EIO
    pub const EIO: u32 = 5;
    /// ENOMEM
    pub const ENOMEM: u32 = 12;
    /// EINVAL
    pub const EINVAL: u32 = 22;
    /// ENOSPC
    pub const ENOSPC: u32 = 28;
    /// EOVERFLOW
    pub const EOVERFLOW: u32 = 75;
    /// ENOTSUP
    pub const ENOTSUP: u32 = 95;
    /// ESHUTDOWN
    pub const ESHUTDOWN: u32 = 108;
}

/// base:allocation status flags.
pub mod state {
    /// NBD_STATE_HOLE
    pub const HOLE: u32 = 1;
    /// NBD_STATE_ZERO
    pub const ZERO: u32 = 2;
}

/// The one metadata context served.
pub const BASE_ALLOCATION: &str = "base:allocation";

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// A magic number was wrong.
    BadMagic(u64),
    /// The data ended early or lengths disagree.
    Truncated(&'static str),
    /// A field holds a value the protocol forbids.
    Invalid(&'static str),
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtoError::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            ProtoError::Truncated(w) => write!(f, "truncated {w}"),
            ProtoError::Invalid(w) => write!(f, "invalid {w}"),
        }
    }
}

impl std::error::Error for ProtoError {}

/// A bounds-checked big-endian reader.
struct Rd<'a>(&'a [u8]);

impl<'a> Rd<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtoError> {
        if self.0.len() < n {
            return Err(ProtoError::Truncated(what));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn string(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let n = self.u32(what)? as usize;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| ProtoError::Invalid(what))
    }
    fn done(&self, what: &'static str) -> Result<(), ProtoError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Invalid(what))
        }
    }
}

/// Length of a request header.
pub const REQUEST_LEN: usize = 28;
/// Length of an option header (after which `len` bytes of data follow).
pub const OPTION_HEADER_LEN: usize = 16;

/// A transmission-phase request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: u16,
    /// Command type.
    pub kind: u16,
    /// Opaque cookie echoed in replies.
    pub cookie: u64,
    /// Offset.
    pub offset: u64,
    /// Length.
    pub length: u32,
}

impl Request {
    /// Decodes a 28-byte header.
    pub fn decode(b: &[u8]) -> Result<Self, ProtoError> {
        let mut r = Rd(b);
        let magic = r.u32("request")?;
        if magic != REQUEST_MAGIC {
            return Err(ProtoError::BadMagic(u64::from(magic)));
        }
        let req = Self {
            flags: r.u16("request")?,
            kind: r.u16("request")?,
            cookie: r.u64("request")?,
            offset: r.u64("request")?,
            length: r.u32("request")?,
        };
        r.done("request length")?;
        Ok(req)
    }
    /// Encodes (for clients and tests).
    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut o = [0u8; REQUEST_LEN];
        o[0..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        o[4..6].copy_from_slice(&self.flags.to_be_bytes());
        o[6..8].copy_from_slice(&self.kind.to_be_bytes());
        o[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        o[16..24].copy_from_slice(&self.offset.to_be_bytes());
        o[24..28].copy_from_slice(&self.length.to_be_bytes());
        o
    }
}

/// An option header: (option, data length).
pub fn decode_option_header(b: &[u8]) -> Result<(u32, u32), ProtoError> {
    let mut r = Rd(b);
    let magic = r.u64("option header")?;
    if magic != IHAVEOPT {
        return Err(ProtoError::BadMagic(magic));
    }
    let opt = r.u32("option header")?;
    let len = r.u32("option header")?;
    r.done("option header length")?;
    Ok((opt, len))
}

/// Data of NBD_OPT_INFO and NBD_OPT_GO: export name and requested info types.
pub fn decode_info_request(b: &[u8]) -> Result<(String, Vec<u16>), ProtoError> {
    let mut r = Rd(b);
    let name = r.string("export name")?;
    let n = r.u16("info count")?;
    let mut infos = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        infos.push(r.u16("info request")?);
    }
    r.done("info request length")?;
    Ok((name, infos))
}

/// Data of LIST/SET_META_CONTEXT: export name and queries.
pub fn decode_meta_context_request(b: &[u8]) -> Result<(String, Vec<String>), ProtoError> {
    let mut r = Rd(b);
    let name = r.string("export name")?;
    let n = r.u32("query count")?;
    if n as usize > b.len() / 4 {
        return Err(ProtoError::Invalid("query count"));
    }
    let mut q = Vec::with_capacity(n as usize);
    for _ in 0..n {
        q.push(r.string("query")?);
    }
    r.done("meta context request length")?;
    Ok((name, q))
}

/// An option reply.
pub fn encode_option_reply(option: u32, kind: u32, data: &[u8]) -> Vec<u8> {
    let mut o = Vec::with_capacity(20 + data.len());
    o.extend_from_slice(&REPLY_MAGIC.to_be_bytes());
    o.extend_from_slice(&option.to_be_bytes());
    o.extend_from_slice(&kind.to_be_bytes());
    o.extend_from_slice(&(data.len() as u32).to_be_bytes());
    o.extend_from_slice(data);
    o
}

/// A simple reply header (READ data follows it).
pub fn encode_simple_reply(error: u32, cookie: u64) -> [u8; 16] {
    let mut o = [0u8; 16];
    o[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    o[4..8].copy_from_slice(&error.to_be_bytes());
    o[8..16].copy_from_slice(&cookie.to_be_bytes());
    o
}

/// A structured reply chunk header for a payload of `len` bytes.
pub fn encode_chunk_header(flags: u16, kind: u16, cookie: u64, len: u32) -> [u8; 20] {
    let mut o = [0u8; 20];
    o[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    o[4..6].copy_from_slice(&flags.to_be_bytes());
    o[6..8].copy_from_slice(&kind.to_be_bytes());
    o[8..16].copy_from_slice(&cookie.to_be_bytes());
    o[16..20].copy_from_slice(&len.to_be_bytes());
    o
}

/// A complete NBD_REPLY_TYPE_ERROR chunk (always the last: DONE set).
pub fn encode_error_chunk(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    let msg = message
        .as_bytes()
        .get(..message.len().min(4096))
        .unwrap_or_default();
    let mut o =
        encode_chunk_header(reply::FLAG_DONE, reply::ERROR, cookie, 6 + msg.len() as u32).to_vec();
    o.extend_from_slice(&error.to_be_bytes());
    o.extend_from_slice(&(msg.len() as u16).to_be_bytes());
    o.extend_from_slice(msg);
    o
}

/// Where [`encode_reply`] puts a reply: header bytes, and ranges of the read's data
/// (so a caller can send those from the read's own buffer, without a copy).
pub trait ReplySink {
    /// Appends header (or other reply) bytes.
    fn put(&mut self, bytes: &[u8]);
    /// Appends `buf[range]`, the read's data.
    fn data(&mut self, buf: &[u8], range: core::ops::Range<usize>);
}

/// A reply in one buffer.
impl ReplySink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn data(&mut self, buf: &[u8], range: core::ops::Range<usize>) {
        self.extend_from_slice(buf.get(range).unwrap_or(&[]));
    }
}

/// What a request's reply says.
#[derive(Debug)]
pub enum Reply<'a> {
    /// Done, no data (a write, flush, trim, ...).
    Done,
    /// Failed with this errno and message (the message only in structured replies).
    Error(u32, &'a str),
    /// A read's bytes, at `offset` of the export; `dont_fragment`: one data chunk (the
    /// client's NBD_CMD_FLAG_DF), else zero runs of 512 bytes or more become holes.
    Data {
        /// The bytes read.
        buf: &'a [u8],
        /// Their offset in the export.
        offset: u64,
        /// Send them as one chunk.
        dont_fragment: bool,
    },
    /// Block status extents `(length, flags)` of metadata context `context`.
    Status {
        /// The context id.
        context: u32,
        /// The extents.
        extents: &'a [(u32, u32)],
    },
}

/// Appends the encoding of `reply` to request `cookie`: a simple reply, or (with
/// `structured` replies negotiated) its structured chunks, the last flagged DONE. A
/// block status reply without structured replies is EINVAL (the spec needs them).
pub fn encode_reply(out: &mut impl ReplySink, structured: bool, cookie: u64, reply: &Reply<'_>) {
    match (reply, structured) {
        (Reply::Done, false) => out.put(&encode_simple_reply(0, cookie)),
        (Reply::Error(code, _), false) => out.put(&encode_simple_reply(*code, cookie)),
        (Reply::Data { buf, .. }, false) => {
            out.put(&encode_simple_reply(0, cookie));
            out.data(buf, 0..buf.len());
        }
        (Reply::Status { .. }, false) => out.put(&encode_simple_reply(errno::EINVAL, cookie)),
        (Reply::Done, true) => out.put(&encode_chunk_header(
            reply::FLAG_DONE,
            reply::NONE,
            cookie,
            0,
        )),
        (Reply::Error(code, msg), true) => out.put(&encode_error_chunk(cookie, *code, msg)),
        (
            Reply::Data {
                buf,
                offset,
                dont_fragment: true,
            },
            true,
        ) => {
            // Don't fragment: one OFFSET_DATA chunk.
            out.put(&encode_chunk_header(
                reply::FLAG_DONE,
                reply::OFFSET_DATA,
                cookie,
                8 + buf.len() as u32,
            ));
            out.put(&offset.to_be_bytes());
            out.data(buf, 0..buf.len());
        }
        (
            Reply::Data {
                buf,
                offset,
                dont_fragment: false,
            },
            true,
        ) => {
            // One OFFSET_DATA chunk per run of non-zero 4 KiB blocks, OFFSET_HOLE for
            // zero runs, the last chunk flagged DONE.
            let mut parts: Vec<(bool, usize, usize)> = Vec::new();
            let mut i = 0;
            while i < buf.len() {
                let step = (4096 - ((*offset as usize + i) % 4096)).min(buf.len() - i);
                let zero = buf
                    .get(i..i + step)
                    .is_some_and(|b| b.iter().all(|&x| x == 0));
                match parts.last_mut() {
                    Some(p) if p.0 == zero => p.2 += step,
                    _ => parts.push((zero, i, step)),
                }
                i += step;
            }
            if parts.is_empty() {
                out.put(&encode_chunk_header(
                    reply::FLAG_DONE,
                    reply::NONE,
                    cookie,
                    0,
                ));
            }
            let n = parts.len();
            for (k, (zero, start, len)) in parts.into_iter().enumerate() {
                let flags = if k + 1 == n { reply::FLAG_DONE } else { 0 };
                let off = offset + start as u64;
                if zero && len >= 512 {
                    out.put(&encode_chunk_header(flags, reply::OFFSET_HOLE, cookie, 12));
                    out.put(&off.to_be_bytes());
                    out.put(&(len as u32).to_be_bytes());
                } else {
                    if buf.get(start..start + len).is_none() {
                        // Parts are cut from `buf` itself; end the reply with an error
                        // rather than send a chunk shorter than its header says.
                        out.put(&encode_error_chunk(
                            cookie,
                            errno::EIO,
                            "internal error: read reply split",
                        ));
                        break;
                    }
                    out.put(&encode_chunk_header(
                        flags,
                        reply::OFFSET_DATA,
                        cookie,
                        8 + len as u32,
                    ));
                    out.put(&off.to_be_bytes());
                    out.data(buf, start..start + len);
                }
            }
        }
        (Reply::Status { context, extents }, true) => {
            out.put(&encode_chunk_header(
                reply::FLAG_DONE,
                reply::BLOCK_STATUS,
                cookie,
                4 + 8 * extents.len() as u32,
            ));
            out.put(&context.to_be_bytes());
            for (len, flags) in extents.iter() {
                out.put(&len.to_be_bytes());
                out.put(&flags.to_be_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_encode_as_the_spec_lays_them_out() {
        // Simple: header, then the data.
        let mut out = Vec::new();
        let data = [7u8; 8];
        let r = Reply::Data {
            buf: &data,
            offset: 4096,
            dont_fragment: false,
        };
        encode_reply(&mut out, false, 5, &r);
        assert_eq!(&out[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&out[8..16], &5u64.to_be_bytes());
        assert_eq!(&out[16..], &data);
        // Structured: 4 KiB of zeros then 4 KiB of data: a hole, then a data chunk
        // flagged DONE.
        let mut buf = vec![0u8; 8192];
        buf[4096..].fill(1);
        let mut out = Vec::new();
        let r = Reply::Data {
            buf: &buf,
            offset: 0,
            dont_fragment: false,
        };
        encode_reply(&mut out, true, 9, &r);
        assert_eq!(u16::from_be_bytes([out[6], out[7]]), reply::OFFSET_HOLE);
        assert_eq!(u16::from_be_bytes([out[4], out[5]]), 0);
        let second = 20 + 12;
        assert_eq!(
            u16::from_be_bytes([out[second + 6], out[second + 7]]),
            reply::OFFSET_DATA
        );
        assert_eq!(
            u16::from_be_bytes([out[second + 4], out[second + 5]]),
            reply::FLAG_DONE
        );
        assert_eq!(out.len(), second + 20 + 8 + 4096);
        // Block status needs structured replies.
        let mut out = Vec::new();
        let r = Reply::Status {
            context: 1,
            extents: &[(4096, 0)],
        };
        encode_reply(&mut out, false, 1, &r);
        assert_eq!(&out[4..8], &errno::EINVAL.to_be_bytes());
    }
    use proptest::prelude::*;

    #[test]
    fn request_round_trip_and_rejections() {
        let r = Request {
            flags: 1,
            kind: cmd::WRITE,
            cookie: 7,
            offset: 4096,
            length: 512,
        };
        assert_eq!(Request::decode(&r.encode()), Ok(r));
        let mut bad = r.encode();
        bad[0] ^= 1;
        assert!(matches!(
            Request::decode(&bad),
            Err(ProtoError::BadMagic(_))
        ));
        assert_eq!(
            Request::decode(&r.encode()[..27]),
            Err(ProtoError::Truncated("request"))
        );
        let mut long = r.encode().to_vec();
        long.push(0);
        assert_eq!(
            Request::decode(&long),
            Err(ProtoError::Invalid("request length"))
        );
    }

    #[test]
    fn option_parsers_reject_malformed_data() {
        let mut ok = Vec::new();
        ok.extend_from_slice(&3u32.to_be_bytes());
        ok.extend_from_slice(b"abc");
        ok.extend_from_slice(&1u16.to_be_bytes());
        ok.extend_from_slice(&info::BLOCK_SIZE.to_be_bytes());
        assert_eq!(
            decode_info_request(&ok),
            Ok(("abc".into(), vec![info::BLOCK_SIZE]))
        );
        // name longer than the data
        assert!(decode_info_request(&[0, 0, 0, 9, b'a']).is_err());
        // trailing bytes
        let mut trailing = ok.clone();
        trailing.push(1);
        assert!(decode_info_request(&trailing).is_err());
        // invalid UTF-8
        assert!(decode_info_request(&[0, 0, 0, 1, 0xff, 0, 0]).is_err());
        // meta context: huge query count
        assert!(decode_meta_context_request(&[0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]).is_err());
        let mut mc = vec![0, 0, 0, 0, 0, 0, 0, 1];
        mc.extend_from_slice(&15u32.to_be_bytes());
        mc.extend_from_slice(BASE_ALLOCATION.as_bytes());
        assert_eq!(
            decode_meta_context_request(&mc),
            Ok((String::new(), vec![BASE_ALLOCATION.into()]))
        );
        assert!(decode_option_header(&[0; 16]).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Request::decode(&b);
            let _ = decode_option_header(&b);
            let _ = decode_info_request(&b);
            let _ = decode_meta_context_request(&b);
        }
    }
}
