//! Write-ahead log (format version 1): a local, append-only file `wal` in the data
//! folder, never published. It holds every write since the last checkpoint.
//!
//! ```text
//! header (48): magic "MCWAL001" (8) | version u32 (1) | reserved u32 | base root id [32]
//!              (the root this log applies on top of; zeros for an empty disk)
//! op:          magic u32 "RLAW" | kind u8 | lba u64 | n u32 | payload (n bytes if kind 1)
//!              | crc32 u32 (IEEE, over magic..payload)
//!   kind 1 = data:  payload is one sealed record (see `record`) for block lba
//!   kind 2 = zero:  n blocks from lba read as zeros afterwards (no payload)
//! ```
//! Replay stops at the first op that is truncated or fails its CRC: that is the torn
//! tail of a write that was never acknowledged by a flush. Replaying ops is idempotent
//! in order, so a crash between writing the `.swap` file and resetting the log is safe.

use crate::error::{Error, Result};
use crate::format::bytes::{Put, Reader};
use crate::format::chunk_id::ChunkId;
use crate::format::record::MAX_RECORD;

const MAGIC: &[u8; 8] = b"MCWAL001";
const OP_MAGIC: u32 = u32::from_le_bytes(*b"RLAW");
/// Version of the log layout.
pub const WAL_VERSION: u32 = 1;
/// Header length.
pub const HEADER_LEN: usize = 48;
const OP_FIXED: usize = 4 + 1 + 8 + 4 + 4;

/// One logged operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalOp {
    /// A sealed record for one block.
    Data {
        /// Block.
        lba: u64,
        /// `ciphertext || tag`.
        record: Vec<u8>,
    },
    /// `count` blocks from `lba` become zero.
    Zero {
        /// First block.
        lba: u64,
        /// Number of blocks.
        count: u32,
    },
}

/// Encodes a header naming the base root.
pub fn encode_header(base: Option<ChunkId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.put_u32(WAL_VERSION);
    out.put_u32(0);
    out.extend_from_slice(&base.map(|b| b.0).unwrap_or([0; 32]));
    out
}

/// Decodes a header; returns the base root.
pub fn decode_header(buf: &[u8]) -> Result<Option<ChunkId>> {
    let mut r = Reader::new(buf, "write-ahead log header");
    if r.take(8)? != MAGIC {
        return Err(Error::corrupt("write-ahead log: bad magic"));
    }
    let v = r.u32()?;
    if v != WAL_VERSION {
        return Err(Error::corrupt(format!(
            "write-ahead log: version {v}, expected {WAL_VERSION}"
        )));
    }
    let _ = r.u32()?;
    let id: [u8; 32] = r.array()?;
    Ok((id != [0; 32]).then_some(ChunkId(id)))
}

/// Appends the encoding of `op` to `out`.
pub fn encode_op(op: &WalOp, out: &mut Vec<u8>) {
    match op {
        WalOp::Data { lba, record } => encode_data(*lba, record, out),
        WalOp::Zero { lba, count } => encode_raw(2, *lba, *count, &[], out),
    }
}

/// Appends a data op for `lba` straight from a borrowed record (no owned `WalOp`).
pub fn encode_data(lba: u64, record: &[u8], out: &mut Vec<u8>) {
    encode_raw(1, lba, record.len() as u32, record, out);
}

fn encode_raw(kind: u8, lba: u64, n: u32, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.put_u32(OP_MAGIC);
    out.push(kind);
    out.put_u64(lba);
    out.put_u32(n);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(out.get(start..).unwrap_or_default());
    out.put_u32(crc);
}

/// Decodes ops after the header; returns them and the length of the valid prefix
/// (header included). Never fails: anything unreadable ends the log.
pub fn decode_ops(buf: &[u8]) -> (Vec<WalOp>, usize) {
    let mut ops = Vec::new();
    let mut pos = HEADER_LEN.min(buf.len());
    while let Some(rest) = buf.get(pos..) {
        match decode_one(rest) {
            Some((op, n)) => {
                ops.push(op);
                pos += n;
            }
            None => break,
        }
    }
    (ops, pos)
}

fn decode_one(buf: &[u8]) -> Option<(WalOp, usize)> {
    let mut r = Reader::new(buf, "wal op");
    if r.u32().ok()? != OP_MAGIC {
        return None;
    }
    let kind = r.u8().ok()?;
    let lba = r.u64().ok()?;
    let n = r.u32().ok()?;
    let op = match kind {
        1 => {
            if n as usize > MAX_RECORD {
                return None;
            }
            WalOp::Data {
                lba,
                record: r.take(n as usize).ok()?.to_vec(),
            }
        }
        2 => WalOp::Zero { lba, count: n },
        _ => return None,
    };
    let body = OP_FIXED - 4 + if kind == 1 { n as usize } else { 0 };
    let crc = r.u32().ok()?;
    if crc32fast::hash(buf.get(..body)?) != crc {
        return None;
    }
    Some((op, body + 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_dropped() {
        let mut buf = encode_header(Some(ChunkId([1; 32])));
        let a = WalOp::Data {
            lba: 3,
            record: vec![1, 2, 3],
        };
        let b = WalOp::Zero { lba: 9, count: 4 };
        encode_op(&a, &mut buf);
        encode_op(&b, &mut buf);
        let full = buf.len();
        assert_eq!(decode_ops(&buf), (vec![a.clone(), b.clone()], full));
        for cut in HEADER_LEN..full {
            let (ops, valid) = decode_ops(&buf[..cut]);
            assert!(ops.len() < 2 && valid <= cut);
        }
        let mut flipped = buf.clone();
        flipped[full - 6] ^= 1;
        assert_eq!(decode_ops(&flipped).0, vec![a]);
        assert_eq!(decode_header(&buf).ok().flatten(), Some(ChunkId([1; 32])));
    }
}
