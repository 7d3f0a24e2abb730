//! The few system calls attach needs that std does not wrap: the nbd ioctls, a thread
//! signal mask, and the memory settings of a process that serves its own block device.
//! All `unsafe` of the crate lives here, each block with its reason.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

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
