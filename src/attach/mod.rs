//! Attach: the original Mindcastle's main job. Creates the disk if missing, exposes it as
//! a Linux block device, runs the statechange script and obeys the signals:
//! SIGHUP runs `close` (the script unmounts, then sends SIGINT); SIGINT and SIGTERM run
//! `close` if it has not run yet, then flush, checkpoint, detach and exit 0; SIGUSR1
//! flushes, takes a snapshot and runs `snapshot`. Other signals are ignored.
//!
//! The block device is ublk (`ublk`) where `/dev/ublk-control` exists or `modprobe
//! ublk_drv` works, else the kernel nbd driver (`kernel_nbd`) where `/dev/nbd0` exists
//! or `modprobe nbd` works, else a loop device over a FUSE single-file export (`fuse`,
//! `loopdev`). Which one was used, and why the others were passed over, is logged;
//! `--frontend` chooses. Kernel nbd is set up through netlink (`nbd_netlink`) with a
//! reconnect timeout, ublk with user recovery and a watchdog (`ublk_watchdog`), so a
//! killed attach's device waits for the next attach of the same disk, which takes it
//! over and runs `recover` instead of `open`.

pub mod fuse;
mod genl;
mod handover;
pub mod kernel_nbd;
pub mod loopdev;
mod nbd_netlink;
pub(crate) mod sys;
pub mod ublk;
pub mod ublk_watchdog;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use signal_hook::consts::signal::{
    SIGALRM, SIGHUP, SIGINT, SIGPIPE, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
};
use signal_hook::iterator::Signals;

use crate::error::{Error, ErrorKind, Result};
use crate::hooks::{Event, Script};
use crate::trace::ReadTrace;
use crate::volume::{OpenOptions, Volume};

/// Settings of one attach.
#[derive(Debug, Clone)]
pub struct AttachConfig {
    /// The disk.
    pub swap: PathBuf,
    /// The statechange script, as given.
    pub script: String,
    /// Size for a new disk.
    pub size: u64,
    /// Whether the size was given (`--size`/`-s`) rather than the default.
    pub size_given: bool,
    /// Log every read here.
    pub trace: Option<PathBuf>,
    /// Which front end.
    pub frontend: Frontend,
    /// How long a kernel nbd or ublk device's I/O waits for a new process after this
    /// one dies.
    pub reconnect_timeout: std::time::Duration,
    /// Only take over the device a killed attach of this disk left.
    pub recover: bool,
    /// Take the device over from the running attach of this disk (an upgrade).
    pub hand_over: bool,
    /// Warm the cache from this read trace on a thread beside the device.
    pub prefetch: Option<PathBuf>,
}

/// True when `node` exists, after `modprobe MODULE` if it did not.
fn driver_loaded(node: &Path, module: &str) -> bool {
    if node.exists() {
        return true;
    }
    let loaded = std::process::Command::new("modprobe")
        .arg(module)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    loaded && node.exists()
}

/// The front ends `--frontend` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// The best this kernel has: ublk, else kernel nbd, else FUSE + loop.
    Auto,
    /// Kernel nbd (netlink, else ioctls).
    Nbd,
    /// Kernel nbd through the ioctls only (the device goes with this process).
    NbdIoctl,
    /// A loop device over a FUSE single-file export.
    Fuse,
    /// ublk (Linux 6.0+, io_uring).
    Ublk,
}

impl Frontend {
    /// Parses `--frontend`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "nbd" => Ok(Self::Nbd),
            "nbd-ioctl" => Ok(Self::NbdIoctl),
            "fuse" => Ok(Self::Fuse),
            "ublk" => Ok(Self::Ublk),
            other => Err(Error::invalid(format!(
                "--frontend {other}: expected auto, ublk, nbd, nbd-ioctl or fuse"
            ))),
        }
    }
}

