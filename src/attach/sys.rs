//! The few system calls attach needs that std does not wrap: the nbd ioctls, a thread
//! signal mask, the memory settings of a process that serves its own block device, and
//! a filesystem's free space.
//! All `unsafe` of the crate lives here, each block with its reason.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// `mlockall` flag: lock pages as they are touched, not the whole mapping at once
/// (Linux 4.4+; not in every libc crate release).
const MCL_ONFAULT: libc::c_int = 4;
/// `prctl` option: this process writes back for a block device (Linux 5.6+).
const PR_SET_IO_FLUSHER: libc::c_int = 57;

/// `ioctl(fd, request, arg)` for the requests that take an integer or nothing.
pub fn ioctl_arg(fd: BorrowedFd<'_>, request: u64, arg: u64) -> io::Result<libc::c_int> {
    // SAFETY: the fd is open for the borrow's lifetime; every request passed here
    // (the nbd `_IO` ioctls) takes its argument by value, so no memory is read or written
    // through it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as libc::Ioctl, arg as libc::c_ulong) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Blocks every signal in the calling thread, so process signals go to other threads
/// (an interrupted `NBD_DO_IT` tears the device down).
pub fn block_all_signals_in_this_thread() -> io::Result<()> {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigfillset initialises the set it is given; pthread_sigmask reads it only
    // after that, and a null old-set pointer is allowed.
    let r = unsafe {
        libc::sigfillset(set.as_mut_ptr());
        libc::pthread_sigmask(libc::SIG_BLOCK, set.as_ptr(), std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Settings for a process that serves a block device mounted on the same machine: its
/// memory must not be paged out to make room for writeback that it must serve itself.
/// Failures are logged, not fatal: the device still works, only less safely under
/// memory pressure.
pub fn harden_for_block_serving() {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(PR_SET_IO_FLUSHER, 1 as libc::c_ulong, 0, 0, 0) };
    if r != 0 {
        // Needs CAP_SYS_RESOURCE (missing in many containers). Without it the device
        // works; the one cost is a possible stall when the host is short of memory.
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "PR_SET_IO_FLUSHER not set (it needs CAP_SYS_RESOURCE). The disk works; the cost: \
             when this host runs short of memory, writeback to this device may wait on this \
             process and stall until memory frees up"
        );
    }
    // SAFETY: mlockall takes flags only.
    let r = unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE | MCL_ONFAULT) };
    if r != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "mlockall failed; memory may be paged out");
    }
}

/// Sends `signal` to process `pid`.
pub fn send_signal(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill(2) takes integers only; no memory is shared.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A generic netlink socket (`AF_NETLINK`, `NETLINK_GENERIC`), close-on-exec. Written
/// and read as a file: with no address, a netlink message goes to the kernel.
pub fn generic_netlink_socket() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) takes integers only.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_GENERIC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// The user id of the process at the other end of a Unix socket (`SO_PEERCRED`).
pub fn peer_uid(sock: BorrowedFd<'_>) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writes of the sizes given; the fd is open for
    // the borrow.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

/// Most descriptors passed in one message.
pub const MAX_FDS: usize = 16;

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`) on a Unix stream socket.
pub fn send_with_fds(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.is_empty() || fds.len() > MAX_FDS || bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "1-16 descriptors and some bytes",
        ));
    }
    let raw: Vec<libc::c_int> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let payload = std::mem::size_of_val(raw.as_slice()) as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    // u64 elements keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: an all-zero msghdr is valid (null name, no iovecs) before we fill it.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` zeroed, aligned bytes, enough for one
    // header with `payload` bytes of data (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and
    // CMSG_DATA has room for every descriptor; sendmsg reads only the buffers msg names,
    // which live until it returns.
    let sent = unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(payload) as _;
        std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(c).cast(), raw.len());
        libc::sendmsg(sock.as_raw_fd(), &msg, libc::MSG_NOSIGNAL)
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short send of a hand-over message",
        ));
    }
    Ok(())
}

