//! Fetch counters kept across runs, so `info` can say what a disk attached from
//! fallbacks has fetched: each URL fallback of a disk opened for writing adds its
//! requests and body bytes to `fetched.json` in the disk's data folder when it closes.
//!
//! Layout (JSON, version 1):
//!
//! ```text
//! {"version": 1, "sources": [{"url": "http://host/pub", "requests": 12, "bytes": 3456}]}
//! ```
//!
//! `url` is the `fallback=` value (without a trailing `/`); `requests` counts every
//! request made to it (retries included), `bytes` the body bytes received. The file is
//! replaced whole (a temporary file, then a rename) and never synced: losing the last
//! counts to a power cut costs nothing, and a damaged file is logged and started over,
//! never an error for the disk. Only the process holding the disk's lock writes it.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file's name in the data folder.
pub const FILE: &str = "fetched.json";
const VERSION: u32 = 1;

/// What one source has served, over every run that closed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceCount {
    /// The `fallback=` URL.
    pub url: String,
    /// Requests made.
    pub requests: u64,
    /// Body bytes received.
    pub bytes: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct FetchLog {
    version: u32,
    sources: Vec<SourceCount>,
}

/// The counts recorded in `dir` (none when the file is missing or unreadable).
pub fn load(dir: &Path) -> Vec<SourceCount> {
    let path = dir.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "fetch counters unreadable");
            return Vec::new();
        }
    };
    match serde_json::from_str::<FetchLog>(&text) {
        Ok(l) if l.version == VERSION => l.sources,
        Ok(l) => {
            tracing::warn!(path = %path.display(), version = l.version, "fetch counters of an unknown version; starting over");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "fetch counters damaged; starting over");
            Vec::new()
        }
    }
}

/// Adds one run's counts for `url` to the file in `dir`.
pub fn add(dir: &Path, url: &str, requests: u64, bytes: u64) -> Result<()> {
    let mut sources = load(dir);
    match sources.iter_mut().find(|s| s.url == url) {
        Some(s) => {
            s.requests = s.requests.saturating_add(requests);
            s.bytes = s.bytes.saturating_add(bytes);
        }
        None => sources.push(SourceCount {
            url: url.to_string(),
            requests,
            bytes,
        }),
    }
    let text = serde_json::to_string(&FetchLog {
        version: VERSION,
        sources,
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, text + "\n")
        .and_then(|()| std::fs::rename(&tmp, dir.join(FILE)))
        .map_err(|e| Error::io(format!("writing {}", dir.join(FILE).display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up_per_source_and_a_damaged_file_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).is_empty());
        add(dir.path(), "http://a/p", 3, 100).unwrap();
        add(dir.path(), "s3://b/q", 1, 7).unwrap();
        add(dir.path(), "http://a/p", 2, 50).unwrap();
        let got = load(dir.path());
        assert_eq!(
            got,
            vec![
                SourceCount {
                    url: "http://a/p".into(),
                    requests: 5,
                    bytes: 150
                },
                SourceCount {
                    url: "s3://b/q".into(),
                    requests: 1,
                    bytes: 7
                },
            ]
        );
        std::fs::write(dir.path().join(FILE), "{not json").unwrap();
        assert!(load(dir.path()).is_empty());
        add(dir.path(), "http://a/p", 1, 1).unwrap();
        assert_eq!(load(dir.path()).len(), 1);
        std::fs::write(dir.path().join(FILE), r#"{"version":9,"sources":[]}"#).unwrap();
        assert!(load(dir.path()).is_empty());
    }
}