/// The block device while attached.
enum Attached {
    Kernel(kernel_nbd::KernelNbd),
    Ublk(ublk::Ublk),
    Fuse(FuseLoop),
}

impl Attached {
    fn device(&self) -> &str {
        match self {
            Attached::Kernel(k) => k.device(),
            Attached::Ublk(u) => u.device(),
            Attached::Fuse(f) => &f.device,
        }
    }

    /// Which path, for the user.
    fn kind(&self) -> &'static str {
        match self {
            Attached::Kernel(_) => "kernel nbd",
            Attached::Ublk(_) => "ublk",
            Attached::Fuse(_) => "FUSE + loop",
        }
    }

    fn detach(&mut self) {
        match self {
            Attached::Kernel(k) => k.detach(),
            Attached::Ublk(u) => u.detach(),
            Attached::Fuse(f) => f.detach(),
        }
    }
}

/// A loop device over the FUSE single-file export.
struct FuseLoop {
    device: String,
    session: Option<fuser::BackgroundSession>,
    mountdir: PathBuf,
}

impl FuseLoop {
    fn detach(&mut self) {
        if !self.device.is_empty() {
            if let Err(e) = loopdev::detach(&self.device) {
                tracing::warn!(error = %e, "detaching the loop device");
            }
            self.device.clear();
        }
        // Dropping the session unmounts the FUSE filesystem; if something still held
        // it (a loop device the kernel had not released yet), detach it lazily so no
        // stale mount outlives us.
        drop(self.session.take());
        let dir = self.mountdir.to_string_lossy().into_owned();
        let still = std::fs::read_to_string("/proc/mounts")
            .map(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(dir.as_str())))
            .unwrap_or(false);
        if still {
            tracing::warn!(mount = %dir, "FUSE mount still present; unmounting lazily");
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.mountdir)
                .status();
        }
        let _ = std::fs::remove_file(self.mountdir.join(fuse::DISK_NAME));
        let _ = std::fs::remove_dir(&self.mountdir);
    }
}

