//! A FUSE filesystem holding one file, `disk`, whose bytes are the volume: opened with
//! direct I/O so every read and write reaches the volume (no page cache in between),
//! and `fsync` maps to a durable flush. `losetup` turns the file into a block device.
//!
//! The FUSE session reads requests in one thread; reads, writes and syncs are handed to
//! a few worker threads and answered from there, so the loop device's concurrent
//! requests are served concurrently (direct writes may run in parallel on Linux 6.2+).
//! An fsync covers every write already answered, which is all the kernel relies on.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    consts::FOPEN_DIRECT_IO, FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};

use crate::trace::ReadTrace;
use crate::volume::Volume;

const ROOT: u64 = 1;
const DISK: u64 = 2;
/// Name of the single file.
pub const DISK_NAME: &str = "disk";
const TTL: Duration = Duration::from_secs(1);

/// `FOPEN_PARALLEL_DIRECT_WRITES` (Linux 6.2+; older kernels ignore it): direct writes
/// to the file are not serialised by the inode lock.
const FOPEN_PARALLEL_DIRECT_WRITES: u32 = 1 << 6;

type Job = Box<dyn FnOnce() + Send>;

/// A few threads running jobs from one queue; they end when the sender is dropped.
struct Workers {
    tx: std::sync::mpsc::Sender<Job>,
}

impl Workers {
    fn new(n: usize) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(std::sync::Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("mindcastle-fuse-{i}"))
                .spawn(move || loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "starting a FUSE worker");
            }
        }
        Self { tx }
    }

    /// Runs `job` on a worker (or here, if none is running).
    fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(std::sync::mpsc::SendError(job)) = self.tx.send(Box::new(job)) {
            job();
        }
    }
}

/// The single-file filesystem.
pub struct DiskFs {
    vol: Arc<Volume>,
    trace: Option<Arc<ReadTrace>>,
    uid: u32,
    gid: u32,
    workers: Workers,
}

impl DiskFs {
    /// Serves `vol` as a file owned by `uid:gid`; reads are logged to `trace` when given.
    pub fn new(vol: Arc<Volume>, trace: Option<Arc<ReadTrace>>, uid: u32, gid: u32) -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8));
        Self {
            vol,
            trace,
            uid,
            gid,
            workers: Workers::new(threads),
        }
    }

    /// fsync and close: a durable flush of the volume.
    fn durable(&self, reply: ReplyEmpty) {
        let vol = self.vol.clone();
        self.workers.run(move || match vol.flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e.errno()),
        });
    }

    fn attr(&self, ino: u64) -> FileAttr {
        let (kind, perm, size, nlink) = if ino == ROOT {
            (FileType::Directory, 0o700, 0, 2)
        } else {
            (FileType::RegularFile, 0o600, self.vol.size(), 1)
        };
        FileAttr {
            ino,
            size,
            blocks: size / 512,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl Filesystem for DiskFs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        if parent == ROOT && name == DISK_NAME {
            reply.entry(&TTL, &self.attr(DISK), 0);
        } else {
            reply.error(libc::ENOENT);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match ino {
            ROOT | DISK => reply.attr(&TTL, &self.attr(ino)),
            _ => reply.error(libc::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        // The disk's size is fixed; opening with O_TRUNC must not "succeed" silently.
        if size.is_some_and(|s| s != self.vol.size()) {
            return reply.error(libc::EPERM);
        }
        reply.attr(&TTL, &self.attr(ino));
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        if ino == DISK {
            reply.opened(0, FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES);
        } else {
            reply.error(libc::EISDIR);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock: Option<u64>,
        reply: ReplyData,
    ) {
        if ino != DISK || offset < 0 {
            return reply.error(libc::EINVAL);
        }
        let off = offset as u64;
        let len = u64::from(size).min(self.vol.size().saturating_sub(off));
        if let Some(t) = &self.trace {
            t.record(off, len);
        }
        let vol = self.vol.clone();
        self.workers.run(move || {
            let mut buf = vec![0u8; len as usize];
            match vol.read_at(off, &mut buf) {
                Ok(()) => reply.data(&buf),
                Err(e) => {
                    tracing::error!(error = %e, offset = off, "read failed");
                    reply.error(e.errno())
                }
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        flags: i32,
        _lock: Option<u64>,
        reply: ReplyWrite,
    ) {
        if ino != DISK || offset < 0 {
            return reply.error(libc::EINVAL);
        }
        let off = offset as u64;
        if off.saturating_add(data.len() as u64) > self.vol.size() {
            return reply.error(libc::ENOSPC);
        }
        let sync = flags & (libc::O_SYNC | libc::O_DSYNC) != 0;
        let vol = self.vol.clone();
        let data = data.to_vec();
        self.workers.run(move || {
            match vol
                .write_at(off, &data)
                .and_then(|()| if sync { vol.flush() } else { Ok(()) })
            {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => {
                    tracing::error!(error = %e, offset = off, "write failed");
                    reply.error(e.errno())
                }
            }
        });
    }

    fn fsync(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.durable(reply);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        // close() of the file: make it durable too, so a loop device's release is safe.
        self.durable(reply);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let entries = [
            (ROOT, FileType::Directory, "."),
            (ROOT, FileType::Directory, ".."),
            (DISK, FileType::RegularFile, DISK_NAME),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(*ino, (i + 1) as i64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
