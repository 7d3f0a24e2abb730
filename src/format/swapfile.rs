//! The `NAME.swap` metadata file: plain `key=value` lines (format of the original C
//! Mindcastle, kept compatible).
//!
//! ```text
//! uuid=UUID                     names the data folder swapdata-UUID beside the file
//! size=BYTES                    disk size, a multiple of 4096
//! key=HEX64                     256-bit disk key (the file is mode 0600)
//! snapshot=HEX64:SIZE           current root chunk id and its byte size (absent: empty disk)
//! snaphash=HEX32                the root's 128-bit AEAD tag
//! fallback=URL|DIR              zero or more (up to 8), searched in order for missing chunks
//! cache=DIR                     where chunks fetched from fallbacks are kept
//! cachesize=SIZE                bound of the cache folder (e.g. 20G; default 10G)
//! swapdata=DIR                  overrides the data folder
//! readonly=true|false           true: refuse every writable open (snapshot .swap files)
//! ref=NAME                      follow ref NAME at the fallbacks: opens take its newest
//!                               version while the disk has no writes of its own
//! refseq=N                      the version of ref= this state came from (and the oldest
//!                               one a later open accepts: rollback protection)
//! trust=ed25519:HEX64           zero or more: accept only versions signed by these keys
//! origin=UUID                   accept only versions pushed by this disk
//! ```
//! Blank lines and `#` comments are allowed; unknown keys are kept and written back.
//! Parsing is pure: it takes text and a name for messages.

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::root::RootRef;
use crate::format::BLOCK_SIZE;

/// The largest disk: 1 EiB (NBD clients take sizes as signed 64-bit numbers).
pub const MAX_DISK_SIZE: u64 = 1 << 60;

/// Why `size` cannot be a disk's size (a positive multiple of 4096 up to
/// [`MAX_DISK_SIZE`]), or None when it can: the one rule for `size=`, `create`,
/// `resize` and a ref version's size.
pub fn bad_disk_size(size: u64) -> Option<String> {
    if size == 0 || !size.is_multiple_of(BLOCK_SIZE as u64) {
        Some(format!("size {size} is not a positive multiple of 4096"))
    } else if size > MAX_DISK_SIZE {
        Some(format!(
            "size {size} is larger than the largest disk ({MAX_DISK_SIZE} bytes, 1 EiB)"
        ))
    } else {
        None
    }
}

/// Most fallbacks honoured, as in the original.
pub const MAX_FALLBACKS: usize = 8;

/// Parsed `.swap` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwapFile {
    /// Disk UUID (text as written).
    pub uuid: String,
    /// Disk size in bytes.
    pub size: u64,
    /// Disk key; None until made.
    pub key: Option<[u8; 32]>,
    /// Current root.
    pub snapshot: Option<RootRef>,
    /// Fallback locations in order.
    pub fallbacks: Vec<String>,
    /// Cache folder.
    pub cache: Option<String>,
    /// Bound of the cache folder in bytes.
    pub cache_size: Option<u64>,
    /// Data folder override.
    pub swapdata: Option<String>,
    /// `readonly=true`: the disk may only be opened read-only.
    pub read_only: bool,
    /// `ref=`: the ref followed at the fallbacks.
    pub follow: Option<String>,
    /// `refseq=`: the version of the followed ref this state came from (0: none yet).
    pub ref_seq: u64,
    /// `trust=`: Ed25519 public keys whose signed versions are accepted.
    pub trust: Vec<[u8; 32]>,
    /// `origin=`: the uuid of the disk whose versions are accepted.
    pub origin: Option<String>,
    /// Unknown keys, in order, kept verbatim.
    pub extra: Vec<(String, String)>,
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut a = [0u8; N];
    if s.len() != 2 * N {
        return None;
    }
    hex::decode_to_slice(s, &mut a).ok()?;
    Some(a)
}

impl SwapFile {
    /// A new disk description.
    pub fn new(uuid: String, size: u64, key: [u8; 32]) -> Self {
        Self {
            uuid,
            size,
            key: Some(key),
            snapshot: None,
            fallbacks: Vec::new(),
            cache: None,
            cache_size: None,
            swapdata: None,
            read_only: false,
            follow: None,
            ref_seq: 0,
            trust: Vec::new(),
            origin: None,
            extra: Vec::new(),
        }
    }

