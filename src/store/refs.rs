//! Small named objects beside a remote's chunks (`refs/NAME/SEQ`, `refs/NAME/HEAD`):
//! the one place a remote holds anything but content-addressed chunks.
//!
//! [`RefStore::create`] is create-only and atomic wherever the service is: a folder
//! links a complete, fsynced temporary file to the name (`link(2)` fails with EEXIST
//! when the name exists, on every local file system and NFS), object stores use
//! `PutMode::Create` (S3 `If-None-Match: *`, GCS generation 0, Azure
//! `If-None-Match: *`). A store without it (object_store's HTTP/WebDAV store) refuses
//! with a clear error: a ref is never moved by a plain overwrite.
//!
//! `put` overwrites and is only for hints a reader never trusts (`HEAD`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// Create-only and plain objects by name (names are `/`-separated, relative to the
/// remote's prefix, and checked by the caller).
pub trait RefStore: Send + Sync {
    /// Creates `name` with `bytes` unless it exists: true when this call created it,
    /// false when the name was there (whatever it holds). An error may come after the
    /// object was created (a lost answer): callers read it back to know.
    fn create(&self, name: &str, bytes: &[u8]) -> Result<bool>;
    /// The object's bytes, or None when absent.
    fn get(&self, name: &str) -> Result<Option<Vec<u8>>>;
    /// Writes `name` whether or not it exists (hints only).
    fn put(&self, name: &str, bytes: &[u8]) -> Result<()>;
    /// Removes `name` (absent is fine).
    fn delete(&self, name: &str) -> Result<()>;
    /// The names directly below the folder `dir` (last parts only).
    fn list_dir(&self, dir: &str) -> Result<Vec<String>>;
    /// Every object below the folder `dir` ("" for all), at any depth, with its size and
    /// modification time (names relative to the remote, `/`-separated).
    fn list_meta(&self, dir: &str) -> Result<Vec<Listed>>;
    /// For messages: the folder or URL.
    fn describe(&self) -> String;
    /// Removes temporary files older than `age` that killed writers left (a folder's
    /// `.tmp-*`; object stores put whole objects and leave none). Returns how many.
    fn remove_stale_temporaries(&self, _age: std::time::Duration) -> Result<usize> {
        Ok(0)
    }
}

/// An object as a listing shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Its name, relative to the remote.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Last modified, unix milliseconds (the server's clock).
    pub modified_ms: u64,
}

/// Refs in a local folder (the folder a `push` to a path writes).
pub struct FolderRefs {
    dir: PathBuf,
}

impl FolderRefs {
    /// Refs below `dir` (created on the first write).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `bytes` to a fsynced temporary file in `path`'s folder and returns it.
    fn temporary(&self, path: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let parent = path
            .parent()
            .ok_or_else(|| Error::internal("a ref path has no folder"))?;
        let tmp = parent.join(format!(
            ".tmp-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        // The folder may be removed between the two steps by a `delete` that found it
        // empty: make it again then.
        let mut tries = 0;
        let mut f = loop {
            fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
            match File::create(&tmp) {
                Ok(f) => break f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 8 => tries += 1,
                Err(e) => return Err(Error::io(format!("creating {}", tmp.display()), e)),
            }
        };
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| {
                let _ = fs::remove_file(&tmp);
                Error::io(format!("writing {}", tmp.display()), e)
            })?;
        Ok(tmp)
    }
}

fn sync_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) => super::local::sync_dir(p),
        None => Ok(()),
    }
}

