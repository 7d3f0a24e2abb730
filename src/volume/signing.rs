//! Ed25519 signing keys for ref versions (`mindcastle keygen`, `push --sign`), kept
//! apart from disk keys: a disk key lets a host read and write a disk; a signing key
//! lets its holder publish versions that readers trusting its public key accept.
//!
//! Key file (format version 1), one line, mode 0600:
//! ```text
//! mindcastle-signing-key-v1 ed25519 HEX64      (HEX64: the 32-byte Ed25519 seed)
//! ```
//! A public key is written `ed25519:HEX64`, as a `.swap` file's `trust=` line takes it.
//! Signing and checking use aws-lc-rs (already the project's crypto library).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::error::{Error, Result};
use crate::format::ref_version::{RefVersion, Signature};

const KEY_FILE_TAG: &str = "mindcastle-signing-key-v1 ed25519 ";

/// A loaded signing key.
pub struct Signer {
    pair: Ed25519KeyPair,
}

/// `ed25519:HEX64`, as `trust=` takes it.
pub fn public_key_text(k: &[u8; 32]) -> String {
    format!("ed25519:{}", hex::encode(k))
}

impl Signer {
    /// Makes a new key and writes it to `path` (mode 0600; refuses to overwrite).
    pub fn generate(path: &Path) -> Result<Self> {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed)
            .map_err(|_| Error::internal("the system's random source failed"))?;
        let pair = Self::from_seed(&seed, path)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        f.write_all(format!("{KEY_FILE_TAG}{}\n", hex::encode(seed)).as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(pair)
    }

    fn from_seed(seed: &[u8; 32], path: &Path) -> Result<Self> {
        let pair = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| Error::invalid(format!("{}: not an Ed25519 key: {e}", path.display())))?;
        Ok(Self { pair })
    }

    /// Loads the key at `path`; refuses a file that others can read (like ssh).
    pub fn load(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::invalid(format!(
                "{}: a signing key readable by others is refused (chmod 600 {})",
                path.display(),
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let seed = text
            .trim()
            .strip_prefix(KEY_FILE_TAG)
            .and_then(|h| {
                let mut s = [0u8; 32];
                hex::decode_to_slice(h.trim(), &mut s).ok().map(|()| s)
            })
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: not a signing key (make one with: mindcastle keygen FILE)",
                    path.display()
                ))
            })?;
        Self::from_seed(&seed, path)
    }

    /// The public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut k = [0u8; 32];
        let pk = self.pair.public_key().as_ref();
        if pk.len() == 32 {
            k.copy_from_slice(pk);
        }
        k
    }

    /// Signs `v` (replacing any signature it had).
    pub fn sign(&self, v: &mut RefVersion) {
        v.signature = None;
        let sig = self.pair.sign(&v.signed_message());
        let mut s = [0u8; 64];
        if sig.as_ref().len() == 64 {
            s.copy_from_slice(sig.as_ref());
        }
        v.signature = Some(Signature {
            public_key: self.public_key(),
            signature: s,
        });
    }
}

/// True when `v` carries a signature that its own public key verifies.
pub fn signature_holds(v: &RefVersion) -> bool {
    let Some(s) = &v.signature else {
        return false;
    };
    UnparsedPublicKey::new(&signature::ED25519, &s.public_key)
        .verify(&v.signed_message(), &s.signature)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::chunk_id::ChunkId;
    use crate::format::root::RootRef;

    fn version() -> RefVersion {
        RefVersion {
            seq: 1,
            previous: [0; 32],
            root: RootRef {
                id: ChunkId([7; 32]),
                size: 100,
                tag: [8; 16],
            },
            disk_size: 4096,
            disk_uuid: [9; 16],
            time_ms: 5,
            name: "main".into(),
            message: String::new(),
            signature: None,
        }
    }

    #[test]
    fn signatures_cover_every_field() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("k");
        let signer = Signer::generate(&path)?;
        assert!(Signer::generate(&path).is_err(), "never overwrites a key");
        let again = Signer::load(&path)?;
        assert_eq!(again.public_key(), signer.public_key());
        let mut v = version();
        assert!(!signature_holds(&v));
        signer.sign(&mut v);
        assert!(signature_holds(&v));
        let changes: [fn(&mut RefVersion); 9] = [
            |v| v.seq += 1,
            |v| v.previous[0] ^= 1,
            |v| v.root.id.0[0] ^= 1,
            |v| v.root.tag[0] ^= 1,
            |v| v.disk_size += 4096,
            |v| v.disk_uuid[0] ^= 1,
            |v| v.time_ms += 1,
            |v| v.name = "stable".into(),
            |v| v.message = "x".into(),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut w = v.clone();
            change(&mut w);
            assert!(!signature_holds(&w), "change {i} kept the signature valid");
        }
        Ok(())
    }

    /// Ed25519 is deterministic: a fixed seed signing a fixed version gives fixed bytes,
    /// so the signed layout (and what the signature covers) is pinned by a golden file.
    #[test]
    fn a_signed_version_matches_its_golden_bytes() -> Result<()> {
        let signer = Signer::from_seed(&[0x42; 32], Path::new("fixed"))?;
        let mut v = version();
        v.message = "golden".into();
        signer.sign(&mut v);
        assert!(signature_holds(&v));
        let bytes = v.encode();
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ref-version-v1-ed25519.bin");
        if std::env::var_os("MINDCASTLE_WRITE_GOLDEN").is_some() {
            std::fs::write(&path, &bytes).map_err(|e| Error::io("golden", e))?;
        }
        let golden = std::fs::read(&path).map_err(|e| Error::io("golden", e))?;
        assert_eq!(bytes, golden, "a format change needs a new version");
        let back = RefVersion::decode(&golden, "golden")?;
        assert!(signature_holds(&back));
        Ok(())
    }

    #[test]
    fn a_key_readable_by_others_is_refused() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let path = dir.path().join("k");
        Signer::generate(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io("chmod", e))?;
        let e = Signer::load(&path)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("chmod 600"), "{e}");
        Ok(())
    }
}
