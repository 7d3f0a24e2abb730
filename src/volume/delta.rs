//! Incremental exports: only the byte ranges that differ between two states, as a raw
//! image with holes elsewhere, or as a delta stream that `mindcastle apply` writes into
//! a disk or an image.
//!
//! Delta stream, version 1 (all integers little-endian):
//! ```text
//! header  = "MCDELTA1" | version u32 (1) | disk size u64 | from root id [32] | to root id [32]
//! record  = offset u64 | length u32 (1 ..= 4 MiB) | bytes[length]     (increasing offsets)
//! trailer = u64::MAX | 0u32 | record count u64 | data bytes u64
//!           | CRC-32 (IEEE, as `crc32fast`) of every byte before it u32
//! ```
//! `apply` reads the whole stream once to check the magic, version, disk size, record
//! order and bounds, counts and CRC, and that nothing follows the CRC, and only then
//! writes: a stream cut short, damaged or followed by more bytes is an error that
//! leaves the target as it was (standard input is kept in an unlinked temporary file
//! for the second reading).

use std::io::{Read, Seek, SeekFrom, Write};

use super::history::Range;
use super::Volume;
use crate::error::{Error, Result};
use crate::format::root::RootRef;

const MAGIC: &[u8; 8] = b"MCDELTA1";
const VERSION: u32 = 1;
/// Largest record.
const MAX_RECORD: u64 = 4 << 20;
// `apply` writes a disk's records through `Volume::write_steps`, a step each.
const _: () = assert!(MAX_RECORD as usize <= super::steps::STEP);

/// What an incremental export wrote or an apply wrote.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DeltaReport {
    /// Ranges (records).
    pub records: u64,
    /// Bytes of data.
    pub bytes: u64,
}

struct Crc<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Crc<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.crc.update(b);
        self.inner
            .write_all(b)
            .map_err(|e| Error::io("writing the delta stream", e))
    }
}

impl Volume {
    /// Reads `ranges` in pieces of at most 4 MiB and hands each (offset, bytes) to `f`;
    /// returns the pieces and bytes.
    fn each_piece(
        &self,
        ranges: &[Range],
        progress: &dyn Fn(u64),
        f: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    ) -> Result<DeltaReport> {
        let mut rep = DeltaReport::default();
        let mut buf = Vec::new();
        for r in ranges {
            let mut off = r.offset;
            let end = r.offset + r.length;
            while off < end {
                let n = (end - off).min(MAX_RECORD);
                buf.resize(n as usize, 0);
                self.read_at(off, &mut buf)?;
                f(off, &buf)?;
                rep.records += 1;
                rep.bytes += n;
                off += n;
                progress(rep.bytes);
            }
        }
        Ok(rep)
    }

    /// Writes the bytes of `ranges` (read from this volume) as a delta stream.
    pub fn export_delta<W: Write>(
        &self,
        out: W,
        from: &RootRef,
        to: Option<&RootRef>,
        ranges: &[Range],
        progress: &dyn Fn(u64),
    ) -> Result<DeltaReport> {
        let mut w = Crc {
            inner: out,
            crc: crc32fast::Hasher::new(),
        };
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&VERSION.to_le_bytes());
        head.extend_from_slice(&self.size().to_le_bytes());
        head.extend_from_slice(&from.id.0);
        head.extend_from_slice(&to.map(|t| t.id.0).unwrap_or([0; 32]));
        w.put(&head)?;
        let rep = self.each_piece(ranges, progress, &mut |off, bytes| {
            w.put(&off.to_le_bytes())?;
            w.put(&(bytes.len() as u32).to_le_bytes())?;
            w.put(bytes)
        })?;
        let mut tail = u64::MAX.to_le_bytes().to_vec();
        tail.extend_from_slice(&0u32.to_le_bytes());
        tail.extend_from_slice(&rep.records.to_le_bytes());
        tail.extend_from_slice(&rep.bytes.to_le_bytes());
        w.put(&tail)?;
        let crc = w.crc.clone().finalize();
        w.inner
            .write_all(&crc.to_le_bytes())
            .and_then(|()| w.inner.flush())
            .map_err(|e| Error::io("writing the delta stream", e))?;
        Ok(rep)
    }

    /// Writes the bytes of `ranges` into `out` at their offsets (holes elsewhere).
    pub fn export_ranges<W: Write + Seek>(
        &self,
        out: &mut W,
        ranges: &[Range],
        progress: &dyn Fn(u64),
    ) -> Result<DeltaReport> {
        let werr = |e| Error::io("writing the export", e);
        let rep = self.each_piece(ranges, progress, &mut |off, bytes| {
            out.seek(SeekFrom::Start(off)).map_err(werr)?;
            out.write_all(bytes).map_err(werr)
        })?;
        out.flush().map_err(werr)?;
        Ok(rep)
    }
}

