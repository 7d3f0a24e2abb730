//! Write-ahead log (format version 3): a local, append-only file `wal` in the data
//! folder, never published. It holds every write since the last checkpoint.
//!
//! ```text
//! header (56): magic "MCWAL001" (8) | version u32 (3) | base seq u32 | base root id [32]
//!              | segment u64
//!              base root: the newest root when this segment was started (zeros for an
//!              empty disk); the segment's ops apply on top of it or of a descendant.
//!              base seq: the low 32 bits of that root's `seq` (0 in logs written before
//!              2026-11-30, when the field was reserved: unknown).
//!              segment: the segment's number, one more than the segment before it.
//!              A root records the last segment whose ops it holds (`log_covered`), so
//!              replay takes exactly the segments after it, and refuses a gap.
//!              Versions 1 and 2 have a 48-byte header without it (unnumbered: the
//!              base rules alone decide).
//! op:          magic u32 "RLAW" | kind u8 | lba u64 | n u32 | payload (n bytes, kinds 1
//!              and 3) | crc32 u32 (IEEE, over magic..payload)
//!   kind 1 = data:   payload is one sealed record (see `record`) for block lba
//!   kind 2 = zero:   n blocks from lba read as zeros afterwards (no payload)
//!   kind 3 = stored: records already written to a data chunk, for blocks lba..lba+count;
//!                    payload: chunk id [32] | chunk size u32 | count u32 |
//!                    count x (offset u32 | stored length u32 | tag [16])
//! ```
//! Version 3 (2026-12-02) added the segment number. Version 2 added kind 3 (a large write's records go straight into a data chunk, and
//! the log names them instead of holding them); version 1 logs, which have no kind 3,
//! are read as before. The chunk is synced before any sync of the log that follows
//! its op, so an op a flush acknowledged always names a whole chunk; replay checks the
//! chunk and skips the op (the write never acknowledged) when it is missing or torn.
//! CRC-32 is the IEEE polynomial (0xEDB88320 reflected, init and final xor 0xFFFFFFFF:
//! zlib's `crc32`, `crc32fast`).
//!
//! Replay ends at the first op that is truncated or fails its CRC when nothing valid
//! follows it: that is the torn tail of a write that was never acknowledged by a flush.
//! When whole, valid ops follow a bad one, the log is corrupt (a flipped bit in bytes a
//! flush acknowledged), and replay refuses rather than drop acknowledged writes — except
//! where the bad span holds a whole zero 4 KiB page: that is what a power cut leaves
//! when a later page of an unsynced write reached the disk before an earlier one, and
//! nothing from there on was acknowledged. Replaying ops is idempotent in order, so a
//! crash between writing the `.swap` file and dropping the log is safe.

use crate::error::{Error, Result};
use crate::format::bytes::{Put, Reader};
use crate::format::chunk_id::ChunkId;
use crate::format::record::MAX_RECORD;

const MAGIC: &[u8; 8] = b"MCWAL001";
const OP_MAGIC: u32 = u32::from_le_bytes(*b"RLAW");
/// Version of the log layout written.
pub const WAL_VERSION: u32 = 3;
/// Oldest version read.
const OLDEST_VERSION: u32 = 1;
/// Most blocks one stored op names (its payload stays well under 1 MiB).
pub const MAX_STORED_COUNT: usize = 16384;
/// Bytes of one block's entry in a stored op.
const STORED_ENTRY: usize = 24;
/// Header length (version 3).
pub const HEADER_LEN: usize = 56;
/// Header length of versions 1 and 2.
const OLD_HEADER_LEN: usize = 48;
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
    /// Blocks `lba..lba + records.len()` are the given records of data chunk `chunk`.
    Stored {
        /// First block.
        lba: u64,
        /// The data chunk.
        chunk: ChunkId,
        /// Its size in bytes.
        chunk_size: u32,
        /// Per block: (offset, stored length, tag).
        records: Vec<(u32, u32, [u8; 16])>,
    },
}

/// The root a log segment was started on, and the segment's number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogBase {
    /// Its id (None: an empty disk).
    pub id: Option<ChunkId>,
    /// Low 32 bits of its `seq` (0: unknown).
    pub seq: u32,
    /// The segment's number (0: unnumbered, a log of version 1 or 2).
    pub segment: u64,
}

/// Encodes a header naming the base root.
pub fn encode_header(base: LogBase) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(MAGIC);
    out.put_u32(WAL_VERSION);
    out.put_u32(base.seq);
    out.extend_from_slice(&base.id.map(|b| b.0).unwrap_or([0; 32]));
    out.put_u64(base.segment);
    out
}

/// Length of the header at the start of `buf` (by its version; the current one when
/// unreadable).
pub fn header_len(buf: &[u8]) -> usize {
    match buf
        .get(8..12)
        .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
    {
        Some(1 | 2) => OLD_HEADER_LEN,
        _ => HEADER_LEN,
    }
}

