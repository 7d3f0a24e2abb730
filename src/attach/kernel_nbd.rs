//! The kernel nbd path: `/dev/nbdN` driven by the ioctl sequence, served over socket
//! pairs by this process. The kernel skips the handshake, so each socket goes straight
//! to the transmission phase (`nbd::serve_transmission`) with simple replies.
//!
//! Sequence: `NBD_SET_SOCK` for each connection (which also claims the device: another
//! task's device answers `EBUSY`), `NBD_SET_BLKSIZE`, `NBD_SET_SIZE_BLOCKS`,
//! `NBD_SET_FLAGS`, then `NBD_DO_IT` in a thread of its own with every signal blocked,
//! which returns once the sockets close. Detach: fsync the device (dirty pages, then a
//! FLUSH), `NBD_DISCONNECT` (the kernel sends DISC; the server answers what is in flight,
//! flushes and closes), join, `NBD_CLEAR_QUE`, `NBD_CLEAR_SOCK`.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nbd_proto::flags;

use super::sys::{block_all_signals_in_this_thread, ioctl_arg};
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::{serve_transmission, Negotiated, PayloadBudget};
use crate::trace::ReadTrace;
use crate::volume::Volume;

/// `_IO(0xab, n)` request numbers from `<linux/nbd.h>`.
mod ioc {
    pub const SET_SOCK: u64 = 0xab00;
    pub const SET_BLKSIZE: u64 = 0xab01;
    pub const DO_IT: u64 = 0xab03;
    pub const CLEAR_SOCK: u64 = 0xab04;
    pub const CLEAR_QUE: u64 = 0xab05;
    pub const SET_SIZE_BLOCKS: u64 = 0xab07;
    pub const DISCONNECT: u64 = 0xab08;
    pub const SET_FLAGS: u64 = 0xab0a;
}

/// Logical block size given to the kernel: 512 like a loop device, so a filesystem made
/// through either path mounts through the other.
const BLOCK: u64 = 512;
/// How long to wait for the device to come up, and for it to go after DISCONNECT.
const SETTLE: Duration = Duration::from_secs(20);

/// True when the kernel nbd driver is there, loading it with `modprobe nbd` if needed.
pub fn available() -> bool {
    if Path::new("/dev/nbd0").exists() {
        return true;
    }
    let loaded = std::process::Command::new("modprobe")
        .arg("nbd")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    loaded && Path::new("/dev/nbd0").exists()
}

