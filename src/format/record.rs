//! Block records (format version 1).
//!
//! A record is one 4096-byte block, LZ4-compressed (lz4 block format, no frame) when that
//! makes it shorter than 4096 bytes and kept raw otherwise, then sealed (see `crypto`):
//!
//! ```text
//! +---------------------------------+-----------+
//! | ciphertext (1..=4096 bytes)     | tag (16)  |
//! +---------------------------------+-----------+
//! ```
//! A ciphertext of exactly 4096 bytes means the block was stored raw; anything shorter is
//! LZ4 that must decompress to exactly 4096 bytes. All-zero blocks are never stored.
//! The tag is also kept in the index entry, which binds the record to its place in the tree.

use crate::error::{Error, Result};
use crate::format::crypto::{Keys, Purpose, AAD_RECORD, TAG_LEN};
use crate::format::BLOCK_SIZE;

/// A sealed block ready to be placed in a data chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedRecord {
    /// `ciphertext || tag`.
    pub bytes: Vec<u8>,
    /// The tag (last 16 bytes of `bytes`).
    pub tag: [u8; 16],
}

impl SealedRecord {
    /// A record from its stored bytes (`ciphertext || tag`); None when too short to
    /// hold a tag.
    pub fn from_stored(bytes: Vec<u8>) -> Option<Self> {
        let at = bytes.len().checked_sub(TAG_LEN)?;
        let tag: [u8; 16] = bytes.get(at..)?.try_into().ok()?;
        (at > 0).then_some(Self { bytes, tag })
    }
}

/// Largest stored record.
pub const MAX_RECORD: usize = BLOCK_SIZE + TAG_LEN;

/// True when every byte is zero.
pub fn is_zero(block: &[u8]) -> bool {
    // OR-folded 64 bytes at a time (the compiler makes that a few vector ORs), so a zero
    // block costs a fraction of a byte-by-byte scan, and a non-zero one still stops
    // within its first 64 bytes.
    let mut pieces = block.chunks_exact(64);
    pieces.all(|p| p.iter().fold(0u8, |a, &b| a | b) == 0)
        && pieces.remainder().iter().all(|&b| b == 0)
}

/// Compresses and seals one block.
pub fn seal_block(keys: &Keys, block: &[u8]) -> Result<SealedRecord> {
    // One allocation of exactly the record's size, sealed in place: `lz4_flex`'s
    // `compress` zeroed a fresh worst-case Vec per block, which `Keys::seal` then
    // copied into an exact one (allocations and the memset were 5-6% of a sequential
    // write's samples).
    let plain = with_plaintext(block, |plain| {
        let mut v = Vec::with_capacity(plain.len() + TAG_LEN);
        v.extend_from_slice(plain);
        v
    })?;
    let (bytes, tag) = keys.seal(Purpose::Record, AAD_RECORD, plain)?;
    Ok(SealedRecord { bytes, tag })
}

/// Runs `f` on what `block` is stored as before sealing: its LZ4 block when shorter,
/// else the block itself. LZ4 goes into this thread's scratch (no allocation).
fn with_plaintext<R>(block: &[u8], f: impl FnOnce(&[u8]) -> R) -> Result<R> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<[u8; COMPRESS_ROOM]> =
            const { std::cell::RefCell::new([0; COMPRESS_ROOM]) };
    }
    if block.len() != BLOCK_SIZE {
        return Err(Error::invalid("seal_block needs exactly one block"));
    }
    let compress = |scratch: &mut [u8; COMPRESS_ROOM]| -> R {
        match lz4_if_shorter(block, scratch) {
            Some(n) => f(scratch.get(..n).unwrap_or(block)),
            None => f(block),
        }
    };
    Ok(SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => compress(&mut scratch),
        Err(_) => compress(&mut [0; COMPRESS_ROOM]),
    }))
}

/// The length of `block`'s LZ4 block, written into `room` (at least [`COMPRESS_ROOM`]
/// bytes), when it is shorter than the block; `None` when the block is to be stored
/// raw (incompressible, or, never with this room, a refusal). The one rule of what a
/// record holds, for [`seal_block`] and [`PackedRecords`] alike.
fn lz4_if_shorter(block: &[u8], room: &mut [u8]) -> Option<usize> {
    match lz4_flex::block::compress_into(block, room) {
        Ok(n) if n < BLOCK_SIZE => Some(n),
        _ => None,
    }
}