/// Decodes a header; returns the base root.
pub fn decode_header(buf: &[u8]) -> Result<LogBase> {
    let mut r = Reader::new(buf, "write-ahead log header");
    if r.take(8)? != MAGIC {
        return Err(Error::corrupt("write-ahead log: bad magic"));
    }
    let v = r.u32()?;
    if !(OLDEST_VERSION..=WAL_VERSION).contains(&v) {
        return Err(Error::corrupt(format!(
            "write-ahead log: version {v}, this build reads {OLDEST_VERSION} to {WAL_VERSION}"
        )));
    }
    let seq = r.u32()?;
    let id: [u8; 32] = r.array()?;
    let segment = if v >= 3 { r.u64()? } else { 0 };
    Ok(LogBase {
        id: (id != [0; 32]).then_some(ChunkId(id)),
        seq,
        segment,
    })
}

/// True when the header in `buf` names the version this build writes.
pub fn is_current_version(buf: &[u8]) -> bool {
    buf.get(8..12) == Some(&WAL_VERSION.to_le_bytes()[..])
}

/// Appends the encoding of `op` to `out`.
pub fn encode_op(op: &WalOp, out: &mut Vec<u8>) {
    match op {
        WalOp::Data { lba, record } => encode_data(*lba, record, out),
        WalOp::Zero { lba, count } => encode_raw(2, *lba, *count, &[], out),
        WalOp::Stored {
            lba,
            chunk,
            chunk_size,
            records,
        } => {
            let mut payload = Vec::with_capacity(40 + records.len() * STORED_ENTRY);
            payload.extend_from_slice(&chunk.0);
            payload.put_u32(*chunk_size);
            payload.put_u32(records.len() as u32);
            for (offset, len, tag) in records {
                payload.put_u32(*offset);
                payload.put_u32(*len);
                payload.extend_from_slice(tag);
            }
            encode_raw(3, *lba, payload.len() as u32, &payload, out);
        }
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

/// How a log ends after its last valid op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEnd {
    /// Exactly at the end of the bytes.
    Clean,
    /// A torn tail: nothing valid follows (or only past a zero page a power cut left).
    Torn,
    /// The op at `bad` is damaged and a whole, valid op starts at `next`.
    Corrupt {
        /// Offset of the damaged op.
        bad: usize,
        /// Offset of the next valid op.
        next: usize,
    },
}

/// Ops of one segment, decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Every valid op before the first bad one.
    pub ops: Vec<WalOp>,
    /// Length of the valid prefix (header included).
    pub valid: usize,
    /// What follows it.
    pub end: LogEnd,
}

/// Decodes ops after the header. Never fails: the caller decides what a bad end means.
pub fn decode_ops(buf: &[u8]) -> Decoded {
    let mut ops = Vec::new();
    let mut pos = header_len(buf).min(buf.len());
    while let Some(rest) = buf.get(pos..) {
        match decode_one(rest) {
            Some((op, n)) => {
                ops.push(op);
                pos += n;
            }
            None => break,
        }
    }
    let end = if pos >= buf.len() {
        LogEnd::Clean
    } else {
        match next_valid_op(buf, pos + 1) {
            Some(next) if !has_zero_page(buf, pos, next) => LogEnd::Corrupt { bad: pos, next },
            _ => LogEnd::Torn,
        }
    };
    Decoded {
        ops,
        valid: pos,
        end,
    }
}

/// Offset of the first whole, valid op at or after `from` (found by its magic).
fn next_valid_op(buf: &[u8], from: usize) -> Option<usize> {
    let magic = OP_MAGIC.to_le_bytes();
    let mut at = from;
    while let Some(rest) = buf.get(at..) {
        let i = rest.windows(4).position(|w| w == magic)?;
        if decode_one(rest.get(i..)?).is_some() {
            return Some(at + i);
        }
        at += i + 1;
    }
    None
}

/// True when `buf[from..to]` contains a whole 4 KiB page (at a file offset that is a
/// multiple of 4096) of zeros.
fn has_zero_page(buf: &[u8], from: usize, to: usize) -> bool {
    const PAGE: usize = 4096;
    let mut p = from.div_ceil(PAGE) * PAGE;
    while p + PAGE <= to {
        if buf
            .get(p..p + PAGE)
            .is_some_and(crate::format::record::is_zero)
        {
            return true;
        }
        p += PAGE;
    }
    false
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
        3 => decode_stored(lba, r.take(n as usize).ok()?)?,
        _ => return None,
    };
    let body = OP_FIXED - 4 + if kind == 2 { 0 } else { n as usize };
    let crc = r.u32().ok()?;
    if crc32fast::hash(buf.get(..body)?) != crc {
        return None;
    }
    Some((op, body + 4))
}

