//! Hash maps keyed by bytes that are already hashes: AEAD tags and chunk ids (SHA-512).
//!
//! Why: the standard map's SipHash was 1.5-2% of a sequential write's samples (the
//! chunker looks up every record's tag, the run writer every entry's chunk id), work
//! that buys nothing for keys that are uniformly distributed already. The hasher folds
//! the key's bytes with one multiply per 8 bytes. A key chosen to collide slows a map
//! down, nothing more, and these keys come from this disk's own writes and index.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by a tag or chunk id.
pub type Map<K, V> = HashMap<K, V, BuildHasherDefault<PrehashedHasher>>;

/// Folds the key's bytes, 8 at a time (see the module doc).
#[derive(Clone, Copy)]
pub struct PrehashedHasher(u64);

impl Default for PrehashedHasher {
    fn default() -> Self {
        // Not zero: a zero state lets a zero word leave it zero.
        Self(0x9e37_79b9_7f4a_7c15)
    }
}

impl Hasher for PrehashedHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut pieces = bytes.chunks_exact(8);
        for p in pieces.by_ref() {
            let mut w = [0u8; 8];
            w.copy_from_slice(p);
            self.mix(u64::from_le_bytes(w));
        }
        let rest = pieces.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            if let Some(dst) = w.get_mut(..rest.len()) {
                dst.copy_from_slice(rest);
            }
            self.mix(u64::from_le_bytes(w));
        }
    }

    fn write_usize(&mut self, n: usize) {
        self.mix(n as u64);
    }
}

impl PrehashedHasher {
    fn mix(&mut self, w: u64) {
        // Each step is a bijection of the state for a given word (xor, odd multiply,
        // xorshift), so keys that differ in one word never collide; the shift brings
        // the high bits, where the multiply gathers every input bit, down to the low
        // ones hashbrown indexes by.
        let h = (self.0 ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        self.0 = h ^ (h >> 29);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys that differ in any one byte land on different hashes, and a map of them
    /// finds each one.
    #[test]
    fn keys_differing_anywhere_hash_apart() {
        let mut seen = std::collections::HashSet::new();
        let mut map: Map<[u8; 16], usize> = Map::default();
        for i in 0..16 {
            for v in 1..=255u8 {
                let mut k = [0u8; 16];
                k[i] = v;
                let mut h = PrehashedHasher::default();
                std::hash::Hash::hash(&k, &mut h);
                assert!(seen.insert(h.finish()), "byte {i} = {v} collides");
                map.insert(k, i * 256 + v as usize);
            }
        }
        for i in 0..16 {
            for v in 1..=255u8 {
                let mut k = [0u8; 16];
                k[i] = v;
                assert_eq!(map.get(&k), Some(&(i * 256 + v as usize)));
            }
        }
        // Keys differing in both words (what a zero-state FxHash collided on).
        for i in 0..8 {
            for j in 8..16 {
                for v in 1..16u8 {
                    for u in 1..16u8 {
                        let mut k = [0u8; 16];
                        k[i] = v;
                        k[j] = u;
                        let mut h = PrehashedHasher::default();
                        std::hash::Hash::hash(&k, &mut h);
                        assert!(seen.insert(h.finish()), "{k:?} collides");
                    }
                }
            }
        }
    }
}
