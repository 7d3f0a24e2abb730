//! A ref version (format version 1): one create-only object at a remote,
//! `refs/NAME/SEQ` (SEQ: 20 decimal digits, so names sort in sequence order), saying
//! "version SEQ of ref NAME is this root".
//!
//! ```text
//! "MCREFV01" (8) | version u32 (1) | seq u64 (1, 2, ...)
//! | previous [32]         first 256 bits of SHA-512 of version seq-1's whole bytes
//!                         (zeros for seq 1): the history is a hash chain
//! | root RootRef (52)     chunk id [32] | chunk size u32 | tag [16] (snapshot=/snaphash=)
//! | disk size u64 | disk uuid [16] | unix time in milliseconds u64
//! | ref name str | message str                       (str = u32 length || UTF-8)
//! | signature kind u8     0: unsigned (ends here)
//!                         1: Ed25519 | public key [32] | signature [64]
//! ```
//! The signature is over `"mindcastle/ref/v1\0"` followed by every byte before the kind
//! byte, so it covers the seq, the previous version's hash, the root, the disk, the ref
//! name, the time and the message: a signed version cannot be replayed under another
//! ref, another disk or another place in the history. Integers are little-endian.

use crate::error::{Error, Result};
use crate::format::bytes::{Put, Reader};
use crate::format::chunk_id::ChunkId;
use crate::format::root::RootRef;

const MAGIC: &[u8; 8] = b"MCREFV01";
/// Version of the layout written.
pub const REF_VERSION: u32 = 1;
/// What the signature's message starts with (domain separation).
const SIGNING_CONTEXT: &[u8] = b"mindcastle/ref/v1\0";
/// Longest ref name.
pub const MAX_REF_NAME: usize = 128;
/// Longest message.
const MAX_MESSAGE: usize = 64 << 10;
const SIG_NONE: u8 = 0;
const SIG_ED25519: u8 = 1;

/// An Ed25519 signature with the public key that made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature {
    /// The signer's public key.
    pub public_key: [u8; 32],
    /// The signature.
    pub signature: [u8; 64],
}

/// One version of a ref.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefVersion {
    /// 1 for the first version; each later one is the previous plus one.
    pub seq: u64,
    /// Hash of the previous version's bytes (`ChunkId::of`); zeros for seq 1.
    pub previous: [u8; 32],
    /// The disk state.
    pub root: RootRef,
    /// Disk size in bytes.
    pub disk_size: u64,
    /// The uuid of the disk that pushed it.
    pub disk_uuid: [u8; 16],
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The ref's name.
    pub name: String,
    /// Free text.
    pub message: String,
    /// Present when signed.
    pub signature: Option<Signature>,
}

/// Checks a ref name: 1-128 characters of `A-Z a-z 0-9 . _ -` and `/` between parts,
/// no part starting with `.` (so no `..`, and a name never escapes `refs/`).
pub fn check_name(name: &str) -> Result<()> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let parts_ok = name
        .split('/')
        .all(|p| !p.is_empty() && !p.starts_with('.') && p.chars().all(ok_char));
    if name.is_empty() || name.len() > MAX_REF_NAME || !parts_ok {
        return Err(Error::invalid(format!(
            "'{name}' is not a ref name: use 1-{MAX_REF_NAME} letters, digits, '.', '_', '-', \
             and '/' between parts (like main, stable, images/web-1.2)"
        )));
    }
    Ok(())
}

/// The object name of version `seq` of ref `name`, below the remote's prefix.
pub fn object_name(name: &str, seq: u64) -> String {
    format!("refs/{name}/{seq:020}")
}

/// The seq of an object name's last part (`00000000000000000042` -> 42).
pub fn seq_of(file_name: &str) -> Option<u64> {
    if file_name.len() != 20 || !file_name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    file_name.parse().ok()
}