impl Drop for FuseLoop {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Clears what an attach killed outright (SIGKILL, a crash) left behind: its FUSE
/// mount (`/tmp/mindcastle-UUID-RANDOM-PID`, now "transport endpoint not connected") and the
/// loop device over it. Only mounts of ours whose PID is gone are touched.
fn clear_stale_fuse_mounts() {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return;
    };
    let prefix = std::env::temp_dir().join("mindcastle-");
    let prefix = prefix.to_string_lossy();
    for line in mounts.lines() {
        let mut f = line.split(' ');
        let (Some(src), Some(dir), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if src != "mindcastle" || !fstype.starts_with("fuse") || !dir.starts_with(&*prefix) {
            continue;
        }
        let Some(pid) = dir.rsplit('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        tracing::warn!(
            mount = dir,
            pid,
            "clearing a FUSE mount left by a killed attach"
        );
        for dev in loopdev::devices_backed_by(&Path::new(dir).join(fuse::DISK_NAME)) {
            if let Err(e) = loopdev::detach(&dev) {
                tracing::warn!(device = %dev, error = %e, "detaching a stale loop device");
            }
        }
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(dir)
            .status();
        let _ = std::fs::remove_dir(dir);
    }
}

/// Attaches through the front end `cfg` asks for. With `auto`: the device a killed
/// attach of this disk left, whichever front end made it; else a new one through ublk,
/// kernel nbd or FUSE + loop, the first that works, logging why the others were passed
/// over.
fn attach_device(
    vol: &Arc<Volume>,
    trace: Option<Arc<ReadTrace>>,
    cfg: &AttachConfig,
) -> Result<Attached> {
    let unavailable = |why: &str| Error::new(ErrorKind::Unavailable, why.to_string());
    let take = if cfg.recover {
        ublk::Take::RecoverOnly
    } else {
        ublk::Take::Any
    };
    match cfg.frontend {
        Frontend::Ublk if !ublk::available() => Err(unavailable(NO_UBLK)),
        Frontend::Ublk => attach_ublk(vol, trace, cfg, take).map(Attached::Ublk),
        Frontend::Nbd | Frontend::NbdIoctl if !kernel_nbd::available() => Err(unavailable(NO_NBD)),
        Frontend::Nbd | Frontend::NbdIoctl => attach_nbd(vol, trace, cfg).map(Attached::Kernel),
        Frontend::Fuse => {
            clear_stale_fuse_mounts();
            attach_fuse(vol, trace).map(Attached::Fuse)
        }
        Frontend::Auto => {
            let (has_ublk, has_nbd) = (ublk::available(), kernel_nbd::available());
            // A file system may be waiting on the device a killed attach left: that
            // device, never a new one beside it.
            if has_ublk && ublk::has_device_to_recover(vol) {
                return attach_ublk(vol, trace, cfg, take).map(Attached::Ublk);
            }
            if has_nbd && kernel_nbd::has_device_to_recover(vol) {
                return attach_nbd(vol, trace, cfg).map(Attached::Kernel);
            }
            if cfg.recover {
                return Err(unavailable(&format!(
                    "--recover: no ublk or kernel nbd device of disk {} to take over",
                    vol.uuid()
                )));
            }
            let mut passed = Vec::new();
            if !has_ublk {
                passed.push(format!("ublk: {NO_UBLK}"));
            } else {
                match attach_ublk(vol, trace.clone(), cfg, take) {
                    Ok(u) => return Ok(Attached::Ublk(u)),
                    Err(e) => passed.push(format!("ublk: {e}")),
                }
            }
            if !has_nbd {
                passed.push(format!("kernel nbd: {NO_NBD}"));
            } else {
                match attach_nbd(vol, trace.clone(), cfg) {
                    Ok(k) => {
                        tracing::info!(passed_over = ?passed, "front end: kernel nbd");
                        return Ok(Attached::Kernel(k));
                    }
                    Err(e) => passed.push(format!("kernel nbd: {e}")),
                }
            }
            tracing::info!(passed_over = ?passed, "front end: FUSE + loop");
            clear_stale_fuse_mounts();
            attach_fuse(vol, trace).map(Attached::Fuse)
        }
    }
}

const NO_UBLK: &str = "no ublk driver (no /dev/ublk-control, modprobe ublk_drv failed; it \
                       needs Linux 6.0+ built with CONFIG_BLK_DEV_UBLK)";
const NO_NBD: &str = "no kernel nbd driver (no /dev/nbd0, modprobe nbd failed)";

fn attach_ublk(
    vol: &Arc<Volume>,
    trace: Option<Arc<ReadTrace>>,
    cfg: &AttachConfig,
    take: ublk::Take,
) -> Result<ublk::Ublk> {
    let queues = std::thread::available_parallelism().map_or(2, |n| n.get().min(4)) as u16;
    let u = ublk::Ublk::attach(vol, trace, queues, take, cfg.reconnect_timeout)?;
    tracing::info!(
        device = %u.device(),
        queues,
        recovered = u.recovered(),
        user_copy = u.user_copy(),
        "front end: ublk"
    );
    Ok(u)
}

fn attach_nbd(
    vol: &Arc<Volume>,
    trace: Option<Arc<ReadTrace>>,
    cfg: &AttachConfig,
) -> Result<kernel_nbd::KernelNbd> {
    let opts = kernel_nbd::NbdOptions {
        conns: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        control: if cfg.frontend == Frontend::NbdIoctl {
            kernel_nbd::Control::Ioctl
        } else {
            kernel_nbd::Control::Netlink
        },
        reconnect_timeout: cfg.reconnect_timeout,
        recover_only: cfg.recover,
    };
    let k = kernel_nbd::KernelNbd::attach(vol, trace, &opts)?;
    tracing::info!(
        device = %k.device(),
        conns = opts.conns,
        control = k.control(),
        recovered = k.recovered(),
        "attached through the kernel nbd driver"
    );
    Ok(k)
}

fn attach_fuse(vol: &Arc<Volume>, trace: Option<Arc<ReadTrace>>) -> Result<FuseLoop> {
    // A new folder of our own (mode 0700, a random part, never one that already
    // exists): a name others could guess and make first would hand them the mount.
    // It ends in our PID, which `clear_stale_fuse_mounts` reads.
    let mountdir = std::env::temp_dir().join(format!(
        "mindcastle-{}-{}-{}",
        vol.uuid(),
        &uuid::Uuid::new_v4().simple().to_string()[..12],
        std::process::id()
    ));
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&mountdir)
            .map_err(|e| Error::io(format!("creating {}", mountdir.display()), e))?;
    }
    let meta =
        std::fs::metadata(&mountdir).map_err(|e| Error::io(mountdir.display().to_string(), e))?;
    let fs = fuse::DiskFs::new(vol.clone(), trace, meta.uid(), meta.gid());
    let opts = [
        fuser::MountOption::FSName("mindcastle".into()),
        fuser::MountOption::Subtype("mindcastle".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::NoExec,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoDev,
    ];
    let session = fuser::spawn_mount2(fs, &mountdir, &opts).map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "FUSE mount at {} failed: {e} (is /dev/fuse there, and fuse3 installed?)",
                mountdir.display()
            ),
        )
    })?;
    let mut a = FuseLoop {
        device: String::new(),
        session: Some(session),
        mountdir,
    };
    a.device = loopdev::attach(&a.mountdir.join(fuse::DISK_NAME))?;
    tracing::info!(device = %a.device, "attached through FUSE and a loop device");
    Ok(a)
}