    /// Parses `text`; `name` (the file path) prefixes every error with `name:line:`.
    pub fn parse(text: &str, name: &str) -> Result<Self> {
        let mut uuid = None;
        let mut size = None;
        let mut key = None;
        let mut snap: Option<(ChunkId, u32, usize)> = None;
        let mut snaphash: Option<([u8; 16], usize)> = None;
        let mut fallbacks = Vec::new();
        let mut cache = None;
        let mut cache_size = None;
        let mut swapdata = None;
        let mut read_only = None;
        let mut follow = None;
        let mut ref_seq = None;
        let mut trust = Vec::new();
        let mut origin = None;
        let mut extra = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let err = |what: String| Error::invalid(format!("{name}:{n}: {what}"));
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| err(format!("expected key=value, found '{line}'")))?;
            let (k, v) = (k.trim(), v.trim());
            let dup = |seen: bool| -> Result<()> {
                if seen {
                    Err(err(format!("'{k}' given twice")))
                } else {
                    Ok(())
                }
            };
            match k {
                "uuid" => {
                    dup(uuid.is_some())?;
                    if uuid::Uuid::parse_str(v).is_err() {
                        return Err(err(format!(
                            "uuid '{v}' is not a UUID (like 0e5b8d5c-…, as `create` writes)"
                        )));
                    }
                    uuid = Some(v.to_string());
                }
                "size" => {
                    dup(size.is_some())?;
                    let s: u64 = v
                        .parse()
                        .map_err(|_| err(format!("size '{v}' is not a number of bytes")))?;
                    if let Some(why) = bad_disk_size(s) {
                        return Err(err(why));
                    }
                    size = Some(s);
                }
                "key" => {
                    dup(key.is_some())?;
                    key = Some(
                        hex_array::<32>(v)
                            .ok_or_else(|| err("key is not 64 hex digits".to_string()))?,
                    );
                }
                "snapshot" => {
                    dup(snap.is_some())?;
                    let (h, s) = v
                        .split_once(':')
                        .ok_or_else(|| err(format!("snapshot '{v}' is not HEX64:SIZE")))?;
                    let id = ChunkId(
                        hex_array::<32>(h)
                            .ok_or_else(|| err("snapshot id is not 64 hex digits".into()))?,
                    );
                    let sz: u32 = s
                        .parse()
                        .map_err(|_| err(format!("snapshot size '{s}' is not a number")))?;
                    snap = Some((id, sz, n));
                }
                "snaphash" => {
                    dup(snaphash.is_some())?;
                    let h = hex_array::<16>(v)
                        .ok_or_else(|| err("snaphash is not 32 hex digits".into()))?;
                    snaphash = Some((h, n));
                }
                "fallback" => {
                    if v.is_empty() {
                        return Err(err("empty fallback".into()));
                    }
                    if fallbacks.len() >= MAX_FALLBACKS {
                        return Err(err(format!("more than {MAX_FALLBACKS} fallbacks")));
                    }
                    fallbacks.push(v.to_string());
                }
                "cache" => {
                    dup(cache.is_some())?;
                    cache = Some(v.to_string());
                }
                "cachesize" => {
                    dup(cache_size.is_some())?;
                    cache_size = Some(
                        crate::format::size::parse_size(v)
                            .map_err(|e| err(format!("cachesize: {e}")))?,
                    );
                }
                "swapdata" => {
                    dup(swapdata.is_some())?;
                    swapdata = Some(v.to_string());
                }
                "readonly" => {
                    dup(read_only.is_some())?;
                    read_only = Some(match v {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(err(format!("readonly={v}: not true or false"))),
                    });
                }
                "ref" => {
                    dup(follow.is_some())?;
                    crate::format::ref_version::check_name(v).map_err(|e| err(e.to_string()))?;
                    follow = Some(v.to_string());
                }
                "refseq" => {
                    dup(ref_seq.is_some())?;
                    ref_seq = Some(
                        v.parse::<u64>()
                            .map_err(|_| err(format!("refseq '{v}' is not a version number")))?,
                    );
                }
                "trust" => {
                    let k = v
                        .strip_prefix("ed25519:")
                        .and_then(hex_array::<32>)
                        .ok_or_else(|| {
                            err(format!(
                                "trust '{v}' is not ed25519:HEX64 (a public key as \
                                 `mindcastle keygen` prints it)"
                            ))
                        })?;
                    trust.push(k);
                }
                "origin" => {
                    dup(origin.is_some())?;
                    if uuid::Uuid::parse_str(v).is_err() {
                        return Err(err(format!("origin '{v}' is not a disk uuid")));
                    }
                    origin = Some(v.to_string());
                }
                _ => extra.push((k.to_string(), v.to_string())),
            }
        }
        if follow.is_none() && (ref_seq.is_some() || !trust.is_empty() || origin.is_some()) {
            return Err(Error::invalid(format!(
                "{name}: refseq=, trust= and origin= are about a followed ref, and there is \
                 no ref= line"
            )));
        }
        if follow.is_some() && fallbacks.is_empty() {
            return Err(Error::invalid(format!(
                "{name}: ref= names a ref at the fallbacks, and there is no fallback= line"
            )));
        }
        let uuid = uuid.ok_or_else(|| Error::invalid(format!("{name}: no uuid= line")))?;
        let size = size.ok_or_else(|| Error::invalid(format!("{name}: no size= line")))?;
        let snapshot = match (snap, snaphash) {
            (None, None) => None,
            (Some((id, sz, _)), Some((tag, _))) => Some(RootRef { id, size: sz, tag }),
            (Some((_, _, n)), None) => {
                return Err(Error::invalid(format!(
                    "{name}:{n}: snapshot= without snaphash="
                )))
            }
            (None, Some((_, n))) => {
                return Err(Error::invalid(format!(
                    "{name}:{n}: snaphash= without snapshot="
                )))
            }
        };
        if cache_size.is_some() && cache.is_none() {
            return Err(Error::invalid(format!(
                "{name}: cachesize= without cache=: the bound is of a cache folder, and this \
                 disk has none (add cache=DIR, or remove cachesize=)"
            )));
        }
        if key.is_none() {
            return Err(Error::invalid(format!(
                "{name}: no key= line (every disk has one; `mindcastle create` writes it)"
            )));
        }
        Ok(Self {
            uuid,
            size,
            key,
            snapshot,
            fallbacks,
            cache,
            cache_size,
            swapdata,
            read_only: read_only.unwrap_or(false),
            follow,
            ref_seq: ref_seq.unwrap_or(0),
            trust,
            origin,
            extra,
        })
    }

    /// The text form, known keys first, then unknown keys in their original order.
    pub fn render(&self) -> String {
        let mut s = format!("uuid={}\nsize={}\n", self.uuid, self.size);
        if let Some(k) = &self.key {
            s += &format!("key={}\n", hex::encode(k));
        }
        if let Some(r) = &self.snapshot {
            s += &format!(
                "snapshot={}:{}\nsnaphash={}\n",
                r.id,
                r.size,
                hex::encode(r.tag)
            );
        }
        if let Some(d) = &self.swapdata {
            s += &format!("swapdata={d}\n");
        }
        if let Some(c) = &self.cache {
            s += &format!("cache={c}\n");
        }
        if let Some(c) = self.cache_size {
            s += &format!("cachesize={c}\n");
        }
        for f in &self.fallbacks {
            s += &format!("fallback={f}\n");
        }
        if self.read_only {
            s += "readonly=true\n";
        }
        if let Some(r) = &self.follow {
            s += &format!("ref={r}\n");
            if self.ref_seq > 0 {
                s += &format!("refseq={}\n", self.ref_seq);
            }
            for k in &self.trust {
                s += &format!("trust=ed25519:{}\n", hex::encode(k));
            }
            if let Some(o) = &self.origin {
                s += &format!("origin={o}\n");
            }
        }
        for (k, v) in &self.extra {
            s += &format!("{k}={v}\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "uuid=c15c75cd-81ed-7767-13ef-d6efafdcd0b7\nsize=67108864\n\
        key=d0ae708e60d2b27b7b324d203231a8ecc9569c13508be0d927b1aef18508b52b\n\
        snapshot=c9c1b69a6d48ccddca149e54b14409cd85de7d80cc87c6899bfce58c7a2c4956:589824\n\
        snaphash=5e41baa47804024873b695070d2fdfec\n\nfallback=http://127.0.0.1/x\ncolor=blue\n";

    #[test]
    fn parses_original_and_keeps_unknown_keys() -> Result<()> {
        let s = SwapFile::parse(GOOD, "d.swap")?;
        assert_eq!(s.size, 67108864);
        assert_eq!(s.fallbacks, vec!["http://127.0.0.1/x".to_string()]);
        assert_eq!(s.extra, vec![("color".to_string(), "blue".to_string())]);
        assert_eq!(SwapFile::parse(&s.render(), "d.swap")?, s);
        Ok(())
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=4097\n",
                "d.swap:2: size 4097 is not a positive multiple of 4096",
            ),
            (
                "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=4096\nkey=zz\n",
                "d.swap:3: key is not 64 hex digits",
            ),
            (
                "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nnonsense\n",
                "d.swap:2: expected key=value",
            ),
            (
                "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=x\n",
                "d.swap:2: size 'x' is not a number",
            ),
            ("size=4096\n", "d.swap: no uuid= line"),
            (
                "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nuuid=b\nsize=4096\n",
                "d.swap:2: 'uuid' given twice",
            ),
            (
                "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=4096\nsnapshot=00:1\n",
                "d.swap:3: snapshot id is not 64 hex",
            ),
            (
                "uuid=0e5b8d5c-3b5e-4b6e-9d3a-2f5c1e7a9b10\nsize=4096\ncachesize=1G\nkey=\
                 0000000000000000000000000000000000000000000000000000000000000000\n",
                "d.swap: cachesize= without cache=",
            ),
        ];
        for (text, want) in cases {
            match SwapFile::parse(text, "d.swap") {
                Ok(_) => panic!("accepted {text:?}"),
                Err(e) => assert!(e.to_string().starts_with(want), "{e} vs {want}"),
            }
        }
    }
}