impl RefVersion {
    /// The bytes the signature covers (everything before the kind byte), without the
    /// signing context.
    fn body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(200 + self.name.len() + self.message.len());
        out.extend_from_slice(MAGIC);
        out.put_u32(REF_VERSION);
        out.put_u64(self.seq);
        out.extend_from_slice(&self.previous);
        out.extend_from_slice(&self.root.id.0);
        out.put_u32(self.root.size);
        out.extend_from_slice(&self.root.tag);
        out.put_u64(self.disk_size);
        out.extend_from_slice(&self.disk_uuid);
        out.put_u64(self.time_ms);
        out.put_str(&self.name);
        out.put_str(&self.message);
        out
    }

    /// The message an Ed25519 signature is made over.
    pub fn signed_message(&self) -> Vec<u8> {
        let mut m = SIGNING_CONTEXT.to_vec();
        m.extend_from_slice(&self.body());
        m
    }

    /// The stored bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.body();
        match &self.signature {
            None => out.push(SIG_NONE),
            Some(s) => {
                out.push(SIG_ED25519);
                out.extend_from_slice(&s.public_key);
                out.extend_from_slice(&s.signature);
            }
        }
        out
    }

    /// Parses stored bytes (`what` names them in errors). Checks the layout only; the
    /// signature is checked by [`crate::volume::refs`] against the keys a reader trusts.
    pub fn decode(bytes: &[u8], what: &str) -> Result<Self> {
        let bad = |e: Error| Error::corrupt(format!("{what}: not a ref version: {e}"));
        let mut r = Reader::new(bytes, "ref version");
        let magic: [u8; 8] = r.array().map_err(bad)?;
        if &magic != MAGIC {
            return Err(Error::corrupt(format!(
                "{what}: not a ref version (bad magic)"
            )));
        }
        let version = r.u32().map_err(bad)?;
        if version != REF_VERSION {
            return Err(Error::corrupt(format!(
                "{what}: ref version format {version} is not known to this build (it reads {REF_VERSION})"
            )));
        }
        let seq = r.u64().map_err(bad)?;
        let previous = r.array().map_err(bad)?;
        let root = RootRef {
            id: ChunkId(r.array().map_err(bad)?),
            size: r.u32().map_err(bad)?,
            tag: r.array().map_err(bad)?,
        };
        let disk_size = r.u64().map_err(bad)?;
        let disk_uuid = r.array().map_err(bad)?;
        let time_ms = r.u64().map_err(bad)?;
        let name = r.string(MAX_REF_NAME).map_err(bad)?;
        let message = r.string(MAX_MESSAGE).map_err(bad)?;
        let signature = match r.u8().map_err(bad)? {
            SIG_NONE => None,
            SIG_ED25519 => Some(Signature {
                public_key: r.array().map_err(bad)?,
                signature: r.array().map_err(bad)?,
            }),
            k => {
                return Err(Error::corrupt(format!(
                    "{what}: unknown signature kind {k}"
                )))
            }
        };
        r.finish().map_err(bad)?;
        if seq == 0 {
            return Err(Error::corrupt(format!(
                "{what}: seq 0 (versions start at 1)"
            )));
        }
        Ok(Self {
            seq,
            previous,
            root,
            disk_size,
            disk_uuid,
            time_ms,
            name,
            message,
            signature,
        })
    }

    /// This version's hash, which the next version names as `previous`.
    pub fn hash(&self) -> [u8; 32] {
        ChunkId::of(&self.encode()).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(signed: bool) -> RefVersion {
        RefVersion {
            seq: 2,
            previous: [0x11; 32],
            root: RootRef {
                id: ChunkId([0x22; 32]),
                size: 0x1234,
                tag: [0x33; 16],
            },
            disk_size: 1 << 30,
            disk_uuid: [0x44; 16],
            time_ms: 1_780_000_000_000,
            name: "main".into(),
            message: "v2".into(),
            signature: signed.then_some(Signature {
                public_key: [0x55; 32],
                signature: [0x66; 64],
            }),
        }
    }

    #[test]
    fn round_trips_and_matches_the_golden_bytes() -> Result<()> {
        for signed in [false, true] {
            let v = sample(signed);
            let bytes = v.encode();
            assert_eq!(RefVersion::decode(&bytes, "t")?, v);
            let file = if signed {
                "ref-version-v1-signed.bin"
            } else {
                "ref-version-v1.bin"
            };
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(file);
            if std::env::var_os("MINDCASTLE_WRITE_GOLDEN").is_some() {
                std::fs::write(&path, &bytes).map_err(|e| Error::io("golden", e))?;
            }
            let golden = std::fs::read(&path).map_err(|e| Error::io("golden", e))?;
            assert_eq!(
                bytes, golden,
                "{file} changed: a format change needs a new version"
            );
        }
        Ok(())
    }

    #[test]
    fn damaged_bytes_are_refused() {
        let bytes = sample(true).encode();
        for cut in 0..bytes.len() {
            assert!(
                RefVersion::decode(&bytes[..cut], "t").is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(RefVersion::decode(&longer, "t").is_err());
        let mut kind = sample(false).encode();
        if let Some(last) = kind.last_mut() {
            *last = 9;
        }
        assert!(RefVersion::decode(&kind, "t").is_err());
    }

    #[test]
    fn names() {
        for ok in ["main", "images/web-1.2", "v1_0"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/main", "main/", "a//b", "..", "a/../b", ".hidden", "a b", "é",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(object_name("main", 42), "refs/main/00000000000000000042");
        assert_eq!(seq_of("00000000000000000042"), Some(42));
        assert_eq!(seq_of("42"), None);
        assert_eq!(seq_of("0000000000000000004x"), None);
    }
}
