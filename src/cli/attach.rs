//! `mindcastle [attach] [--size 100G | -s GiB] [--trace FILE | -t FILE] [--fuse] NAME.swap SCRIPT`

use std::process::ExitCode;

use super::size_args::SizeArgs;
use super::PathArg;
use crate::attach::{run as attach, AttachConfig, Frontend};
use crate::error::{Error, Result};
use crate::volume::DEFAULT_SIZE;

/// Arguments of `attach` (also the two-argument form of the original).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    size: SizeArgs,
    /// Log every read (offset, length, time in ns) to FILE.
    #[arg(short, long)]
    trace: Option<PathArg>,
    /// Use the FUSE + loop path even where kernel nbd exists (`--frontend fuse`).
    #[arg(long)]
    fuse: bool,
    /// The block device front end: auto (ublk, else kernel nbd, else FUSE + loop), ublk,
    /// nbd, nbd-ioctl or fuse.
    #[arg(long, default_value = "auto")]
    frontend: String,
    /// How long a ublk or kernel nbd device's I/O waits after this process dies, for the
    /// next attach of the disk to take it over (then: I/O errors).
    /// (Default 60s; not for fuse or nbd-ioctl.)
    #[arg(long)]
    reconnect_timeout: Option<String>,
    /// Take over the device a killed attach of this disk left; fail if there is none.
    #[arg(long)]
    recover: bool,
    /// Take the device over from the running attach of this disk (an upgrade): it hands
    /// its connections to this process and exits; the device never goes away.
    #[arg(long, conflicts_with = "recover")]
    hand_over: bool,
    /// Warm the cache from a read trace (`--trace` output) beside the device (the
    /// `.swap` needs `cache=`).
    #[arg(long)]
    prefetch: Option<PathArg>,
    /// The disk (created if missing).
    swap: PathArg,
    /// The statechange script (a path; must be executable).
    script: String,
}

/// Runs `attach`.
pub fn run(a: Args) -> Result<ExitCode> {
    let size = a.size.bytes_or(DEFAULT_SIZE)?;
    let mut frontend = Frontend::parse(&a.frontend)?;
    if a.fuse {
        if !matches!(frontend, Frontend::Auto | Frontend::Fuse) {
            return Err(Error::invalid(format!(
                "--fuse and --frontend {} contradict each other",
                a.frontend
            )));
        }
        frontend = Frontend::Fuse;
    }
    if a.recover && frontend == Frontend::Fuse {
        return Err(Error::invalid(
            "--recover takes over a kernel nbd or ublk device; FUSE + loop devices go with \
             their process",
        ));
    }
    if a.hand_over && matches!(frontend, Frontend::Fuse | Frontend::NbdIoctl) {
        return Err(Error::invalid(
            "--hand-over takes a ublk device or a kernel nbd device set up through netlink; \
             this front end cannot be handed over",
        ));
    }
    if a.hand_over && !a.swap.exists() {
        return Err(Error::invalid(format!(
            "--hand-over: {} does not exist (nothing runs it)",
            a.swap.display()
        )));
    }
    let given = a.reconnect_timeout.as_deref();
    if given.is_some() && matches!(frontend, Frontend::Fuse | Frontend::NbdIoctl) {
        return Err(Error::invalid(format!(
            "--reconnect-timeout applies to ublk and kernel nbd through netlink, not to \
             --frontend {}",
            if a.fuse { "fuse" } else { a.frontend.as_str() }
        )));
    }
    let text = given.unwrap_or("60s");
    let reconnect_timeout = super::parse_duration(text, "--reconnect-timeout")?;
    if reconnect_timeout.as_secs() == 0 || reconnect_timeout.subsec_nanos() != 0 {
        return Err(Error::invalid(format!(
            "--reconnect-timeout {text}: whole seconds, at least 1s (the kernel counts seconds)"
        )));
    }
    let cfg = AttachConfig {
        swap: a.swap,
        script: a.script,
        size,
        size_given: a.size.given(),
        trace: a.trace,
        frontend,
        reconnect_timeout,
        recover: a.recover,
        hand_over: a.hand_over,
        prefetch: a.prefetch,
    };
    Ok(ExitCode::from(attach(&cfg)?))
}

/// Arguments of the hidden `ublk-watchdog` command (`attach::ublk_watchdog`).
#[derive(clap::Args, Debug)]
pub struct WatchdogArgs {
    /// The ublk device id (`N` of `/dev/ublkbN`).
    #[arg(long)]
    device: u32,
    /// The attach serving it.
    #[arg(long)]
    server_pid: i32,
    /// How long the device may go unserved.
    #[arg(long)]
    timeout: String,
    /// The disk's data folder.
    data_dir: PathArg,
}

/// Runs `ublk-watchdog`.
pub fn watchdog(a: WatchdogArgs) -> Result<ExitCode> {
    let timeout = super::parse_duration(&a.timeout, "--timeout")?;
    crate::attach::ublk_watchdog::run(a.device, a.server_pid, &a.data_dir, timeout)?;
    Ok(ExitCode::SUCCESS)
}
