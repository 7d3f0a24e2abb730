//! The files of one disk: the `.swap` file (written atomically), the data folder beside
//! it, and the lock that keeps a second writer out.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::format::swapfile::SwapFile;
use crate::store::local::sync_dir;

/// Reads and parses a `.swap` file. A file that is not text is refused as not a disk;
/// one that others may read gets a loud warning (it holds the disk key).
pub fn read_swap(path: &Path) -> Result<SwapFile> {
    let bytes = fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        Error::invalid(format!(
            "{}: not a .swap file (it is not text; a disk's .swap holds key=value lines)",
            path.display()
        ))
    })?;
    let swap = SwapFile::parse(&text, &path.display().to_string())?;
    warn_if_readable_by_others(path);
    Ok(swap)
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = fs::metadata(path) {
        if m.permissions().mode() & 0o044 != 0 {
            tracing::warn!(
                "{} is readable by other users, and it holds the disk key: anyone who can read \
                 it can read the disk. Run: chmod 600 {}",
                path.display(),
                path.display()
            );
        }
    }
}

/// The folder beside the `.swap` file (for relative names).
pub fn base_dir(swap_path: &Path) -> PathBuf {
    match swap_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The data folder of a disk: `swapdata=` if given, else `swapdata-UUID` beside the file.
pub fn data_dir(swap_path: &Path, swap: &SwapFile) -> PathBuf {
    let base = base_dir(swap_path);
    match &swap.swapdata {
        Some(d) => base.join(d),
        None => base.join(format!("swapdata-{}", swap.uuid)),
    }
}

/// Replaces `path` with `text` atomically: temp file, fsync, rename, fsync the folder.
/// The file is created with mode 0600 because it holds the key.
pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let dir = base_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk.swap".into());
    let tmp = dir.join(format!(".{name}.tmp"));
    let ctx = |e| Error::io(format!("writing {}", path.display()), e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ctx)?;
    f.write_all(text.as_bytes()).map_err(ctx)?;
    f.sync_all().map_err(ctx)?;
    drop(f);
    fs::rename(&tmp, path).map_err(ctx)?;
    sync_dir(&dir)
}

/// Creates a new `.swap` file; refuses to overwrite. The file appears whole or not at
/// all: it is written and synced under a temporary name, then hard-linked to `path`
/// (which fails if `path` exists), so a crash never leaves a half-written `.swap`.
pub fn create_swap(path: &Path, swap: &SwapFile) -> Result<()> {
    let exists = || {
        Error::invalid(format!(
            "{} already exists; not overwriting it",
            path.display()
        ))
    };
    if path.exists() {
        return Err(exists());
    }
    let dir = base_dir(path);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk.swap".into());
    let tmp = dir.join(format!(".{name}.new"));
    let ctx = |e: std::io::Error| Error::io(format!("creating {}", path.display()), e);
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(ctx)?;
    f.write_all(swap.render().as_bytes()).map_err(ctx)?;
    f.sync_all().map_err(ctx)?;
    drop(f);
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(&dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(exists()),
        Err(e) => Err(ctx(e)),
    }
}

/// An exclusive (writer) or shared (reader) lock on the data folder's `lock` file.
pub struct DiskLock {
    _file: File,
}

impl DiskLock {
    /// Takes the lock or fails naming the holder's PID.
    pub fn take(dir: &Path, exclusive: bool) -> Result<Self> {
        let path = dir.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let try_lock = || {
            if exclusive {
                file.try_lock()
            } else {
                file.try_lock_shared()
            }
        };
        // A holder that is going away (a process that just closed the disk, or a child
        // forked by another thread that has not yet exec'd and closed its copy) gets a
        // moment before we say the disk is in use.
        let mut got = try_lock();
        for _ in 0..20 {
            if !matches!(got, Err(std::fs::TryLockError::WouldBlock)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
            got = try_lock();
        }
        match got {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let who = if pid.is_empty() {
                    "another process".to_string()
                } else {
                    format!("process {pid}")
                };
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    format!(
                        "disk {} is in use by {who} (lock {})",
                        dir.display(),
                        path.display()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", path.display()), e))
            }
        }
        if exclusive {
            let _ = file.set_len(0);
            let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        }
        Ok(Self { _file: file })
    }
}
