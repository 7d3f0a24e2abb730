//! The ublk reconnect timeout. The kernel holds a quiesced ublk device's I/O until a
//! new server recovers it, with no time limit (Linux 6.12); kernel nbd fails it after
//! its dead-connection timeout. So each ublk attach starts a small watchdog process
//! (`mindcastle ublk-watchdog`, in a process group of its own so a terminal's Ctrl-C
//! does not reach it) that outlives a kill of the attach: once the device's server has
//! been dead for the timeout and no process holds the disk (an attach recovering it
//! would), it takes the disk's lock, so no attach starts meanwhile, and removes the
//! device; the file system on it then sees I/O errors, and the next attach makes a
//! new device. The watchdog exits when the device goes (a clean detach) or another
//! live process serves it (a recovery or hand-over, which starts its own watchdog).
//!
//! A watchdog killed with its attach (say, a supervisor killing the whole cgroup) leaves
//! the device waiting with no limit, as the kernel alone would.

use std::path::Path;
use std::time::{Duration, Instant};

use libublk::ctrl::UblkCtrl;
use libublk::sys as ub;

use crate::error::{Error, ErrorKind, Result};
use crate::volume::disk_files::DiskLock;

/// How often the watchdog looks at the device.
const TICK: Duration = Duration::from_millis(250);

/// The watchdog process of a device this attach serves.
pub struct Watchdog(std::process::Child);

impl Watchdog {
    /// Ends the watchdog once a clean detach has removed its device. It would see that
    /// within a tick and exit by itself, but until then it holds the ublk control
    /// device open, and `rmmod ublk_drv` right after the detach would fail (EAGAIN).
    pub fn end(mut self) {
        if let Err(e) = self.0.kill() {
            tracing::debug!(error = %e, "ending the ublk watchdog");
        }
        let _ = self.0.wait();
    }
}

/// Starts the watchdog of device `id`, served by this process, for the disk whose data
/// folder is `data_dir`. A watchdog that cannot start is logged: the device then waits
/// for a recovery with no limit. The process is left running when its handle drops
/// (a hand-over: it exits once the new process serves the device).
pub fn spawn(id: u32, data_dir: &Path, timeout: Duration) -> Option<Watchdog> {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "no ublk watchdog (cannot find this binary)");
            return None;
        }
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("ublk-watchdog")
        .arg("--device")
        .arg(id.to_string())
        .arg("--server-pid")
        .arg(std::process::id().to_string())
        .arg("--timeout")
        .arg(format!("{}s", timeout.as_secs()))
        .arg(data_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    match cmd.spawn() {
        Ok(child) => Some(Watchdog(child)),
        Err(e) => {
            tracing::warn!(error = %e, "no ublk watchdog; a dead attach's device waits with no limit");
            None
        }
    }
}

/// What the watchdog sees of its device on one look.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// The device is gone, or is now another disk's: nothing to watch.
    Gone,
    /// Another live process serves it now.
    Recovered,
    /// Its server lives.
    Served,
    /// Its server is dead and nobody has recovered it.
    Orphaned,
    /// Cannot tell this time.
    Unsure,
}

fn look(id: u32, server: i32, owner: &(String, String)) -> Seen {
    let Ok(ctrl) = UblkCtrl::new_simple(id as i32) else {
        return Seen::Gone;
    };
    match super::ublk::owner_of(id) {
        Some(o) if &o == owner => {}
        Some(_) => return Seen::Gone,
        // Its JSON is being rewritten (a recovery does that) or is unreadable: look
        // again next tick.
        None => return Seen::Unsure,
    }
    let info = ctrl.dev_info();
    let pid = info.ublksrv_pid;
    let alive = |p: i32| p > 0 && Path::new(&format!("/proc/{p}")).exists();
    if pid != server && u32::from(info.state) == ub::UBLK_S_DEV_LIVE && alive(pid) {
        return Seen::Recovered;
    }
    if alive(server) && pid == server {
        return Seen::Served;
    }
    Seen::Orphaned
}

/// Runs the watchdog (the `ublk-watchdog` command) until its device goes, another
/// process serves it, or it removes it.
pub fn run(id: u32, server: i32, data_dir: &Path, timeout: Duration) -> Result<()> {
    super::ublk::control_ring_here()?;
    let Some(owner) = super::ublk::owner_of(id) else {
        return Ok(());
    };
    let mut dead_since: Option<Instant> = None;
    loop {
        match look(id, server, &owner) {
            Seen::Gone | Seen::Recovered => return Ok(()),
            Seen::Served => dead_since = None,
            Seen::Unsure => {}
            Seen::Orphaned => {
                let since = *dead_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= timeout {
                    // An attach that holds the disk is recovering the device (or is
                    // about to): leave it that. Holding the lock keeps one from starting
                    // while the device goes.
                    match DiskLock::take(data_dir, true) {
                        Ok(lock) => {
                            if look(id, server, &owner) == Seen::Orphaned {
                                remove(id, timeout)?;
                            }
                            drop(lock);
                            return Ok(());
                        }
                        Err(e) if e.kind() == ErrorKind::Busy => {
                            tracing::debug!(id, "the disk is open; its attach recovers the device")
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        std::thread::sleep(TICK);
    }
}

fn remove(id: u32, timeout: Duration) -> Result<()> {
    let ctrl = UblkCtrl::new_simple(id as i32)
        .map_err(|e| Error::new(ErrorKind::Unavailable, format!("ublk device {id}: {e}")))?;
    tracing::warn!(
        device = format!("/dev/ublkb{id}"),
        "no attach recovered this device within the reconnect timeout ({}s); removing it \
         (its I/O fails)",
        timeout.as_secs()
    );
    eprintln!(
        "mindcastle: /dev/ublkb{id}: not recovered within {}s; removed, its I/O fails",
        timeout.as_secs()
    );
    if let Err(e) = ctrl.kill_dev() {
        tracing::debug!(id, error = %e, "stopping the orphaned device");
    }
    ctrl.del_dev().map_err(|e| {
        Error::new(
            ErrorKind::Unavailable,
            format!("removing /dev/ublkb{id}: {e}"),
        )
    })?;
    Ok(())
}