impl RefStore for FolderRefs {
    fn create(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let path = self.path(name);
        let tmp = self.temporary(&path, bytes)?;
        let linked = fs::hard_link(&tmp, &path);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                sync_parent(&path)?;
                Ok(true)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(Error::io(format!("creating {}", path.display()), e)),
        }
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(name);
        let tmp = self.temporary(&path, bytes)?;
        fs::rename(&tmp, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io(format!("writing {}", path.display()), e)
        })?;
        sync_parent(&path)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let path = self.path(name);
        match fs::remove_file(&path) {
            Ok(()) => {
                // An emptied folder goes too (`locks/` after the last lock), so a
                // pushed folder holds only what it needs; one in use stays.
                match path.parent().filter(|p| *p != self.dir) {
                    Some(p) if fs::remove_dir(p).is_ok() => sync_parent(p),
                    _ => sync_parent(&path),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let path = self.path(dir);
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("listing {}", path.display()), e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
            if let Some(n) = ent.file_name().to_str() {
                if !n.starts_with('.') {
                    out.push(n.to_string());
                }
            }
        }
        Ok(out)
    }

    fn list_meta(&self, dir: &str) -> Result<Vec<Listed>> {
        let mut out = Vec::new();
        let mut todo = vec![self.path(dir)];
        while let Some(d) = todo.pop() {
            let rd = match fs::read_dir(&d) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(format!("listing {}", d.display()), e)),
            };
            for ent in rd {
                let ent = ent.map_err(|e| Error::io(format!("listing {}", d.display()), e))?;
                let name = ent.file_name();
                if name.to_string_lossy().starts_with('.') {
                    continue;
                }
                let meta = ent
                    .metadata()
                    .map_err(|e| Error::io(format!("reading {}", ent.path().display()), e))?;
                if meta.is_dir() {
                    todo.push(ent.path());
                    continue;
                }
                let Ok(rel) = ent.path().strip_prefix(&self.dir).map(|r| r.to_path_buf()) else {
                    continue;
                };
                let modified_ms = meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                out.push(Listed {
                    name: rel.to_string_lossy().into_owned(),
                    size: meta.len(),
                    modified_ms,
                });
            }
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn remove_stale_temporaries(&self, age: std::time::Duration) -> Result<usize> {
        let mut removed = 0;
        let mut todo = vec![self.dir.join("refs"), self.dir.join("locks")];
        while let Some(d) = todo.pop() {
            let Ok(rd) = fs::read_dir(&d) else {
                continue;
            };
            for ent in rd.flatten() {
                let Ok(meta) = ent.metadata() else {
                    continue;
                };
                if meta.is_dir() {
                    todo.push(ent.path());
                    continue;
                }
                let old = meta
                    .modified()
                    .ok()
                    .and_then(|m| m.elapsed().ok())
                    .is_some_and(|e| e >= age);
                if old && ent.file_name().to_string_lossy().starts_with(".tmp-") {
                    fs::remove_file(ent.path())
                        .map_err(|e| Error::io(format!("removing {}", ent.path().display()), e))?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// True for an error that may have come after the service acted (a timeout, a
/// connection cut), as opposed to a clear refusal.
pub fn answer_maybe_lost(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_creates_once() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let refs = FolderRefs::new(dir.path());
        assert!(refs.create("refs/main/1", b"a")?);
        assert!(!refs.create("refs/main/1", b"b")?);
        assert_eq!(refs.get("refs/main/1")?, Some(b"a".to_vec()));
        assert_eq!(refs.get("refs/main/2")?, None);
        refs.put("refs/main/HEAD", b"x")?;
        refs.put("refs/main/HEAD", b"y")?;
        assert_eq!(refs.get("refs/main/HEAD")?, Some(b"y".to_vec()));
        let mut names = refs.list_dir("refs/main")?;
        names.sort();
        assert_eq!(names, vec!["1".to_string(), "HEAD".to_string()]);
        refs.delete("refs/main/1")?;
        refs.delete("refs/main/1")?;
        assert_eq!(refs.get("refs/main/1")?, None);
        // A killed writer's temporary goes once old enough, nothing else does.
        fs::write(dir.path().join("refs/main/.tmp-1-x"), b"torn")
            .map_err(|e| Error::io("tmp", e))?;
        assert_eq!(
            refs.remove_stale_temporaries(std::time::Duration::from_secs(3600))?,
            0
        );
        assert_eq!(refs.remove_stale_temporaries(std::time::Duration::ZERO)?, 1);
        assert_eq!(refs.get("refs/main/HEAD")?, Some(b"y".to_vec()));
        Ok(())
    }

    #[test]
    fn racing_threads_create_a_name_once() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let refs = FolderRefs::new(dir.path());
        for round in 0..20 {
            let name = format!("refs/r/{round}");
            let won: Vec<bool> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..4u8)
                    .map(|i| {
                        let (refs, name) = (&refs, &name);
                        s.spawn(move || refs.create(name, &[i]))
                    })
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().ok().and_then(|r| r.ok()).unwrap_or(false))
                    .collect()
            });
            assert_eq!(won.iter().filter(|w| **w).count(), 1, "round {round}");
        }
        Ok(())
    }
}