/// The payload of a stored op (kind 3).
fn decode_stored(lba: u64, payload: &[u8]) -> Option<WalOp> {
    let mut r = Reader::new(payload, "stored op");
    let chunk = ChunkId(r.array().ok()?);
    let chunk_size = r.u32().ok()?;
    let count = r.u32().ok()? as usize;
    if count > MAX_STORED_COUNT || payload.len() != 40 + count * STORED_ENTRY {
        return None;
    }
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        records.push((r.u32().ok()?, r.u32().ok()?, r.array().ok()?));
    }
    Some(WalOp::Stored {
        lba,
        chunk,
        chunk_size,
        records,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torn_tail_is_dropped() {
        let base = LogBase {
            id: Some(ChunkId([1; 32])),
            seq: 7,
            segment: 0,
        };
        let mut buf = encode_header(base);
        let a = WalOp::Data {
            lba: 3,
            record: vec![1, 2, 3],
        };
        let b = WalOp::Zero { lba: 9, count: 4 };
        encode_op(&a, &mut buf);
        encode_op(&b, &mut buf);
        let full = buf.len();
        let d = decode_ops(&buf);
        assert_eq!(
            (d.ops, d.valid, d.end),
            (vec![a.clone(), b.clone()], full, LogEnd::Clean)
        );
        for cut in HEADER_LEN + 1..full {
            let d = decode_ops(&buf[..cut]);
            assert!(d.ops.len() < 2 && d.valid <= cut);
            assert!(!matches!(d.end, LogEnd::Corrupt { .. }), "cut at {cut}");
        }
        let mut flipped = buf.clone();
        flipped[full - 6] ^= 1;
        let d = decode_ops(&flipped);
        assert_eq!((d.ops, d.end), (vec![a.clone()], LogEnd::Torn));
        assert_eq!(decode_header(&buf).unwrap(), base);
    }

    #[test]
    fn stored_ops_round_trip_and_a_version_1_log_still_reads() {
        let stored = WalOp::Stored {
            lba: 77,
            chunk: ChunkId([9; 32]),
            chunk_size: 600_000,
            records: vec![
                (0, 2100, [1; 16]),
                (2100, 4112, [2; 16]),
                (0, 2100, [1; 16]),
            ],
        };
        let mut buf = encode_header(LogBase::default());
        encode_op(&stored, &mut buf);
        encode_op(&WalOp::Zero { lba: 3, count: 2 }, &mut buf);
        let d = decode_ops(&buf);
        assert_eq!(d.end, LogEnd::Clean);
        assert_eq!(d.ops.first(), Some(&stored));
        // A cut anywhere inside the stored op is a torn tail, never a shorter op.
        for cut in HEADER_LEN + 1..HEADER_LEN + 40 {
            assert!(decode_ops(&buf[..cut]).ops.is_empty(), "cut at {cut}");
        }
        let mut v1 = encode_header(LogBase::default());
        v1.truncate(48);
        v1[8..12].copy_from_slice(&1u32.to_le_bytes());
        assert!(decode_header(&v1).is_ok());
        assert_eq!(header_len(&v1), 48);
        v1[8..12].copy_from_slice(&4u32.to_le_bytes());
        assert!(decode_header(&v1).is_err());
        // Version 3 numbers its segment.
        let v3 = encode_header(LogBase {
            segment: 77,
            ..LogBase::default()
        });
        assert_eq!(v3.len(), HEADER_LEN);
        assert_eq!(decode_header(&v3).unwrap().segment, 77);
    }

    #[test]
    fn a_bad_op_followed_by_good_ones_is_corruption() {
        let mut buf = encode_header(LogBase::default());
        let ops: Vec<WalOp> = (0..5)
            .map(|i| WalOp::Data {
                lba: i,
                record: vec![i as u8; 100],
            })
            .collect();
        let mut starts = Vec::new();
        for op in &ops {
            starts.push(buf.len());
            encode_op(op, &mut buf);
        }
        buf[starts[1] + 40] ^= 1;
        let d = decode_ops(&buf);
        assert_eq!(d.ops, ops[..1].to_vec());
        assert_eq!(
            d.end,
            LogEnd::Corrupt {
                bad: starts[1],
                next: starts[2]
            }
        );
    }

    #[test]
    fn a_zero_page_before_good_ops_is_a_power_cut_not_corruption() {
        let mut buf = encode_header(LogBase::default());
        encode_op(&WalOp::Zero { lba: 1, count: 1 }, &mut buf);
        let valid = buf.len();
        buf.resize(8192, 0);
        encode_op(&WalOp::Zero { lba: 2, count: 1 }, &mut buf);
        let d = decode_ops(&buf);
        assert_eq!((d.valid, d.end), (valid, LogEnd::Torn));
    }
}