/// Sealed records packed one after another in one buffer instead of an allocation
/// each: the records of (part of) a large write, on their way into a data chunk.
/// Each record's bytes are those [`seal_block`] gives for its block. The buffer comes
/// from, and goes back to, the process's buffer pool (a fresh one per write took page
/// faults: the allocator hands the top of its heap back).
///
/// Each block is compressed straight into the buffer, where it is then sealed in place:
/// compressing into a scratch block and copying it on was a copy of every record's
/// bytes (part of the 4% of a sequential write's samples that memmove took).
#[derive(Debug, Default)]
pub struct PackedRecords {
    /// Initialized to its whole length (a pooled buffer keeps its length, so taking
    /// it zeroes nothing); bytes past `used` are room, never read.
    bytes: Vec<u8>,
    /// Bytes of the records so far.
    used: usize,
    /// (block, start in `bytes`, length, tag), in the order sealed.
    records: Vec<(u64, u32, u32, [u8; 16])>,
}

impl PackedRecords {
    /// Room for `blocks` records, and for LZ4's worst case past the last of them, so
    /// sealing never reallocates.
    pub fn for_blocks(blocks: usize) -> Self {
        let room = blocks
            .saturating_mul(MAX_RECORD)
            .saturating_add(COMPRESS_ROOM);
        Self {
            bytes: crate::buffers::shared().take_at_least_tight(room),
            used: 0,
            records: Vec::with_capacity(blocks),
        }
    }

    /// Compresses and seals `block` onto the end, as block `lba`: the same bytes as
    /// [`seal_block`] gives.
    pub fn seal(&mut self, keys: &Keys, lba: u64, block: &[u8]) -> Result<()> {
        if block.len() != BLOCK_SIZE {
            return Err(Error::invalid("seal needs exactly one block"));
        }
        let start = self.used;
        let need = start + COMPRESS_ROOM;
        if self.bytes.len() < need {
            // Only when more blocks come than `for_blocks` was told.
            self.bytes.resize(need.max(self.bytes.len() * 2), 0);
        }
        let room = self
            .bytes
            .get_mut(start..need)
            .ok_or_else(|| Error::internal("packed record room"))?;
        let plain_len = match lz4_if_shorter(block, room) {
            Some(n) => n,
            None => {
                room.get_mut(..BLOCK_SIZE)
                    .ok_or_else(|| Error::internal("packed record room"))?
                    .copy_from_slice(block);
                BLOCK_SIZE
            }
        };
        let (sealed, after) = room.split_at_mut(plain_len);
        let tag = keys.seal_in_place(Purpose::Record, AAD_RECORD, sealed)?;
        after
            .get_mut(..TAG_LEN)
            .ok_or_else(|| Error::internal("packed record room"))?
            .copy_from_slice(&tag);
        let len = plain_len + TAG_LEN;
        self.used = start + len;
        let at = u32::try_from(start).map_err(|_| Error::internal("packed records too large"))?;
        self.records.push((lba, at, len as u32, tag));
        Ok(())
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes of all the records.
    pub fn bytes_len(&self) -> usize {
        self.used
    }

    /// Each record: its block, stored bytes (`ciphertext || tag`) and tag, in order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8], [u8; 16])> + '_ {
        self.records.iter().map(|&(lba, at, len, tag)| {
            let at = at as usize;
            (
                lba,
                self.bytes.get(at..at + len as usize).unwrap_or_default(),
                tag,
            )
        })
    }

    /// Each record as a [`SealedRecord`] of its own (a copy).
    pub fn to_records(&self) -> Vec<(u64, SealedRecord)> {
        self.iter()
            .map(|(lba, bytes, tag)| {
                (
                    lba,
                    SealedRecord {
                        bytes: bytes.to_vec(),
                        tag,
                    },
                )
            })
            .collect()
    }
}

impl Drop for PackedRecords {
    fn drop(&mut self) {
        crate::buffers::shared().give(std::mem::take(&mut self.bytes));
    }
}

/// LZ4's worst case for one block.
const COMPRESS_ROOM: usize = lz4_flex::block::get_maximum_output_size(BLOCK_SIZE);

/// Verifies and opens a stored record into `out` (one block).
pub fn open_record(keys: &Keys, stored: &[u8], tag: &[u8; 16], out: &mut [u8]) -> Result<()> {
    if stored.len() > MAX_RECORD || out.len() != BLOCK_SIZE {
        return Err(Error::corrupt(format!("record of {} bytes", stored.len())));
    }
    let plain_len = stored
        .len()
        .checked_sub(TAG_LEN)
        .ok_or_else(|| Error::corrupt("record shorter than its tag"))?;
    if plain_len == BLOCK_SIZE {
        // Stored raw: opened straight into the block.
        return keys.open_into(Purpose::Record, AAD_RECORD, stored, Some(tag), out);
    }
    // LZ4: opened into this thread's scratch block, decoded into the block. (A zeroed
    // array on the stack cost a 4 KiB memset per record: 3% of sequential reads.)
    thread_local! {
        static SCRATCH: std::cell::RefCell<[u8; BLOCK_SIZE]> =
            const { std::cell::RefCell::new([0; BLOCK_SIZE]) };
    }
    let open = |scratch: &mut [u8; BLOCK_SIZE], out: &mut [u8]| {
        let plain = scratch
            .get_mut(..plain_len)
            .ok_or_else(|| Error::corrupt(format!("record of {} bytes", stored.len())))?;
        keys.open_into(Purpose::Record, AAD_RECORD, stored, Some(tag), plain)?;
        unpack_block(plain, out)
    };
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => open(&mut scratch, out),
        Err(_) => open(&mut [0; BLOCK_SIZE], out),
    })
}