/// Receives up to `buf.len()` bytes and the descriptors sent with them; returns the
/// byte count and the descriptors (owned, close-on-exec).
pub fn recv_with_fds(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
) -> io::Result<(usize, Vec<std::os::fd::OwnedFd>)> {
    use std::os::fd::FromRawFd;
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<libc::c_int>()) as _) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr is valid before we fill it.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: the buffers msg names are valid for writes of their lengths until
    // recvmsg returns.
    let n = unsafe { libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled msg_control with msg_controllen bytes of cmsghdrs; the
    // CMSG_* walkers stay within them, and each SCM_RIGHTS payload holds
    // (cmsg_len - CMSG_LEN(0)) / sizeof(int) descriptors that are now ours.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = data / std::mem::size_of::<libc::c_int>();
                let p = libc::CMSG_DATA(c).cast::<libc::c_int>();
                for i in 0..count {
                    fds.push(std::os::fd::OwnedFd::from_raw_fd(p.add(i).read_unaligned()));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors in a hand-over message",
        ));
    }
    Ok((n as usize, fds))
}

/// A new eventfd (close-on-exec), read and written as a file of 8-byte counters.
pub fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd(2) takes integers only.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by eventfd(2) and is owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// Reads exactly `buf.len()` bytes at `pos` of `fd` (ublk's user copy: `pos` names a
/// request's buffer in the ublk char device, which the caller keeps open).
pub fn pread_exact_at(fd: RawFd, buf: &mut [u8], pos: u64) -> io::Result<()> {
    let len = buf.len();
    all_at(len, pos, io::ErrorKind::UnexpectedEof, |done, at| {
        let rest = &mut buf[done..];
        // SAFETY: `rest` is valid for writes of `rest.len()` bytes for the call; a bad
        // `fd` only makes the call fail.
        unsafe { libc::pread(fd, rest.as_mut_ptr().cast(), rest.len(), at) }
    })
}

/// Writes all of `buf` at `pos` of `fd` (ublk's user copy, as `pread_exact_at`).
pub fn pwrite_all_at(fd: RawFd, buf: &[u8], pos: u64) -> io::Result<()> {
    all_at(buf.len(), pos, io::ErrorKind::WriteZero, |done, at| {
        let rest = &buf[done..];
        // SAFETY: `rest` is valid for reads of `rest.len()` bytes for the call; a bad
        // `fd` only makes the call fail.
        unsafe { libc::pwrite(fd, rest.as_ptr().cast(), rest.len(), at) }
    })
}

/// Calls `op(done, offset)` until `len` bytes are done, retrying EINTR; a call that
/// moves nothing is `short`.
fn all_at(
    len: usize,
    pos: u64,
    short: io::ErrorKind,
    mut op: impl FnMut(usize, libc::off_t) -> isize,
) -> io::Result<()> {
    let mut done = 0;
    while done < len {
        let at = libc::off_t::try_from(pos + done as u64)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        match op(done, at) {
            0 => return Err(io::Error::from(short)),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => done += n as usize,
        }
    }
    Ok(())
}

/// Lets the calling thread run on every CPU (undoing a pinning to a few).
pub fn allow_every_cpu() -> io::Result<()> {
    // SAFETY: cpu_set_t is plain bits, for which all-zero is valid; CPU_SET writes
    // within it for indices below CPU_SETSIZE, and sched_setaffinity reads
    // `size_of::<cpu_set_t>()` bytes of it. Bits of CPUs that do not exist are ignored
    // by the kernel.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes free to an unprivileged writer, and bytes in all, of the filesystem under `path`.
pub fn free_space(path: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable memory the size
    // of a statvfs, which the call fills whole when it returns 0.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so every field was written.
    let st = unsafe { st.assume_init() };
    let unit = st.f_frsize;
    Ok((
        st.f_bavail.saturating_mul(unit),
        st.f_blocks.saturating_mul(unit),
    ))
}

/// Asks the kernel to start writing `f`'s dirty pages to the device now, without
/// waiting for them: a later fsync then finds most of them already written, instead
/// of writing them all while a checkpoint (and every writer paced by it) waits.
/// Durability still comes only from that fsync.
pub fn start_writeback(f: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd is open for as long as `f` is borrowed; the call only queues
    // writeback of the file's pages and touches no memory of ours.
    let r = unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