/// `/dev/nbdN` devices in order of N.
fn devices() -> Vec<(u32, PathBuf)> {
    let mut out: Vec<(u32, PathBuf)> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let n = name.strip_prefix("nbd")?.parse::<u32>().ok()?;
                    Some((n, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// True while some task runs the device (the driver shows its pid in sysfs).
fn in_use(n: u32) -> bool {
    Path::new(&format!("/sys/block/nbd{n}/pid")).exists()
}

/// One kernel nbd device while attached.
pub struct KernelNbd {
    device: String,
    index: u32,
    file: Arc<File>,
    runtime: Option<tokio::runtime::Runtime>,
    done: Option<mpsc::Receiver<std::io::Result<()>>>,
}

impl KernelNbd {
    /// Attaches `vol` to the first free `/dev/nbdN` with `conns` connections.
    pub fn attach(vol: &Arc<Volume>, trace: Option<Arc<ReadTrace>>, conns: usize) -> Result<Self> {
        let conns = conns.clamp(1, 16);
        let mut last_err = None;
        for (n, path) in devices() {
            if in_use(n) {
                continue;
            }
            match Self::try_device(vol, &trace, n, &path, conns) {
                Ok(k) => return Ok(k),
                Err(e) => {
                    tracing::debug!(device = %path.display(), error = %e, "device not taken");
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| {
            Error::new(
                ErrorKind::Unavailable,
                "no free /dev/nbdN device".to_string(),
            )
        }))
    }

    fn try_device(
        vol: &Arc<Volume>,
        trace: &Option<Arc<ReadTrace>>,
        index: u32,
        path: &Path,
        conns: usize,
    ) -> Result<Self> {
        let dev = path.display().to_string();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {dev}"), e))?;
        let ioctl = |req: u64, arg: u64, what: &str| {
            ioctl_arg(file.as_fd(), req, arg).map_err(|e| Error::io(format!("{what} on {dev}"), e))
        };
        let mut ours = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (kernel_end, our_end) =
                UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
            // The kernel takes its own reference; our copy of its end closes on drop.
            ioctl(ioc::SET_SOCK, fd_arg(&kernel_end), "NBD_SET_SOCK")?;
            ours.push(our_end);
        }
        let size = vol.size();
        if !size.is_multiple_of(BLOCK) {
            tracing::warn!(
                size,
                "disk size is not a multiple of 512; the tail is not exposed"
            );
        }
        ioctl(ioc::SET_BLKSIZE, BLOCK, "NBD_SET_BLKSIZE")?;
        ioctl(ioc::SET_SIZE_BLOCKS, size / BLOCK, "NBD_SET_SIZE_BLOCKS")?;
        let mut fl = flags::HAS_FLAGS
            | flags::SEND_FLUSH
            | flags::SEND_FUA
            | flags::SEND_TRIM
            | flags::SEND_WRITE_ZEROES
            | flags::CAN_MULTI_CONN;
        if !vol.writable() {
            fl |= flags::READ_ONLY;
        }
        ioctl(ioc::SET_FLAGS, u64::from(fl), "NBD_SET_FLAGS")?;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .worker_threads(2)
            .max_blocking_threads(crate::nbd::BLOCKING_THREADS)
            .thread_name("mindcastle-nbd")
            .build()
            .map_err(|e| Error::io("starting the runtime", e))?;
        let neg = Negotiated {
            export: 0,
            structured: false,
            base_allocation: false,
            flags: fl,
        };
        let budget = PayloadBudget::new(crate::memory::Budget::process().request_bytes());
        for s in ours {
            s.set_nonblocking(true)
                .map_err(|e| Error::io("socket setup", e))?;
            let (vol, neg, trace, budget) =
                (vol.clone(), neg.clone(), trace.clone(), budget.clone());
            let _guard = runtime.enter();
            let stream =
                tokio::net::UnixStream::from_std(s).map_err(|e| Error::io("socket setup", e))?;
            runtime.spawn(async move {
                if let Err(e) = serve_transmission(stream, vol, neg, trace, budget).await {
                    tracing::warn!(error = %e, "kernel nbd connection ended");
                }
            });
        }

        let file = Arc::new(file);
        let (tx, rx) = mpsc::channel();
        let f2 = file.clone();
        let dev2 = dev.clone();
        std::thread::Builder::new()
            .name("nbd-do-it".into())
            .spawn(move || {
                let r = block_all_signals_in_this_thread()
                    .and_then(|()| ioctl_arg(f2.as_fd(), ioc::DO_IT, 0).map(|_| ()));
                // Whatever ended it, leave the device clean for the next user.
                let _ = ioctl_arg(f2.as_fd(), ioc::CLEAR_QUE, 0);
                let _ = ioctl_arg(f2.as_fd(), ioc::CLEAR_SOCK, 0);
                tracing::debug!(device = %dev2, result = ?r, "NBD_DO_IT returned");
                let _ = tx.send(r);
            })
            .map_err(|e| Error::io("starting the nbd thread", e))?;

        let mut k = Self {
            device: dev,
            index,
            file,
            runtime: Some(runtime),
            done: Some(rx),
        };
        k.wait_running()?;
        Ok(k)
    }

    /// Waits until the driver shows the device as running, or NBD_DO_IT gives up.
    fn wait_running(&mut self) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < SETTLE {
            if in_use(self.index) {
                return Ok(());
            }
            if let Some(rx) = &self.done {
                if let Ok(r) = rx.try_recv() {
                    self.done = None;
                    let why = match r {
                        Ok(()) => "it stopped at once".to_string(),
                        Err(e) => e.to_string(),
                    };
                    self.shutdown_runtime();
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("NBD_DO_IT on {} failed: {why}", self.device),
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(Error::new(
            ErrorKind::Unavailable,
            format!("{} did not come up within {SETTLE:?}", self.device),
        ))
    }

    /// The block device, `/dev/nbdN`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Writes back what the kernel holds, disconnects and waits for the device to stop.
    pub fn detach(&mut self) {
        let Some(rx) = self.done.take() else {
            self.shutdown_runtime();
            return;
        };
        // Dirty pages of the device (someone wrote it raw without fsync) go out first,
        // followed by a FLUSH, while the connection is still up.
        match File::open(&self.device).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            Err(e) => tracing::warn!(device = %self.device, error = %e, "fsync before disconnect"),
        }
        if let Err(e) = ioctl_arg(self.file.as_fd(), ioc::DISCONNECT, 0) {
            tracing::warn!(device = %self.device, error = %e, "NBD_DISCONNECT");
        }
        match rx.recv_timeout(SETTLE) {
            Ok(_) => {}
            Err(_) => tracing::error!(
                device = %self.device,
                "the kernel did not release the device in time; leaving it"
            ),
        }
        self.shutdown_runtime();
    }

    fn shutdown_runtime(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Sessions have flushed and closed by now; anything left is cut off.
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for KernelNbd {
    fn drop(&mut self) {
        self.detach();
    }
}

/// The kernel end's descriptor as the ioctl argument.
fn fd_arg(s: &UnixStream) -> u64 {
    use std::os::fd::AsRawFd;
    s.as_raw_fd() as u64
}
