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

use super::nbd_netlink::{backend_id, device_of, NbdNetlink, Setup};
use super::sys::{block_all_signals_in_this_thread, ioctl_arg};
use crate::error::{Error, ErrorKind, Result};
use crate::nbd::{run_pausable, Negotiated, PauseSignal, Paused, PayloadBudget};
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
/// How long a take-over waits for the kernel to see the old connections dead.
const TAKE_OVER_WAIT: Duration = Duration::from_secs(5);
/// How long to wait for the device to come up, and for it to go after DISCONNECT.
const SETTLE: Duration = Duration::from_secs(20);

/// True when a killed attach of disk `vol` left a kernel nbd device (set up through
/// netlink, still configured) for the next one to take over.
pub fn has_device_to_recover(vol: &Volume) -> bool {
    device_of(&backend_id(vol.uuid(), vol.data_dir())).is_some()
}

/// True when the kernel nbd driver is there, loading it with `modprobe nbd` if needed.
pub fn available() -> bool {
    super::driver_loaded(Path::new("/dev/nbd0"), "nbd")
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

/// How the device is driven.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Netlink (Linux 4.12+): the kernel keeps the device across a restart of this
    /// process for the reconnect timeout.
    Netlink,
    /// The old ioctls: the device goes when this process does.
    Ioctl,
}

/// Settings of a kernel nbd attach.
#[derive(Debug, Clone)]
pub struct NbdOptions {
    /// Connections (1-16).
    pub conns: usize,
    pub control: Control,
    /// How long the kernel holds I/O for a new server after this one dies (netlink).
    pub reconnect_timeout: Duration,
    /// Only take over a device this disk's killed attach left; never set up a new one.
    pub recover_only: bool,
}

enum Driver {
    Ioctl {
        file: Arc<File>,
        done: Option<mpsc::Receiver<std::io::Result<()>>>,
    },
    Netlink {
        nl: NbdNetlink,
        attached: bool,
    },
}

/// One kernel nbd device while attached.
pub struct KernelNbd {
    device: String,
    index: u32,
    driver: Driver,
    runtime: Option<tokio::runtime::Runtime>,
    sessions: Vec<Session>,
    serving: Serving,
    pause: PauseSignal,
    recovered: bool,
}

/// A connection's task; it gives its stream back when paused for a hand-over.
type Session = tokio::task::JoinHandle<Option<Paused<tokio::net::UnixStream>>>;

/// What every connection of one device shares.
struct Serving {
    vol: Arc<Volume>,
    trace: Option<Arc<ReadTrace>>,
    neg: Negotiated,
    budget: PayloadBudget,
}

impl Serving {
    fn new(vol: &Arc<Volume>, trace: &Option<Arc<ReadTrace>>) -> Self {
        Self {
            vol: vol.clone(),
            trace: trace.clone(),
            neg: Negotiated {
                export: 0,
                structured: false,
                base_allocation: false,
                flags: server_flags(vol),
            },
            budget: PayloadBudget::new(crate::memory::Budget::process().request_bytes()),
        }
    }

    /// Serves `ours` (our end of a socket pair whose other end the kernel took),
    /// starting with `unread` (bytes a paused session had read and not taken).
    fn spawn(
        &self,
        runtime: &tokio::runtime::Runtime,
        ours: UnixStream,
        unread: Vec<u8>,
        pause: &PauseSignal,
    ) -> Result<Session> {
        ours.set_nonblocking(true)
            .map_err(|e| Error::io("socket setup", e))?;
        let (vol, neg, trace, budget, pause) = (
            self.vol.clone(),
            self.neg.clone(),
            self.trace.clone(),
            self.budget.clone(),
            pause.clone(),
        );
        let _guard = runtime.enter();
        let stream =
            tokio::net::UnixStream::from_std(ours).map_err(|e| Error::io("socket setup", e))?;
        Ok(runtime.spawn(async move {
            match run_pausable(stream, unread, vol, neg, trace, budget, Some(pause)).await {
                Ok(paused) => paused,
                Err(e) => {
                    tracing::warn!(error = %e, "kernel nbd connection ended");
                    None
                }
            }
        }))
    }
}

/// The transmission flags the kernel is given.
fn server_flags(vol: &Volume) -> u16 {
    let mut fl = flags::HAS_FLAGS
        | flags::SEND_FLUSH
        | flags::SEND_FUA
        | flags::SEND_TRIM
        | flags::SEND_WRITE_ZEROES
        | flags::CAN_MULTI_CONN;
    if !vol.writable() {
        fl |= flags::READ_ONLY;
    }
    fl
}