/// Runs the attach until the disk is detached; returns the process exit code.
pub fn run(cfg: &AttachConfig) -> Result<u8> {
    let script = Script::resolve(&cfg.script)?;
    // Signals first, so none is lost between attach and the loop below.
    let mut signals = Signals::new([
        SIGHUP, SIGINT, SIGTERM, SIGUSR1, SIGUSR2, SIGQUIT, SIGPIPE, SIGALRM,
    ])
    .map_err(|e| Error::io("installing signal handlers", e))?;
    let handed = if cfg.hand_over {
        Some(ask_for_hand_over(&cfg.swap)?)
    } else {
        None
    };
    let event = if cfg.swap.exists() {
        Event::Open
    } else {
        Event::Create
    };
    let vol = match event {
        Event::Create => {
            let v = Volume::create(&cfg.swap, cfg.size)?;
            eprintln!(
                "mindcastle: created {} ({} bytes, uuid {})",
                cfg.swap.display(),
                v.size(),
                v.uuid()
            );
            v
        }
        _ if handed.is_some() => open_after_hand_over(&cfg.swap)?,
        _ => {
            let v = Volume::open(&cfg.swap, &OpenOptions::default())?;
            if cfg.size_given && v.size() != cfg.size {
                eprintln!(
                    "mindcastle: {} exists ({} bytes); the size given ({} bytes) is only \
                     used when creating a disk, and was ignored",
                    cfg.swap.display(),
                    v.size(),
                    cfg.size
                );
            }
            v
        }
    };
    let vol = Arc::new(vol);
    // Stopped (and its fetches waited for) when the attach returns.
    let _prefetch = match &cfg.prefetch {
        Some(p) => {
            vol.check_prefetch_target()?;
            vol.prefetch_in_background(crate::volume::prefetch::read_trace(p)?)
        }
        None => None,
    };
    let trace = match &cfg.trace {
        Some(p) => Some(Arc::new(ReadTrace::open(p)?)),
        None => None,
    };
    sys::harden_for_block_serving();
    let mut att = match handed {
        Some(handover::Handed::Nbd { index, conns }) => Attached::Kernel(
            kernel_nbd::KernelNbd::adopt(&vol, trace.clone(), index, conns)?,
        ),
        Some(handover::Handed::Ublk { id }) => Attached::Ublk(attach_ublk(
            &vol,
            trace.clone(),
            cfg,
            ublk::Take::HandedOver(id),
        )?),
        None => attach_device(&vol, trace.clone(), cfg)?,
    };
    let event = match &att {
        Attached::Kernel(k) if k.recovered() => Event::Recover,
        Attached::Ublk(u) if u.recovered() => Event::Recover,
        _ => event,
    };
    let uuid = vol.uuid().to_string();
    let pid = std::process::id();
    match script.run(event, att.device(), &uuid, None) {
        Ok(Some(0)) => {}
        other => {
            let why = match other {
                Ok(Some(c)) => format!("exit status {c}"),
                Ok(None) => "killed by a signal".to_string(),
                Err(e) => e.to_string(),
            };
            att.detach();
            finish(vol, trace)?;
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "statechange script {} failed on {} ({why}); disk detached",
                    script.path().display(),
                    event.as_str()
                ),
            ));
        }
    }
    eprintln!(
        "mindcastle: {} is {} ({}{}, uuid {uuid}); detach with Ctrl-C or kill -HUP {pid}",
        cfg.swap.display(),
        att.device(),
        att.kind(),
        if event == Event::Recover {
            ", taken over from a killed attach"
        } else {
            ""
        }
    );
    let listener = match &att {
        Attached::Kernel(k) if k.control() == "netlink" => Some(handover::Listener::start(&uuid)),
        Attached::Ublk(_) => Some(handover::Listener::start(&uuid)),
        _ => None,
    };
    let mut closed = false;
    let mut handed_over = false;
    for sig in signals.forever() {
        match sig {
            SIGHUP => {
                if !closed {
                    closed = true;
                    run_logged(&script, Event::Close, att.device(), &uuid, None);
                }
            }
            SIGINT | SIGTERM => {
                if !closed {
                    run_logged(&script, Event::Close, att.device(), &uuid, None);
                }
                break;
            }
            SIGUSR1 => {
                for r in crate::volume::request::on_sigusr1(&vol) {
                    match r {
                        Ok(snap) => {
                            let id = snap.id.to_hex();
                            eprintln!("mindcastle: snapshot {id}");
                            run_logged(&script, Event::Snapshot, att.device(), &uuid, Some(&id));
                        }
                        Err(e) => tracing::error!(error = %e, "snapshot failed"),
                    }
                }
            }
            SIGUSR2 => {
                let Some(peer) = listener.as_ref().and_then(|l| l.take()) else {
                    tracing::debug!("SIGUSR2 with no hand-over asked; ignored");
                    continue;
                };
                match hand_over(&mut att, &vol, peer) {
                    Ok(()) => {
                        handed_over = true;
                        break;
                    }
                    Err(e) => tracing::error!(error = %e, "hand-over failed; serving on"),
                }
            }
            other => tracing::debug!(signal = other, "ignored while attached"),
        }
    }
    if handed_over {
        // The new process serves the device now: no close, no disconnect. Everything
        // acknowledged was flushed and checkpointed before the connections went.
        if let Some(t) = trace {
            t.flush();
        }
        let dev = att.device().to_string();
        drop(att);
        drop(vol);
        eprintln!("mindcastle: handed {dev} over to the new attach; exiting");
        return Ok(0);
    }
    att.detach();
    drop(att);
    finish(vol, trace)?;
    eprintln!("mindcastle: detached");
    Ok(0)
}

