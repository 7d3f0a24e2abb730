//! Deterministic authenticated encryption.
//!
//! Every record, index node and root is sealed with AES-256-GCM-SIV (RFC 8452) under a
//! subkey of the disk key, with a fixed all-zero nonce. GCM-SIV derives its IV from the
//! plaintext and associated data, so equal plaintexts give equal ciphertexts (which lets
//! equal blocks deduplicate) while any change to the stored bytes fails the tag check.
//! What this reveals is only which sealed items are equal, as in the original design
//! (which used AES-GCM with IV = SHA-512(key || plaintext)[..12]).
//!
//! Stored form: `ciphertext || tag` (16 bytes); ciphertext length equals plaintext length.
//!
//! The cipher is aws-lc's (through `aws-lc-rs`, already linked for TLS): its assembly
//! POLYVAL and AES-CTR seal and open 4 KiB records about 3x faster here than the
//! RustCrypto `aes-gcm-siv` crate, which computes POLYVAL one block at a time. Both
//! implement RFC 8452, so the bytes are the same (a test checks them against that crate).
//!
//! Where the CPU has 256-bit vector AES and carry-less multiplication (VAES and
//! VPCLMULQDQ), records are sealed and opened by [`super::gcm_siv_vaes`] instead: the
//! same bytes, with the per-message keys derived once per subkey (the nonce never
//! changes) and two blocks per instruction (1.5-2x aws-lc's speed per 4 KiB record;
//! `cargo run --release --example bench_decode`).
//!
//! Subkeys (version 1): `SHA-512("mindcastle/v1/" || purpose || disk_key)[..32]`, with
//! purpose `record` for block records and `index` for index nodes and roots. The AAD
//! names the kind of item (`mindcastle/record/v1`, `mindcastle/node/v1`,
//! `mindcastle/root/v1`) so one kind can never be opened as another.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM_SIV};
use sha2::{Digest, Sha512};

use crate::error::{Error, Result};

/// Length of the authentication tag appended to every sealed item.
pub const TAG_LEN: usize = 16;
/// AAD of block records.
pub const AAD_RECORD: &[u8] = b"mindcastle/record/v1";
/// AAD of index nodes.
pub const AAD_NODE: &[u8] = b"mindcastle/node/v1";
/// AAD of roots.
pub const AAD_ROOT: &[u8] = b"mindcastle/root/v1";

/// A 256-bit disk key, as written in the `.swap` file.
#[derive(Clone, PartialEq, Eq)]
pub struct DiskKey(pub [u8; 32]);

impl std::fmt::Debug for DiskKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DiskKey(..)")
    }
}

impl DiskKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
        Self(k)
    }
}

/// The ciphers derived from one disk key.
pub struct Keys {
    record: LessSafeKey,
    index: LessSafeKey,
    /// The vector implementation of each, where the CPU has it (see the module doc).
    record_vector: Option<Siv>,
    index_vector: Option<Siv>,
}

#[cfg(target_arch = "x86_64")]
use super::gcm_siv_vaes::Siv;

/// No vector implementation off x86_64: a type with no values.
#[cfg(not(target_arch = "x86_64"))]
enum Siv {}

#[cfg(not(target_arch = "x86_64"))]
impl Siv {
    fn new(_: &[u8; 32]) -> Option<Self> {
        None
    }
    fn seal_in_place(&self, _: &[u8], _: &mut [u8]) -> [u8; 16] {
        match *self {}
    }
    fn open_into(&self, _: &[u8], _: &[u8], _: &[u8; 16], _: &mut [u8]) -> bool {
        match *self {}
    }
}

fn cipher_key(k: &[u8; 32]) -> Result<LessSafeKey> {
    UnboundKey::new(&AES_256_GCM_SIV, k)
        .map(LessSafeKey::new)
        .map_err(|_| Error::internal("the crypto library refused an AES-256-GCM-SIV key"))
}

/// The fixed all-zero nonce (see the module doc).
fn zero_nonce() -> Nonce {
    Nonce::assume_unique_for_key([0; 12])
}

fn subkey(purpose: &str, key: &DiskKey) -> [u8; 32] {
    let mut h = Sha512::new();
    h.update(b"mindcastle/v1/");
    h.update(purpose.as_bytes());
    h.update(key.0);
    let d = h.finalize();
    let mut k = [0u8; 32];
    k.copy_from_slice(&d[..32]);
    k
}