/// A record's plaintext into its 4 KiB block: a 4096-byte plaintext is the block as
/// it is, anything shorter an LZ4 block (the same rule in the original C Mindcastle).
pub fn unpack_block(plain: &[u8], out: &mut [u8]) -> Result<()> {
    if plain.len() == BLOCK_SIZE && out.len() == BLOCK_SIZE {
        out.copy_from_slice(plain);
        return Ok(());
    }
    match crate::format::lz4::decompress_into(plain, out) {
        Ok(n) if n == BLOCK_SIZE => Ok(()),
        Ok(n) => Err(Error::corrupt(format!("record decompressed to {n} bytes"))),
        Err(e) => Err(e.context("record does not decompress")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::crypto::DiskKey;

    /// Marsaglia's xorshift64: the tests' pseudo-random bytes.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Both ways a record is opened (a raw one straight into the block, an LZ4 one
    /// through the scratch block) refuse a flipped bit anywhere and a tag that is not
    /// the reference's (the caller then never uses the block).
    #[test]
    fn raw_and_compressed_records_refuse_any_flipped_bit() -> Result<()> {
        let keys = Keys::new(&DiskKey([5; 32]))?;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<u8> = (0..BLOCK_SIZE).map(|_| xorshift(&mut x) as u8).collect();
        let mut half = random.clone();
        half[BLOCK_SIZE / 2..].fill(0);
        for (block, raw) in [(random, true), (half, false)] {
            let r = seal_block(&keys, &block)?;
            assert_eq!(r.bytes.len() == MAX_RECORD, raw);
            let mut out = vec![0u8; BLOCK_SIZE];
            open_record(&keys, &r.bytes, &r.tag, &mut out)?;
            assert_eq!(out, block);
            for at in [
                0,
                1,
                r.bytes.len() / 2,
                r.bytes.len() - TAG_LEN - 1,
                r.bytes.len() - 1,
            ] {
                let mut bad = r.bytes.clone();
                bad[at] ^= 0x10;
                let mut out = vec![0xAAu8; BLOCK_SIZE];
                // The reference's tag, then the stored one (a forged reference).
                assert!(
                    open_record(&keys, &bad, &r.tag, &mut out).is_err(),
                    "byte {at}"
                );
                let stored_tag: [u8; 16] = bad[bad.len() - TAG_LEN..].try_into().unwrap();
                let err = open_record(&keys, &bad, &stored_tag, &mut out);
                assert!(err.is_err(), "byte {at}, stored tag");
            }
            let mut wrong_len = vec![0u8; 100];
            assert!(keys
                .open_into(Purpose::Record, AAD_RECORD, &r.bytes, None, &mut wrong_len)
                .is_err());
        }
        Ok(())
    }

    /// A record's bytes are what they always were (LZ4 as `lz4_flex::block::compress`
    /// gives it, raw when that is not shorter, then sealed): the same block must give
    /// the same record, and so the same chunks, as every disk written before.
    #[test]
    fn records_are_byte_for_byte_the_format_s() -> Result<()> {
        let keys = Keys::new(&DiskKey([9; 32]))?;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for fill in [0usize, 1024, 2048, 3072, 3900, 4000, BLOCK_SIZE] {
            // `fill` random bytes, then a run of one byte value.
            let block: Vec<u8> = (0..BLOCK_SIZE)
                .map(|i| {
                    let r = xorshift(&mut x);
                    if i < fill {
                        r as u8
                    } else {
                        7
                    }
                })
                .collect();
            let lz4 = lz4_flex::block::compress(&block);
            let plain = if lz4.len() < BLOCK_SIZE {
                lz4
            } else {
                block.clone()
            };
            let (bytes, tag) = keys.seal(Purpose::Record, AAD_RECORD, plain)?;
            let r = seal_block(&keys, &block)?;
            assert_eq!(r.bytes, bytes, "{fill} random bytes");
            assert_eq!(r.tag, tag);
            assert_eq!(r.bytes.capacity(), r.bytes.len(), "held by the thousand");
        }
        Ok(())
    }

    /// Packed records are, record by record, what `seal_block` gives, and open back.
    #[test]
    fn packed_records_are_the_records_seal_block_makes() -> Result<()> {
        let keys = Keys::new(&DiskKey([5; 32]))?;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let blocks: Vec<Vec<u8>> = (0..40usize)
            .map(|i| {
                let fill = (i * 409) % (BLOCK_SIZE + 1);
                (0..BLOCK_SIZE)
                    .map(|j| if j < fill { xorshift(&mut x) as u8 } else { 0 })
                    .collect()
            })
            .collect();
        // Room for all, and for one only (the buffer grows); each from a pooled buffer
        // whose old bytes are not zero (records are compressed straight into it).
        for told in [blocks.len(), 1] {
            crate::buffers::shared().give(vec![0xa5; (told * MAX_RECORD + COMPRESS_ROOM) * 2]);
            packed_equal_to_seal_block(&keys, &blocks, told)?;
        }
        Ok(())
    }

    fn packed_equal_to_seal_block(keys: &Keys, blocks: &[Vec<u8>], told: usize) -> Result<()> {
        let mut packed = PackedRecords::for_blocks(told);
        for (i, b) in blocks.iter().enumerate() {
            packed.seal(keys, 1000 + i as u64, b)?;
        }
        assert!(packed.seal(keys, 1, &[0u8; 100]).is_err(), "a short block");
        assert_eq!(packed.len(), blocks.len());
        let mut total = 0;
        let mut out = vec![0u8; BLOCK_SIZE];
        for ((lba, bytes, tag), (i, b)) in packed.iter().zip(blocks.iter().enumerate()) {
            let r = seal_block(keys, b)?;
            assert_eq!(lba, 1000 + i as u64);
            assert_eq!(bytes, &r.bytes[..], "block {i}");
            assert_eq!(tag, r.tag);
            open_record(keys, bytes, &tag, &mut out)?;
            assert_eq!(&out, b);
            total += bytes.len();
        }
        assert_eq!(packed.bytes_len(), total);
        let copies = packed.to_records();
        assert_eq!(copies.len(), blocks.len());
        assert_eq!(copies[3].1, seal_block(keys, &blocks[3])?);
        Ok(())
    }

    /// LZ4's output is pinned: blocks from sparse to incompressible, over small and
    /// large alphabets, hash to what the safe encoder of lz4_flex 0.11.7 gave (the
    /// crate's pointer encoder, used since the tenth session, gives the same). A
    /// change of encoder or version that moves this gives the same blocks other
    /// records, and so other chunk names, than every disk written before: no data is
    /// lost, but nothing dedups against the old chunks.
    #[test]
    fn lz4_output_is_what_it_always_was() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut h = 0xcbf2_9ce4_8422_2325u64;
        for i in 0..64usize {
            let fill = (i * 331) % (BLOCK_SIZE + 1);
            let alphabet = 1 + (i * 37) % 256;
            let block: Vec<u8> = (0..BLOCK_SIZE)
                .map(|j| {
                    let r = xorshift(&mut x);
                    if j < fill {
                        (r % alphabet as u64) as u8
                    } else {
                        (i % 3) as u8
                    }
                })
                .collect();
            for c in lz4_flex::block::compress(&block) {
                h ^= u64::from(c);
                h = h.wrapping_mul(0x100_0000_01b3);
            }
        }
        assert_eq!(h, 0x5bbd_0a99_9a7e_b426);
    }

    #[test]
    fn round_trip_compressible_and_random() -> Result<()> {
        let keys = Keys::new(&DiskKey([1; 32]))?;
        let mut text = vec![0u8; BLOCK_SIZE];
        for (i, b) in text.iter_mut().enumerate() {
            *b = (i % 7) as u8;
        }
        let random: Vec<u8> = (0..BLOCK_SIZE)
            .map(|i| ((i * 2654435761usize) >> 13) as u8)
            .collect();
        for block in [text, random] {
            let r = seal_block(&keys, &block)?;
            let mut out = vec![0u8; BLOCK_SIZE];
            open_record(&keys, &r.bytes, &r.tag, &mut out)?;
            assert_eq!(out, block);
        }
        assert!(is_zero(&[0u8; BLOCK_SIZE]));
        let mut nz = [0u8; BLOCK_SIZE];
        nz[4095] = 1;
        assert!(!is_zero(&nz));
        Ok(())
    }

    #[test]
    fn is_zero_sees_one_set_bit_anywhere() {
        for len in [0, 1, 63, 64, 65, 127, 4096, 4100] {
            let mut b = vec![0u8; len];
            assert!(is_zero(&b), "len {len}");
            for at in 0..len {
                for bit in [0x01, 0x80] {
                    b[at] = bit;
                    assert!(!is_zero(&b), "len {len} at {at} bit {bit:#x}");
                    b[at] = 0;
                }
            }
        }
    }
}