fn new_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .max_blocking_threads(crate::nbd::BLOCKING_THREADS)
        .thread_name("mindcastle-nbd")
        .build()
        .map_err(|e| Error::io("starting the runtime", e))
}

fn warn_unaligned(size: u64) {
    if !size.is_multiple_of(BLOCK) {
        tracing::warn!(
            size,
            "disk size is not a multiple of 512; the tail is not exposed"
        );
    }
}

impl KernelNbd {
    /// A device set up through netlink, served by `sessions`.
    fn on_netlink(
        index: u32,
        nl: NbdNetlink,
        runtime: tokio::runtime::Runtime,
        sessions: Vec<Session>,
        serving: Serving,
        pause: PauseSignal,
        recovered: bool,
    ) -> Self {
        Self {
            device: format!("/dev/nbd{index}"),
            index,
            driver: Driver::Netlink { nl, attached: true },
            runtime: Some(runtime),
            sessions,
            serving,
            pause,
            recovered,
        }
    }

    /// Attaches `vol` to a kernel nbd device: through netlink where the driver has it
    /// (taking over the device a killed attach of this disk left), else through the
    /// ioctls on the first free `/dev/nbdN`.
    pub fn attach(
        vol: &Arc<Volume>,
        trace: Option<Arc<ReadTrace>>,
        opts: &NbdOptions,
    ) -> Result<Self> {
        let conns = opts.conns.clamp(1, 16);
        if opts.control == Control::Netlink {
            match NbdNetlink::open() {
                Ok(Some(nl)) => return Self::attach_netlink(vol, &trace, nl, conns, opts),
                Ok(None) => tracing::info!("the nbd driver has no netlink interface; using ioctls"),
                Err(e) => tracing::info!(error = %e, "nbd netlink not usable; using ioctls"),
            }
        }
        if opts.recover_only {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "--recover needs the nbd driver's netlink interface (devices set up by ioctls \
                 go when their process does)"
                    .to_string(),
            ));
        }
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

    /// True when this attach took over a device a killed attach of the disk left.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    fn attach_netlink(
        vol: &Arc<Volume>,
        trace: &Option<Arc<ReadTrace>>,
        mut nl: NbdNetlink,
        conns: usize,
        opts: &NbdOptions,
    ) -> Result<Self> {
        let backend = backend_id(vol.uuid(), vol.data_dir());
        let serving = Serving::new(vol, trace);
        let runtime = new_runtime()?;
        let pause = PauseSignal::default();
        warn_unaligned(vol.size());
        if let Some(index) = device_of(&backend) {
            // We hold the disk's lock, so whoever set this device up is gone.
            match Self::take_over(&mut nl, index, &backend, opts, &serving, &runtime, &pause) {
                Ok(sessions) => {
                    tracing::info!(
                        device = format!("/dev/nbd{index}"),
                        conns = sessions.len(),
                        "took over the device a killed attach of this disk left"
                    );
                    return Ok(Self::on_netlink(
                        index, nl, runtime, sessions, serving, pause, true,
                    ));
                }
                Err(e) => {
                    // Never disconnect it: whatever holds it may still be serving.
                    tracing::warn!(
                        device = format!("/dev/nbd{index}"),
                        error = %e,
                        "could not take over this disk's device; leaving it and setting up \
                         a new one"
                    );
                }
            }
        }
        if opts.recover_only {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!(
                    "--recover: no nbd device of disk {} to take over",
                    vol.uuid()
                ),
            ));
        }
        let mut kernel_ends = Vec::with_capacity(conns);
        let mut ours = Vec::with_capacity(conns);
        for _ in 0..conns {
            let (k, o) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
            kernel_ends.push(k);
            ours.push(o);
        }
        let setup = Setup {
            size: vol.size() / BLOCK * BLOCK,
            block: BLOCK,
            server_flags: u64::from(serving.neg.flags),
            dead_conn_timeout: opts.reconnect_timeout,
            backend: &backend,
        };
        // Sessions first: the kernel reads the partition table as soon as it connects.
        let mut sessions = Vec::with_capacity(conns);
        for o in ours {
            sessions.push(serving.spawn(&runtime, o, Vec::new(), &pause)?);
        }
        let index = match nl.connect(&setup, &kernel_ends) {
            Ok(i) => i,
            Err(e) => {
                drop(kernel_ends);
                runtime.shutdown_timeout(Duration::from_secs(5));
                return Err(Error::io("NBD_CMD_CONNECT", e));
            }
        };
        // The kernel holds its own references to its ends.
        drop(kernel_ends);
        wait_size(index, setup.size);
        Ok(Self::on_netlink(
            index, nl, runtime, sessions, serving, pause, false,
        ))
    }

    /// Hands device `index` a new socket for each of its dead connections.
    fn take_over(
        nl: &mut NbdNetlink,
        index: u32,
        backend: &str,
        opts: &NbdOptions,
        serving: &Serving,
        runtime: &tokio::runtime::Runtime,
        pause: &PauseSignal,
    ) -> Result<Vec<Session>> {
        let start = Instant::now();
        let mut sessions = Vec::new();
        while sessions.len() < 16 {
            let (k, o) = UnixStream::pair().map_err(|e| Error::io("socketpair", e))?;
            match nl.reconnect(index, backend, opts.reconnect_timeout, &k) {
                Ok(()) => sessions.push(serving.spawn(runtime, o, Vec::new(), pause)?),
                // No dead connection left: all are ours now.
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) && !sessions.is_empty() => break,
                // The old process's connections are not seen as dead yet (the kernel
                // sees a closed socket at once; a few seconds is ample).
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOSPC)
                        && start.elapsed() < TAKE_OVER_WAIT =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(Error::io(format!("NBD_CMD_RECONFIGURE of nbd{index}"), e)),
            }
        }
        Ok(sessions)
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
        warn_unaligned(vol.size());
        let serving = Serving::new(vol, trace);
        ioctl(ioc::SET_BLKSIZE, BLOCK, "NBD_SET_BLKSIZE")?;
        ioctl(
            ioc::SET_SIZE_BLOCKS,
            vol.size() / BLOCK,
            "NBD_SET_SIZE_BLOCKS",
        )?;
        ioctl(
            ioc::SET_FLAGS,
            u64::from(serving.neg.flags),
            "NBD_SET_FLAGS",
        )?;

        let runtime = new_runtime()?;
        let pause = PauseSignal::default();
        let mut sessions = Vec::with_capacity(conns);
        for s in ours {
            sessions.push(serving.spawn(&runtime, s, Vec::new(), &pause)?);
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
            driver: Driver::Ioctl {
                file,
                done: Some(rx),
            },
            runtime: Some(runtime),
            sessions,
            serving,
            pause,
            recovered: false,
        };
        k.wait_running(vol.size() / BLOCK * BLOCK)?;
        Ok(k)
    }

    /// Waits until the driver shows the device as running, or NBD_DO_IT gives up.
    fn wait_running(&mut self, bytes: u64) -> Result<()> {
        let start = Instant::now();
        while start.elapsed() < SETTLE {
            // The driver shows the pid before it sets the size: a reader let in
            // between would see an empty device.
            if in_use(self.index) && has_size(self.index, bytes) {
                return Ok(());
            }
            if let Driver::Ioctl { done, .. } = &mut self.driver {
                if let Some(Ok(r)) = done.as_ref().map(|rx| rx.try_recv()) {
                    *done = None;
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

    /// Serves connections another attach of this disk handed over (see `handover`).
    pub fn adopt(
        vol: &Arc<Volume>,
        trace: Option<Arc<ReadTrace>>,
        index: u32,
        conns: Vec<(UnixStream, Vec<u8>)>,
    ) -> Result<Self> {
        let nl = NbdNetlink::open()
            .map_err(|e| Error::io("nbd netlink", e))?
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Unavailable,
                    "the nbd driver has no netlink interface".to_string(),
                )
            })?;
        let serving = Serving::new(vol, &trace);
        let runtime = new_runtime()?;
        let pause = PauseSignal::default();
        let mut sessions = Vec::with_capacity(conns.len());
        for (s, unread) in conns {
            sessions.push(serving.spawn(&runtime, s, unread, &pause)?);
        }
        Ok(Self::on_netlink(
            index, nl, runtime, sessions, serving, pause, true,
        ))
    }

    /// Stops every connection between two requests (what is in flight answered) and
    /// gives them back with the bytes read and not yet taken, for a hand-over. Only a
    /// device set up through netlink outlives this process, so only such a one pauses.
    pub fn pause_all(&mut self) -> Result<Vec<(UnixStream, Vec<u8>)>> {
        if !matches!(self.driver, Driver::Netlink { attached: true, .. }) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "only a kernel nbd device set up through netlink can be handed over".to_string(),
            ));
        }
        let Some(rt) = &self.runtime else {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "not serving".to_string(),
            ));
        };
        self.pause.pause();
        let sessions = std::mem::take(&mut self.sessions);
        let paused = rt.block_on(async {
            let mut out = Vec::new();
            for s in sessions {
                if let Ok(Some(p)) = s.await {
                    out.push(p);
                }
            }
            out
        });
        self.pause = PauseSignal::default();
        let mut conns = Vec::with_capacity(paused.len());
        for p in paused {
            let std = p
                .stream
                .into_std()
                .map_err(|e| Error::io("taking a connection off the runtime", e))?;
            std.set_nonblocking(false)
                .map_err(|e| Error::io("socket setup", e))?;
            conns.push((std, p.unread));
        }
        Ok(conns)
    }

    /// Serves paused connections again (a hand-over that failed).
    pub fn resume(&mut self, conns: Vec<(UnixStream, Vec<u8>)>) -> Result<()> {
        let Some(rt) = &self.runtime else {
            return Err(Error::new(
                ErrorKind::Unavailable,
                "not serving".to_string(),
            ));
        };
        for (s, unread) in conns {
            self.sessions
                .push(self.serving.spawn(rt, s, unread, &self.pause)?);
        }
        Ok(())
    }

    /// After a hand-over: the device is the new process's; detaching leaves it alone.
    pub fn handed_over(&mut self) {
        if let Driver::Netlink { attached, .. } = &mut self.driver {
            *attached = false;
        }
    }

    /// The device's index (`/dev/nbdN`).
    pub fn index(&self) -> u32 {
        self.index
    }

    /// The block device, `/dev/nbdN`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// How the device is driven, for the user.
    pub fn control(&self) -> &'static str {
        match self.driver {
            Driver::Ioctl { .. } => "ioctl",
            Driver::Netlink { .. } => "netlink",
        }
    }

    /// Writes back what the kernel holds, disconnects and waits for the device to stop.
    pub fn detach(&mut self) {
        let connected = match &self.driver {
            Driver::Ioctl { done, .. } => done.is_some(),
            Driver::Netlink { attached, .. } => *attached,
        };
        if !connected {
            self.shutdown_runtime();
            return;
        }
        // Dirty pages of the device (someone wrote it raw without fsync) go out first,
        // followed by a FLUSH, while the connection is still up.
        match File::open(&self.device).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            Err(e) => tracing::warn!(device = %self.device, error = %e, "fsync before disconnect"),
        }
        match &mut self.driver {
            Driver::Ioctl { file, done } => {
                if let Err(e) = ioctl_arg(file.as_fd(), ioc::DISCONNECT, 0) {
                    tracing::warn!(device = %self.device, error = %e, "NBD_DISCONNECT");
                }
                if let Some(rx) = done.take() {
                    if rx.recv_timeout(SETTLE).is_err() {
                        tracing::error!(
                            device = %self.device,
                            "the kernel did not release the device in time; leaving it"
                        );
                    }
                }
            }
            Driver::Netlink { nl, attached } => {
                *attached = false;
                if let Err(e) = nl.disconnect(self.index) {
                    tracing::warn!(device = %self.device, error = %e, "NBD_CMD_DISCONNECT");
                }
                // The kernel sends DISC on each connection; each session answers what
                // is in flight, flushes and ends.
                if let Some(rt) = &self.runtime {
                    let sessions = std::mem::take(&mut self.sessions);
                    let all = async {
                        for s in sessions {
                            let _ = s.await;
                        }
                    };
                    if rt
                        .block_on(async { tokio::time::timeout(SETTLE, all).await })
                        .is_err()
                    {
                        tracing::error!(
                            device = %self.device,
                            "connections did not end within {SETTLE:?} of the disconnect"
                        );
                    }
                }
                wait_gone(self.index);
            }
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

/// True when device `index` shows `bytes` as its size.
fn has_size(index: u32, bytes: u64) -> bool {
    std::fs::read_to_string(format!("/sys/block/nbd{index}/size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|sectors| sectors.saturating_mul(512) == bytes)
}

/// Waits (up to SETTLE) until device `index` shows `bytes` as its size.
fn wait_size(index: u32, bytes: u64) {
    let start = Instant::now();
    while !has_size(index, bytes) && start.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits (up to SETTLE) until device `index` is no longer configured.
fn wait_gone(index: u32) {
    let start = Instant::now();
    while in_use(index) && start.elapsed() < SETTLE {
        std::thread::sleep(Duration::from_millis(10));
    }
    if in_use(index) {
        tracing::warn!(
            device = format!("/dev/nbd{index}"),
            "still configured after the disconnect (something holds it open)"
        );
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