/// The new side of a hand-over: the running attach's connections, asked for by the
/// disk's uuid (read from the `.swap` file without opening the disk it holds).
fn ask_for_hand_over(swap: &Path) -> Result<handover::Handed> {
    let name = swap.display().to_string();
    let text = std::fs::read_to_string(swap).map_err(|e| Error::io(&name, e))?;
    let sf = crate::format::swapfile::SwapFile::parse(&text, &name)?;
    handover::request(&sf.uuid)
}

/// Opens the disk once the attach that handed it over has let go of it (it exits right
/// after sending). If this fails, the connections close and the device waits for the
/// reconnect timeout: `attach --recover` takes it then.
fn open_after_hand_over(swap: &Path) -> Result<Volume> {
    let start = std::time::Instant::now();
    loop {
        match Volume::open(swap, &OpenOptions::default()) {
            Err(e) if e.kind() == ErrorKind::Busy && start.elapsed() < HAND_OVER_OPEN => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => {
                return Err(Error::new(
                    e.kind(),
                    format!(
                        "{e}; the device was handed over and now waits for `attach --recover` \
                         within its reconnect timeout"
                    ),
                ))
            }
            Ok(v) => return Ok(v),
        }
    }
}

/// How long the new side of a hand-over waits for the old one to let go of the disk.
const HAND_OVER_OPEN: std::time::Duration = std::time::Duration::from_secs(120);

