//! Chunk ids: the first 32 bytes of the SHA-512 of a chunk file's bytes, written as 64
//! lower-case hex digits and used as the file name `HEX64.lvl`, so that
//! `sha512sum FILE | cut -c1-64` equals the name.

use std::fmt;

use crate::error::{Error, Result};

/// File name suffix of every chunk.
pub const CHUNK_SUFFIX: &str = ".lvl";

/// Identity of an immutable chunk: SHA-512(bytes)[..32].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId(pub [u8; 32]);

impl ChunkId {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        // OpenSSL's SHA-512 (already linked for TLS): 1.5-1.8x the `sha2` crate's on
        // 4 MiB here, and hashing chunk bytes was a third of a sequential write's CPU.
        Self::from_digest(&openssl::sha::sha512(bytes))
    }
    /// The id of bytes whose SHA-512 is `digest`.
    pub fn from_digest(digest: &[u8; 64]) -> Self {
        let mut id = [0u8; 32];
        id.copy_from_slice(&digest[..32]);
        Self(id)
    }
    /// 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Result<Self> {
        let mut id = [0u8; 32];
        if s.len() != 64 {
            return Err(Error::invalid(format!(
                "chunk id '{s}' is not 64 hex digits"
            )));
        }
        hex::decode_to_slice(s, &mut id)
            .map_err(|_| Error::invalid(format!("chunk id '{s}' is not 64 hex digits")))?;
        Ok(Self(id))
    }
    /// `HEX64.lvl`.
    pub fn file_name(&self) -> String {
        format!("{}{}", self.to_hex(), CHUNK_SUFFIX)
    }
    /// Parses a file name `HEX64.lvl`; None for any other name.
    pub fn from_file_name(name: &str) -> Option<Self> {
        let hex = name.strip_suffix(CHUNK_SUFFIX)?;
        Self::from_hex(hex).ok()
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_prefix_of_sha512() {
        // sha512("abc") starts with ddaf35a193617aba...
        let id = ChunkId::of(b"abc");
        assert!(id.to_hex().starts_with("ddaf35a193617abacc417349ae204131"));
        assert_eq!(ChunkId::from_file_name(&id.file_name()), Some(id));
        assert_eq!(ChunkId::from_file_name("wal"), None);
    }

    #[test]
    fn ids_match_another_sha512_at_every_length_around_its_block_size() {
        use sha2::Digest;
        // Lengths across SHA-512's 128-byte blocks and its 112-byte padding edge, and
        // a chunk's size, against the `sha2` crate's digest.
        let data: Vec<u8> = (0..(1u32 << 20) + 300)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for len in (0..=400).chain([4095, 4096, 65_537, 1 << 20, (1 << 20) + 300]) {
            let want = sha2::Sha512::digest(&data[..len]);
            assert_eq!(ChunkId::of(&data[..len]).0[..], want[..32], "length {len}");
        }
    }
}
