//! A FUSE filesystem holding one file, `disk`, whose bytes are the volume: opened with
//! direct I/O so every read and write reaches the volume (no page cache in between),
//! and `fsync` maps to a durable flush. `losetup` turns the file into a block device.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    consts::FOPEN_DIRECT_IO, FileAttr, FileType, Filesystem, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request, TimeOrNow,
};

use crate::error::{Error, ErrorKind};
use crate::trace::ReadTrace;
use crate::volume::Volume;

const ROOT: u64 = 1;
const DISK: u64 = 2;
/// Name of the single file.
pub const DISK_NAME: &str = "disk";
const TTL: Duration = Duration::from_secs(1);

/// The single-file filesystem.
pub struct DiskFs {
    vol: Arc<Volume>,
    trace: Option<Arc<ReadTrace>>,
    uid: u32,
    gid: u32,
}

fn errno(e: &Error) -> i32 {
    if e.is_no_space() {
        return libc::ENOSPC;
    }
    match e.kind() {
        ErrorKind::Invalid => libc::EINVAL,
        _ => libc::EIO,
    }
}

impl DiskFs {
    /// Serves `vol` as a file owned by `uid:gid`; reads are logged to `trace` when given.
    pub fn new(vol: Arc<Volume>, trace: Option<Arc<ReadTrace>>, uid: u32, gid: u32) -> Self {
        Self {
            vol,
            trace,
            uid,
            gid,
        }
    }

    /// fsync and close: a durable flush of the volume.
    fn durable(&self, reply: ReplyEmpty) {
        match self.vol.flush() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
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
            reply.opened(0, FOPEN_DIRECT_IO);
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
        let mut buf = vec![0u8; len as usize];
        if let Some(t) = &self.trace {
            t.record(off, len);
        }
        match self.vol.read_at(off, &mut buf) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                tracing::error!(error = %e, offset = off, "read failed");
                reply.error(errno(&e))
            }
        }
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
        match self
            .vol
            .write_at(off, data)
            .and_then(|()| if sync { self.vol.flush() } else { Ok(()) })
        {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                tracing::error!(error = %e, offset = off, "write failed");
                reply.error(errno(&e))
            }
        }
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
