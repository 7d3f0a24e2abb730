//! Builds the store stack of one disk from its data folder and the `.swap` file's
//! `fallback=`, `cache=` and `cachesize=` lines:
//!
//! ```text
//! Fallback[ Verify(Local data folder),
//!           Cache(cache folder, Fallback[ Verify(fallback 1), Verify(fallback 2), ... ]) ]
//! ```
//! (no `Cache` without `cache=`; no second entry without `fallback=`; with
//! `whole_chunks`, the second entry is wrapped in [`super::whole::WholeChunkStore`]). Writes go to the
//! local data folder only. A `fallback=` is a folder holding `HEX64.lvl` files (a path,
//! relative to the `.swap` file's folder, or `file:///path`) or a URL (`http(s)://`,
//! `s3://`, `gs://`, `az://`; see [`super::remote`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::cache::{CacheStore, DEFAULT_CACHE_BYTES};
use super::fallback::FallbackStore;
use super::local::LocalStore;
use super::remote::RemoteStore;
use super::verify::VerifyStore;
use super::ChunkStore;
use crate::error::Result;

/// Wraps the local data folder's store (tests put a fault store there).
pub type WrapStore = Arc<dyn Fn(Arc<dyn ChunkStore>) -> Arc<dyn ChunkStore> + Send + Sync>;

/// What the stack is made of.
pub struct StackSpec<'a> {
    /// The disk's data folder.
    pub data_dir: &'a Path,
    /// Writable (creates the folder, removes a crashed writer's temporaries).
    pub writable: bool,
    /// The `.swap` file's folder (relative fallbacks and cache are resolved there).
    pub base_dir: &'a Path,
    /// `fallback=` values, in order.
    pub fallbacks: &'a [String],
    /// `cache=` value.
    pub cache: Option<&'a str>,
    /// `cachesize=` in bytes.
    pub cache_bytes: Option<u64>,
    /// Wraps the local store.
    pub wrap_local: Option<WrapStore>,
    /// Read the fallbacks' chunks only whole, each checked against its name (a reader
    /// that trusts only signed versions; see [`super::whole`]).
    pub whole_chunks: bool,
}

/// Where a `fallback=` value points.
#[derive(Debug, PartialEq, Eq)]
pub enum FallbackKind {
    /// A local folder.
    Folder(PathBuf),
    /// A URL served through `object_store`.
    Remote(String),
}

/// Classifies a `fallback=` value; relative folders are taken from `base_dir`.
pub fn classify(value: &str, base_dir: &Path) -> FallbackKind {
    if let Some(path) = value.strip_prefix("file://") {
        return FallbackKind::Folder(PathBuf::from(path));
    }
    if value.contains("://") {
        return FallbackKind::Remote(value.to_string());
    }
    FallbackKind::Folder(base_dir.join(value))
}

/// Opens the stack.
pub fn open(spec: &StackSpec<'_>) -> Result<Arc<dyn ChunkStore>> {
    let local: Arc<dyn ChunkStore> = if spec.writable {
        Arc::new(LocalStore::open_recycling(spec.data_dir)?)
    } else {
        Arc::new(LocalStore::open_read_only(spec.data_dir))
    };
    let local = match &spec.wrap_local {
        Some(wrap) => wrap(local),
        None => local,
    };
    let mut stores: Vec<Arc<dyn ChunkStore>> = vec![Arc::new(VerifyStore::new(local))];
    let mut behind: Vec<Arc<dyn ChunkStore>> = Vec::new();
    for f in spec.fallbacks {
        match classify(f, spec.base_dir) {
            FallbackKind::Folder(dir) => {
                behind.push(Arc::new(VerifyStore::new(Arc::new(
                    LocalStore::open_read_only(&dir),
                ))));
            }
            FallbackKind::Remote(url) => {
                let mut remote = RemoteStore::open(&url)?;
                if spec.writable {
                    remote = remote.with_fetch_log(spec.data_dir);
                }
                behind.push(Arc::new(VerifyStore::new(Arc::new(remote))));
            }
        }
    }
    if !behind.is_empty() {
        let remote: Arc<dyn ChunkStore> = Arc::new(FallbackStore::new(behind)?);
        let fetched: Arc<dyn ChunkStore> = match spec.cache {
            Some(dir) => Arc::new(CacheStore::open(
                &spec.base_dir.join(dir),
                spec.cache_bytes.unwrap_or(DEFAULT_CACHE_BYTES),
                remote,
            )?),
            None => remote,
        };
        // The local data folder holds only chunks this host stored under the hash of
        // their bytes (its writes, or copies `pull` checked): only what comes from
        // elsewhere needs whole-chunk reads.
        if spec.whole_chunks {
            stores.push(Arc::new(super::whole::WholeChunkStore::new(fetched)));
        } else {
            stores.push(fetched);
        }
    } else if let Some(dir) = spec.cache {
        tracing::warn!(
            cache = dir,
            "cache= has nothing to cache: the disk has no fallback="
        );
    }
    Ok(Arc::new(FallbackStore::new(stores)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `push` and `pull` hash what they copy only when the store they copy from does
    /// not: every stack a disk opens must check names, with a fallback, a cache and
    /// whole-chunk reads, writable or not.
    #[test]
    fn every_stack_checks_the_names_of_the_chunks_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("swapdata-x");
        let fallbacks = ["pub".to_string(), "http://127.0.0.1:9/d".to_string()];
        for writable in [true, false] {
            for n in 0..=fallbacks.len() {
                for cache in [None, Some("cache")] {
                    for whole_chunks in [false, true] {
                        let s = open(&StackSpec {
                            data_dir: &data,
                            writable,
                            base_dir: dir.path(),
                            fallbacks: &fallbacks[..n],
                            cache,
                            cache_bytes: None,
                            wrap_local: None,
                            whole_chunks,
                        })
                        .unwrap();
                        assert!(s.checks_names(), "{}", s.describe());
                    }
                }
            }
        }
    }

    #[test]
    fn fallback_values_are_told_apart() {
        let base = Path::new("/disks");
        assert_eq!(
            classify("pub/swapdata-x", base),
            FallbackKind::Folder(PathBuf::from("/disks/pub/swapdata-x"))
        );
        assert_eq!(
            classify("/srv/x", base),
            FallbackKind::Folder(PathBuf::from("/srv/x"))
        );
        assert_eq!(
            classify("file:///srv/x", base),
            FallbackKind::Folder(PathBuf::from("/srv/x"))
        );
        for url in [
            "http://h/x",
            "https://h/x",
            "s3://b/p",
            "gs://b",
            "az://c/p",
        ] {
            assert_eq!(classify(url, base), FallbackKind::Remote(url.into()));
        }
    }
}