/// Which subkey to use.
#[derive(Clone, Copy, Debug)]
pub enum Purpose {
    /// Block records.
    Record,
    /// Index nodes and roots.
    Index,
}

impl Keys {
    /// Derives the subkeys of `key`.
    pub fn new(key: &DiskKey) -> Result<Self> {
        let mut keys = Self::without_vectors(key)?;
        keys.record_vector = Siv::new(&subkey("record", key));
        keys.index_vector = Siv::new(&subkey("index", key));
        Ok(keys)
    }

    /// The same keys sealed and opened by aws-lc alone, whatever the CPU has: the bytes
    /// are the same as [`Keys::new`]'s (for comparisons in tests and benchmarks).
    pub fn without_vectors(key: &DiskKey) -> Result<Self> {
        Ok(Self {
            record: cipher_key(&subkey("record", key))?,
            index: cipher_key(&subkey("index", key))?,
            record_vector: None,
            index_vector: None,
        })
    }

    /// Whether items are sealed and opened by the vector implementation.
    pub fn vectors(&self) -> bool {
        self.record_vector.is_some()
    }

    fn cipher(&self, p: Purpose) -> &LessSafeKey {
        match p {
            Purpose::Record => &self.record,
            Purpose::Index => &self.index,
        }
    }

    fn vector(&self, p: Purpose) -> Option<&Siv> {
        match p {
            Purpose::Record => self.record_vector.as_ref(),
            Purpose::Index => self.index_vector.as_ref(),
        }
    }

    /// Seals `plain` into `ciphertext || tag`; returns the stored bytes and the tag.
    pub fn seal(&self, p: Purpose, aad: &[u8], mut plain: Vec<u8>) -> Result<(Vec<u8>, [u8; 16])> {
        // Sealed items are held in memory by the thousand (the memtable): give each
        // exactly the room it needs. An LZ4 output Vec keeps a worst-case capacity, and
        // appending the tag to a full Vec would double it.
        if plain.capacity() != plain.len() + 16 {
            let mut exact = Vec::with_capacity(plain.len() + 16);
            exact.extend_from_slice(&plain);
            plain = exact;
        }
        let t = self.seal_in_place(p, aad, &mut plain)?;
        plain.extend_from_slice(&t);
        Ok((plain, t))
    }