struct CrcReader<R> {
    inner: R,
    crc: crc32fast::Hasher,
}

impl<R: Read> CrcReader<R> {
    fn take(&mut self, n: usize) -> Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.inner.read_exact(&mut b).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Error::corrupt("the delta stream ends early (cut short?)")
            } else {
                Error::io("reading the delta stream", e)
            }
        })?;
        self.crc.update(&b);
        Ok(b)
    }
    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }
    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
    }
}

/// Reads a delta stream and hands each record to `write(offset, bytes)`; `size` is the
/// target's size (checked against the stream's).
pub fn apply_delta<R: Read>(
    input: R,
    size: u64,
    write: &mut dyn FnMut(u64, &[u8]) -> Result<()>,
    progress: &dyn Fn(u64),
) -> Result<DeltaReport> {
    let mut r = CrcReader {
        inner: input,
        crc: crc32fast::Hasher::new(),
    };
    if r.take(8)? != MAGIC {
        return Err(Error::invalid(
            "not a mindcastle delta stream (no MCDELTA1 magic)",
        ));
    }
    let version = r.u32()?;
    if version != VERSION {
        return Err(Error::invalid(format!(
            "delta stream version {version}; this mindcastle reads version {VERSION}"
        )));
    }
    let disk = r.u64()?;
    if disk != size {
        return Err(Error::invalid(format!(
            "the delta stream is of a {disk}-byte disk; the target is {size} bytes (a \
             disk is made that size with: mindcastle resize [--shrink] TARGET {disk})"
        )));
    }
    r.take(64)?;
    let mut rep = DeltaReport::default();
    let mut next_min = 0u64;
    loop {
        let off = r.u64()?;
        let len = u64::from(r.u32()?);
        if off == u64::MAX && len == 0 {
            break;
        }
        if len == 0 || len > MAX_RECORD || off < next_min || off.saturating_add(len) > size {
            return Err(Error::corrupt(format!(
                "delta record {} (offset {off}, length {len}) is out of order or bounds",
                rep.records
            )));
        }
        let bytes = r.take(len as usize)?;
        write(off, &bytes)?;
        next_min = off + len;
        rep.records += 1;
        rep.bytes += len;
        progress(rep.bytes);
    }
    let (records, bytes) = (r.u64()?, r.u64()?);
    let want = r.crc.clone().finalize();
    let mut crc = [0u8; 4];
    r.inner
        .read_exact(&mut crc)
        .map_err(|_| Error::corrupt("the delta stream ends before its checksum"))?;
    if u32::from_le_bytes(crc) != want || records != rep.records || bytes != rep.bytes {
        return Err(Error::corrupt(
            "the delta stream fails its checksum (damaged in transit?)",
        ));
    }
    // Nothing may follow the checksum: two streams joined (`cat a.delta b.delta`)
    // would otherwise apply the first and call the whole applied.
    let mut more = [0u8; 1];
    loop {
        return match r.inner.read(&mut more) {
            Ok(0) => Ok(rep),
            Ok(_) => Err(Error::corrupt(
                "bytes follow the delta stream's checksum (two streams joined? apply each \
                 on its own, in order)",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Err(Error::io("reading the delta stream", e)),
        };
    }
}
