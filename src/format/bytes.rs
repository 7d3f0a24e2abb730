//! Bounds-checked little-endian reader and writer helpers used by every decoder,
//! so malformed input becomes `Error::corrupt`, never a panic.

use crate::error::{Error, Result};

/// A cursor over untrusted bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    /// Reads `buf`, naming `what` in errors.
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Self { buf, pos: 0, what }
    }
    /// Next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| {
                Error::corrupt(format!("{} truncated at byte {}", self.what, self.pos))
            })?;
        let s = self.buf.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(s)
    }
    /// Next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// A byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }
    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// A u32 length-prefixed UTF-8 string of at most `max` bytes.
    pub fn string(&mut self, max: usize) -> Result<String> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(Error::corrupt(format!(
                "{}: string of {n} bytes",
                self.what
            )));
        }
        String::from_utf8(self.take(n)?.to_vec())
            .map_err(|_| Error::corrupt(format!("{}: string is not UTF-8", self.what)))
    }
    /// A count that must fit in what remains, given each item takes at least `min_item` bytes.
    pub fn count(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(Error::corrupt(format!(
                "{}: count {n} exceeds its bytes",
                self.what
            )));
        }
        Ok(n)
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<()> {
        if self.remaining() != 0 {
            return Err(Error::corrupt(format!(
                "{}: {} trailing bytes",
                self.what,
                self.remaining()
            )));
        }
        Ok(())
    }
}

/// Little-endian writer helpers on `Vec<u8>`.
pub trait Put {
    /// Appends a u16.
    fn put_u16(&mut self, v: u16);
    /// Appends a u32.
    fn put_u32(&mut self, v: u32);
    /// Appends a u64.
    fn put_u64(&mut self, v: u64);
    /// Appends a u32 length and the string bytes.
    fn put_str(&mut self, s: &str);
}

impl Put for Vec<u8> {
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_str(&mut self, s: &str) {
        self.put_u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.extend_from_slice(
            s.as_bytes()
                .get(..u32::MAX as usize)
                .unwrap_or(s.as_bytes()),
        );
    }
}