    /// Seals `buf` in place (it becomes the ciphertext); returns the tag. The bytes and
    /// tag are those [`Keys::seal`] gives for the same plaintext.
    pub fn seal_in_place(&self, p: Purpose, aad: &[u8], buf: &mut [u8]) -> Result<[u8; 16]> {
        if let Some(v) = self.vector(p) {
            // RFC 8452's limits, which aws-lc enforces on its path (the counter would
            // wrap past 2^32 blocks); no item comes near them.
            if buf.len() as u64 > 1 << 36 || aad.len() as u64 > 1 << 36 {
                return Err(Error::invalid("item too large to seal"));
            }
            return Ok(v.seal_in_place(aad, buf));
        }
        let tag = self
            .cipher(p)
            .seal_in_place_separate_tag(zero_nonce(), Aad::from(aad), buf)
            .map_err(|_| Error::invalid("item too large to seal"))?;
        let mut t = [0u8; 16];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// Opens `ciphertext || tag`. When `expected` is given the stored tag must equal it,
    /// which binds the item to the reference that named it.
    pub fn open(
        &self,
        p: Purpose,
        aad: &[u8],
        stored: &[u8],
        expected: Option<&[u8; 16]>,
    ) -> Result<Vec<u8>> {
        let split = stored
            .len()
            .checked_sub(TAG_LEN)
            .ok_or_else(|| Error::corrupt("sealed item shorter than its tag"))?;
        let mut buf = vec![0u8; split];
        self.open_into(p, aad, stored, expected, &mut buf)?;
        Ok(buf)
    }

    /// [`Keys::open`] into `out`, which must be exactly the plaintext's length: no
    /// allocation and no copy of the stored bytes (reads open each record straight
    /// into the reply). On an error `out` holds unauthenticated bytes: never use them.
    pub fn open_into(
        &self,
        p: Purpose,
        aad: &[u8],
        stored: &[u8],
        expected: Option<&[u8; 16]>,
        out: &mut [u8],
    ) -> Result<()> {
        let split = stored
            .len()
            .checked_sub(TAG_LEN)
            .ok_or_else(|| Error::corrupt("sealed item shorter than its tag"))?;
        let (ciphertext, tag) = stored.split_at(split);
        if let Some(e) = expected {
            if tag != e {
                return Err(Error::corrupt("tag does not match its reference"));
            }
        }
        if out.len() != split {
            return Err(Error::internal(
                "open_into: output is not the plaintext's length",
            ));
        }
        let opened = match self.vector(p) {
            Some(v) => {
                let t: &[u8; TAG_LEN] = tag
                    .try_into()
                    .map_err(|_| Error::internal("open_into: a tag of the wrong length"))?;
                v.open_into(aad, ciphertext, t, out)
            }
            None => self
                .cipher(p)
                .open_separate_gather(zero_nonce(), Aad::from(aad), ciphertext, tag, out)
                .is_ok(),
        };
        if opened {
            Ok(())
        } else {
            Err(Error::corrupt(
                "authentication failed (wrong key or corrupted bytes)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_is_deterministic_and_authenticated() -> Result<()> {
        let keys = Keys::new(&DiskKey([7; 32]))?;
        let (a, ta) = keys.seal(Purpose::Record, AAD_RECORD, b"hello".to_vec())?;
        let (b, _) = keys.seal(Purpose::Record, AAD_RECORD, b"hello".to_vec())?;
        assert_eq!(a, b);
        assert_eq!(
            keys.open(Purpose::Record, AAD_RECORD, &a, Some(&ta))?,
            b"hello"
        );
        let mut bad = a.clone();
        bad[0] ^= 1;
        assert!(keys.open(Purpose::Record, AAD_RECORD, &bad, None).is_err());
        assert!(keys.open(Purpose::Index, AAD_NODE, &a, None).is_err());
        Ok(())
    }

    /// Keys with the vector implementation (where this CPU has it) and aws-lc alone seal
    /// the same bytes for both purposes, and each opens the other's.
    #[test]
    fn vector_and_aws_lc_agree() -> Result<()> {
        let disk = DiskKey([11; 32]);
        let fast = Keys::new(&disk)?;
        let plain_keys = Keys::without_vectors(&disk)?;
        assert!(!plain_keys.vectors());
        if !fast.vectors() {
            eprintln!("SKIPPED: no VAES/VPCLMULQDQ here; both are aws-lc");
        }
        for (p, aad) in [(Purpose::Record, AAD_RECORD), (Purpose::Index, AAD_NODE)] {
            for len in [0, 5, 16, 100, 4096, 4099] {
                let plain = crate::format::test_noise(len, len as u64);
                let (a, ta) = fast.seal(p, aad, plain.clone())?;
                let (b, tb) = plain_keys.seal(p, aad, plain.clone())?;
                assert_eq!((&a, ta), (&b, tb), "{p:?} length {len}");
                assert_eq!(fast.open(p, aad, &b, Some(&tb))?, plain);
                assert_eq!(plain_keys.open(p, aad, &a, Some(&ta))?, plain);
                let mut bad = a.clone();
                bad[len / 2] ^= 0x10;
                assert!(fast.open(p, aad, &bad, None).is_err());
                assert!(plain_keys.open(p, aad, &bad, None).is_err());
            }
        }
        Ok(())
    }

    /// The stored bytes are RFC 8452's: the same as the RustCrypto implementation gives
    /// (which sealed every disk written before the switch to aws-lc), for every length
    /// around the block and record sizes, and each opens the other's.
    #[test]
    fn same_bytes_as_the_rustcrypto_implementation() -> Result<()> {
        use aes_gcm_siv::aead::{AeadInPlace, KeyInit};
        let disk = DiskKey([3; 32]);
        let keys = Keys::new(&disk)?;
        let reference = aes_gcm_siv::Aes256GcmSiv::new(&subkey("record", &disk).into());
        for len in [0, 1, 15, 16, 17, 255, 4096, 4111, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
            let (stored, tag) = keys.seal(Purpose::Record, AAD_RECORD, plain.clone())?;
            let mut expect = plain.clone();
            let t = reference
                .encrypt_in_place_detached(&Default::default(), AAD_RECORD, &mut expect)
                .map_err(|_| Error::invalid("reference seal"))?;
            expect.extend_from_slice(&t);
            assert_eq!(stored, expect, "length {len}");
            assert_eq!(&tag[..], &t[..]);
            assert_eq!(
                keys.open(Purpose::Record, AAD_RECORD, &expect, Some(&tag))?,
                plain
            );
        }
        Ok(())
    }
}