/// The old side of a hand-over: stop taking requests, flush and checkpoint, then give
/// the new process the device (kernel nbd: the connections; ublk: the device's id, and
/// the kernel holds its I/O until the new process recovers it). On any failure this
/// process serves on.
fn hand_over(
    att: &mut Attached,
    vol: &Volume,
    mut peer: std::os::unix::net::UnixStream,
) -> Result<()> {
    let settle = |vol: &Volume| vol.flush().and_then(|()| vol.checkpoint().map(|_| ()));
    match att {
        Attached::Fuse(_) => {
            let why = "FUSE + loop devices cannot be handed over";
            handover::refuse(peer, why);
            Err(Error::new(ErrorKind::Unavailable, why.to_string()))
        }
        Attached::Ublk(u) => {
            if let Err(e) = u.pause(UBLK_PAUSE_WITHIN) {
                handover::refuse(peer, &e.to_string());
                return Err(e);
            }
            tracing::info!(device = u.device(), "handing over");
            match settle(vol).and_then(|()| handover::send_ublk(&mut peer, u.id())) {
                Ok(()) => {
                    u.handed_over();
                    Ok(())
                }
                Err(e) => {
                    handover::refuse(peer, &e.to_string());
                    u.resume();
                    Err(e)
                }
            }
        }
        Attached::Kernel(k) => {
            let conns = match k.pause_all() {
                Ok(c) => c,
                Err(e) => {
                    handover::refuse(peer, &e.to_string());
                    return Err(e);
                }
            };
            tracing::info!(device = k.device(), conns = conns.len(), "handing over");
            match settle(vol).and_then(|()| handover::send(&mut peer, k.index(), &conns)) {
                Ok(()) => {
                    k.handed_over();
                    Ok(())
                }
                Err(e) => {
                    handover::refuse(peer, &e.to_string());
                    k.resume(conns)?;
                    Err(e)
                }
            }
        }
    }
}

/// How long a ublk hand-over waits for the requests being worked on to finish.
const UBLK_PAUSE_WITHIN: std::time::Duration = std::time::Duration::from_secs(60);

fn run_logged(script: &Script, ev: Event, dev: &str, uuid: &str, snap: Option<&str>) {
    match script.run(ev, dev, uuid, snap) {
        Ok(Some(0)) => {}
        Ok(code) => tracing::warn!(event = ev.as_str(), ?code, "statechange script failed"),
        Err(e) => tracing::warn!(event = ev.as_str(), error = %e, "statechange script did not run"),
    }
}

fn finish(vol: Arc<Volume>, trace: Option<Arc<ReadTrace>>) -> Result<()> {
    if let Some(t) = trace {
        t.flush();
    }
    vol.flush()?;
    vol.checkpoint()?;
    Ok(())
}
