//! The files of one disk: the `.swap` file (written atomically), the data folder beside
//! it, and the lock that keeps a second writer out.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
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
    // A name of its own per writer: two readers fast-forwarding one followed `.swap`
    // (each under a shared lock) may rewrite it at once.
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
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
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        ctx(e)
    })?;
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

/// Name of the file in a data folder that names the disk owning it.
pub const OWNER_FILE: &str = "owner";

/// Makes sure the data folder `dir` belongs to disk `uuid` before it is opened to write:
/// a folder with no `owner` file (made before 2026-12-02, or new) is claimed; one owned
/// by another disk is refused, since two disks writing one folder would each collect
/// the other's chunks as garbage. Call with the folder's exclusive lock held.
///
/// `owner` (text, version 1): the owning disk's uuid and a newline.
pub fn claim_folder(dir: &Path, uuid: &str, swap_path: &Path) -> Result<()> {
    let path = dir.join(OWNER_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => {
            let owner = text.trim();
            if owner == uuid {
                return Ok(());
            }
            Err(Error::invalid(format!(
                "{} is disk {uuid}, but its data folder {} belongs to disk {owner} (its {}): \
                 two disks writing one folder would delete each other's chunks, so it is \
                 not opened for writing. Read it with --read-only, or make a writable disk \
                 of its own from the owner with: mindcastle clone OWNER.swap NEW.swap",
                swap_path.display(),
                dir.display(),
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tmp = dir.join(format!(".{OWNER_FILE}.tmp"));
            let ctx = |e| Error::io(format!("writing {}", path.display()), e);
            let mut f = File::create(&tmp).map_err(ctx)?;
            f.write_all(format!("{uuid}\n").as_bytes()).map_err(ctx)?;
            f.sync_all().map_err(ctx)?;
            drop(f);
            fs::rename(&tmp, &path).map_err(ctx)?;
            sync_dir(dir)
        }
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// The process holding the exclusive lock on `dir/lock`, found from the kernel's lock
/// table (`/proc/locks` lists every flock with its owner's PID and the file's device and
/// inode), never from a PID written into the file: a process that wrote its PID there
/// and then failed may be gone, and the number reused.
pub fn lock_holder(dir: &Path) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir.join("lock")).ok()?;
    let dev = meta.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let table = fs::read_to_string("/proc/locks").ok()?;
    holder_in_table(&table, &want)
}

/// The PID of the WRITE flock on the file `dev_ino` (`MAJ:MIN:INODE`) in `/proc/locks`
/// text; waiters (lines with `->`) are not holders.
fn holder_in_table(table: &str, dev_ino: &str) -> Option<i32> {
    table.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE START END"
        match f.as_slice() {
            [_, "FLOCK", _, "WRITE", pid, file, ..] if *file == dev_ino => pid.parse().ok(),
            _ => None,
        }
    })
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
                let who = match lock_holder(dir) {
                    Some(pid) => format!("process {pid}"),
                    None => "another process".to_string(),
                };
                return Err(Error::new(
                    ErrorKind::Busy,
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
            // For people reading the folder; programs ask the kernel (`lock_holder`).
            let _ = file.set_len(0);
            let _ = file.write_all(format!("{}\n", std::process::id()).as_bytes());
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_lock_table_names_the_writer_not_a_waiter_or_reader() {
        let table = "1: FLOCK  ADVISORY  READ 10 fe:00:77 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 11 fe:00:78 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 12 fe:00:77 0 EOF\n\
                     3: FLOCK  ADVISORY  WRITE 13 fe:00:77 0 EOF\n";
        assert_eq!(holder_in_table(table, "fe:00:77"), Some(13));
        assert_eq!(holder_in_table(table, "fe:00:78"), Some(11));
        assert_eq!(holder_in_table(table, "fe:00:79"), None);
    }

    #[test]
    fn a_held_lock_is_found_in_the_kernel_table() {
        let dir = tempfile::tempdir().unwrap();
        let held = DiskLock::take(dir.path(), true).unwrap();
        assert_eq!(lock_holder(dir.path()), Some(std::process::id() as i32));
        drop(held);
        assert_eq!(lock_holder(dir.path()), None);
    }
}
