//! The ublk front end (Linux 6.0+ with `ublk_drv`): `/dev/ublkbN` served through
//! io_uring by the maintained `libublk` crate. One thread per queue runs the queue's
//! ring; each tag (an I/O slot of the queue) is a task on it. A request's work on the
//! disk (which may block: a chunk fetch, an fsync) runs on a blocking pool, and the
//! task waits for it on the ring through an eventfd read, so one slow request holds
//! only its own tag. Flush, FUA, discard and write-zeroes map as the NBD path maps them.
//!
//! Devices are added with user recovery (`UBLK_F_USER_RECOVERY` and `_REISSUE`): when
//! this process dies, the kernel quiesces the device and holds its I/O (requests the
//! dead process had taken are issued again) until a new process recovers it. The
//! device's libublk JSON (`/run/ublksrvd/ID.json`) carries the disk's uuid, which is
//! how the next attach of the disk finds it. A watchdog process (`ublk_watchdog`)
//! removes a device nobody recovered within the reconnect timeout, so its I/O fails
//! rather than waiting forever, as kernel nbd's dead-connection timeout does.
//!
//! A hand-over (an upgrade) is a planned recovery: the running attach stops taking
//! requests between two of them, flushes and checkpoints, and exits without removing
//! the device; the kernel quiesces it and holds what comes meanwhile (the requests it
//! had handed the old process are issued again) until the new process recovers it.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use libublk::ctrl::{UblkCtrl, UblkCtrlBuilder};
use libublk::helpers::IoBuf;
use libublk::io::{UblkDev, UblkQueue};
use libublk::uring_async::ublk_submit_sqe_async;
use libublk::{sys as ub, BufDesc, UblkError, UblkFlags, UblkUringData};

use super::sys::eventfd;
use crate::error::{Error, ErrorKind, Result};
use crate::trace::ReadTrace;
use crate::volume::Volume;

/// Largest request the kernel sends (and each tag's buffer).
const IO_BUF: u32 = 512 << 10;
/// Requests in flight per queue, like the NBD path's `MAX_IN_FLIGHT`.
const DEPTH: u16 = 64;
/// How long to wait for the device to come up and go.
const SETTLE: Duration = Duration::from_secs(20);

/// True when the ublk driver is there, loading it with `modprobe ublk_drv` if needed.
pub fn available() -> bool {
    super::driver_loaded(Path::new("/dev/ublk-control"), "ublk_drv")
}

fn ublk_err(what: &str, e: UblkError) -> Error {
    Error::new(ErrorKind::Unavailable, format!("ublk: {what}: {e}"))
}

/// What the device thread reports while bringing the device up.
enum Up {
    Added(Arc<UblkCtrl>),
    Started(u32),
    Failed(UblkError),
}

/// The device's queue limits: 512-byte logical blocks (like the other front ends),
/// 4 KiB physical, the disk's size, a volatile cache with FUA, discard and
/// write-zeroes.
fn params(size: u64, writable: bool) -> ub::ublk_params {
    ub::ublk_params {
        types: ub::UBLK_PARAM_TYPE_BASIC | ub::UBLK_PARAM_TYPE_DISCARD,
        basic: ub::ublk_param_basic {
            attrs: ub::UBLK_ATTR_VOLATILE_CACHE
                | ub::UBLK_ATTR_FUA
                | if writable { 0 } else { ub::UBLK_ATTR_READ_ONLY },
            logical_bs_shift: 9,
            physical_bs_shift: 12,
            io_opt_shift: 12,
            io_min_shift: 9,
            max_sectors: IO_BUF >> 9,
            dev_sectors: size >> 9,
            ..Default::default()
        },
        discard: ub::ublk_param_discard {
            discard_granularity: 4096,
            max_discard_sectors: 1 << 21,
            max_write_zeroes_sectors: 1 << 21,
            max_discard_segments: 1,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Gives the calling thread the control ring libublk sends its commands through.
pub(super) fn control_ring_here() -> Result<()> {
    libublk::ctrl::ublk_init_ctrl_task_ring(|ring| {
        if ring.is_none() {
            *ring = Some(
                io_uring::IoUring::<io_uring::squeue::Entry128>::builder()
                    .build(32)
                    .map_err(UblkError::IOError)?,
            );
        }
        Ok(())
    })
    .map_err(|e| ublk_err("control ring", e))
}

/// A ublk device while attached.
pub struct Ublk {
    id: u32,
    device: String,
    ctrl: Arc<UblkCtrl>,
    server: Option<std::thread::JoinHandle<()>>,
    _pool: tokio::runtime::Runtime,
    recovered: bool,
    gate: Arc<Gate>,
    /// Ended by a clean detach; left running by a hand-over or a failed removal.
    watchdog: Option<super::ublk_watchdog::Watchdog>,
}

/// Holds requests back for a hand-over: each tag counts itself active while it works on
/// a request, and parks before starting one while `stopping` is set.
#[derive(Default)]
struct Gate {
    stopping: AtomicBool,
    active: AtomicUsize,
}

/// Which device an attach serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// The device a killed attach of this disk left, else a new one.
    Any,
    /// Only the device a killed attach of this disk left (`--recover`).
    RecoverOnly,
    /// Device `N`, handed over by the running attach (which is exiting).
    HandedOver(u32),
}

/// True when a killed attach of disk `vol` left a ublk device for the next one to take.
pub fn has_device_to_recover(vol: &Volume) -> bool {
    let instance = super::nbd_netlink::instance(vol.data_dir());
    quiesced_device_of(vol.uuid(), &instance).is_some()
}

/// The uuid and instance (data folder hash) a device's JSON names, if it is ours.
pub(super) fn owner_of(id: u32) -> Option<(String, String)> {
    let path = Path::new(&UblkCtrl::run_dir()).join(format!("{id:04}.json"));
    let json = std::fs::read_to_string(path).ok()?;
    let v = serde_json::from_str::<serde_json::Value>(&json).ok()?;
    let ours = &v["target_data"]["mindcastle"];
    Some((
        ours["uuid"].as_str()?.to_string(),
        ours["instance"].as_str()?.to_string(),
    ))
}

/// The ublk device of disk `uuid` whose server died (quiesced, or about to be), if
/// any. `start_user_recover` waits (up to 30 s) for the kernel to quiesce it.
fn quiesced_device_of(uuid: &str, instance: &str) -> Option<u32> {
    let dir = std::fs::read_dir(UblkCtrl::run_dir()).ok()?;
    // libublk names them by id, zero-padded (`0000.json`).
    let mut ids: Vec<u32> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".json")?.parse().ok()
        })
        .collect();
    ids.sort_unstable();
    ids.into_iter().find_map(|id| {
        if owner_of(id)? != (uuid.to_string(), instance.to_string()) {
            return None;
        }
        let c = UblkCtrl::new_simple(i32::try_from(id).ok()?).ok()?;
        let info = c.dev_info();
        let state = u32::from(info.state);
        tracing::debug!(
            id,
            state,
            pid = info.ublksrv_pid,
            "a ublk device of this disk"
        );
        // The kernel notices a dead server within a few seconds and quiesces the
        // device; until then it still shows the dead server as live.
        let dead = state == ub::UBLK_S_DEV_QUIESCED
            || (state == ub::UBLK_S_DEV_LIVE
                && !Path::new(&format!("/proc/{}", info.ublksrv_pid)).exists());
        dead.then_some(id)
    })
}

impl Ublk {
    /// Serves `vol` on a ublk device with `queues` queues: the one `take` names, else a
    /// new one. A watchdog removes the device if this process dies and no attach
    /// recovers it within `reconnect_timeout`.
    pub fn attach(
        vol: &Arc<Volume>,
        trace: Option<Arc<ReadTrace>>,
        queues: u16,
        take: Take,
        reconnect_timeout: Duration,
    ) -> Result<Self> {
        // As for kernel nbd, the data folder tells a copy of the disk from the disk.
        let uuid = vol.uuid().to_string();
        let instance = super::nbd_netlink::instance(vol.data_dir());
        let recover = match take {
            Take::HandedOver(id) => {
                if owner_of(id) != Some((uuid.clone(), instance.clone())) {
                    return Err(Error::new(
                        ErrorKind::Unavailable,
                        format!("--hand-over: ublk device {id} is not this disk's"),
                    ));
                }
                Some(id)
            }
            Take::Any | Take::RecoverOnly => quiesced_device_of(&uuid, &instance),
        };
        if recover.is_none() && take == Take::RecoverOnly {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("--recover: no ublk device of disk {uuid} to take over"),
            ));
        }
        let gate = Arc::new(Gate::default());
        let gate2 = gate.clone();
        // The pool a request's work on the disk runs on (it may block).
        let pool = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(crate::nbd::BLOCKING_THREADS)
            .thread_name("mindcastle-ublk")
            .build()
            .map_err(|e| Error::io("starting the ublk pool", e))?;
        let handle = pool.handle().clone();
        let size = vol.size() / 512 * 512;
        let writable = vol.writable();
        let queues = queues.clamp(1, 16);
        let (tx, rx) = mpsc::channel();
        let v2 = vol.clone();
        // libublk's control commands go through a ring of the calling thread, so the
        // device is added and run on a thread of its own.
        let server = std::thread::Builder::new()
            .name("ublk-ctrl".into())
            .spawn(move || {
                if let Some(id) = recover {
                    // The kernel hands the quiesced device to whoever starts recovery.
                    let started = UblkCtrl::new_simple(id as i32)
                        .and_then(|c| c.start_user_recover().map(|_| ()));
                    if let Err(e) = started {
                        let _ = tx.send(Up::Failed(e));
                        return;
                    }
                }
                // User copy where the driver has it (Linux 6.5+); a recovered device
                // keeps the flags it was added with, whatever is asked here.
                let user_copy =
                    UblkCtrl::get_features().map_or(0, |f| f & u64::from(ub::UBLK_F_USER_COPY));
                let built = UblkCtrlBuilder::default()
                    .name("mindcastle")
                    .id(recover.map_or(-1, |id| id as i32))
                    .nr_queues(queues)
                    .depth(DEPTH)
                    .io_buf_bytes(IO_BUF)
                    .ctrl_flags(
                        u64::from(ub::UBLK_F_USER_RECOVERY | ub::UBLK_F_USER_RECOVERY_REISSUE)
                            | user_copy,
                    )
                    .dev_flags(if recover.is_some() {
                        UblkFlags::UBLK_DEV_F_RECOVER_DEV
                    } else {
                        UblkFlags::UBLK_DEV_F_ADD_DEV
                    })
                    .build();
                let ctrl = match built {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        let _ = tx.send(Up::Failed(e));
                        return;
                    }
                };
                let _ = tx.send(Up::Added(ctrl.clone()));
                let tgt_init = move |dev: &mut UblkDev| {
                    dev.tgt.dev_size = size;
                    dev.tgt.params = params(size, writable);
                    dev.set_target_json(serde_json::json!({
                        "mindcastle": { "uuid": uuid, "instance": instance }
                    }));
                    Ok(())
                };
                let q_fn = move |qid: u16, dev: &UblkDev| {
                    serve_queue(qid, dev, &v2, &handle, &gate2, trace.clone())
                };
                let tx2 = tx.clone();
                let ready = move |c: &UblkCtrl| {
                    let _ = tx2.send(Up::Started(c.dev_info().dev_id));
                };
                if let Err(e) = ctrl.run_target(tgt_init, q_fn, ready) {
                    let _ = tx.send(Up::Failed(e));
                }
            })
            .map_err(|e| Error::io("starting the ublk thread", e))?;
        let fail = |what: String| Error::new(ErrorKind::Unavailable, what);
        let ctrl = match rx.recv_timeout(SETTLE) {
            Ok(Up::Added(c)) => c,
            Ok(Up::Failed(e)) => return Err(ublk_err("adding a device", e)),
            _ => return Err(fail("ublk: the device was not added".into())),
        };
        let id = match rx.recv_timeout(SETTLE) {
            Ok(Up::Started(id)) => id,
            other => {
                // A device this attach added is removed (dropping the control does
                // that too, and needs a ring here). A device it was recovering holds
                // a file system's queued I/O: it stays quiesced for the next try.
                let _ = control_ring_here();
                if recover.is_none() {
                    let _ = ctrl.kill_dev();
                }
                return Err(match other {
                    Ok(Up::Failed(e)) => ublk_err("starting the device", e),
                    _ => fail(format!("ublk: the device did not start within {SETTLE:?}")),
                });
            }
        };
        let device = format!("/dev/ublkb{id}");
        let start = Instant::now();
        while !Path::new(&device).exists() && start.elapsed() < SETTLE {
            std::thread::sleep(Duration::from_millis(10));
        }
        let watchdog = super::ublk_watchdog::spawn(id, vol.data_dir(), reconnect_timeout);
        Ok(Self {
            id,
            device,
            ctrl,
            server: Some(server),
            _pool: pool,
            recovered: recover.is_some(),
            gate,
            watchdog,
        })
    }

    /// True when the device moves request bytes by user copy (`UBLK_F_USER_COPY`).
    pub fn user_copy(&self) -> bool {
        self.ctrl.dev_info().flags & u64::from(ub::UBLK_F_USER_COPY) != 0
    }

    /// The device's id (`N` of `/dev/ublkbN`).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Stops taking requests (each tag parks before its next one) and waits until none
    /// is being worked on, so a flush after this covers everything the kernel was told
    /// is done. Fails, serving on, if requests are still busy after `within`.
    pub fn pause(&self, within: Duration) -> Result<()> {
        self.gate.stopping.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while self.gate.active.load(Ordering::SeqCst) != 0 {
            if start.elapsed() > within {
                self.resume();
                return Err(Error::new(
                    ErrorKind::Busy,
                    format!("ublk requests still busy after {within:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Takes requests again after `pause`.
    pub fn resume(&self) {
        self.gate.stopping.store(false, Ordering::SeqCst);
    }

    /// After a hand-over: leaves the device to the new process. This process exits
    /// without removing it; the kernel quiesces it and issues again what was parked.
    pub fn handed_over(&mut self) {
        self.ctrl.disown();
        self.server = None;
    }

    /// True when this attach recovered a device a killed attach of the disk left.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// The block device, `/dev/ublkbN`.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Writes back what the kernel holds, stops and removes the device.
    pub fn detach(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        match File::open(&self.device).and_then(|f| f.sync_all()) {
            Ok(()) => {}
            Err(e) => tracing::warn!(device = %self.device, error = %e, "fsync before stopping"),
        }
        if let Err(e) = control_ring_here() {
            tracing::error!(device = %self.device, error = %e, "cannot stop the ublk device");
            return;
        }
        if let Err(e) = self.ctrl.kill_dev() {
            tracing::warn!(device = %self.device, error = %e, "stopping the ublk device");
        }
        if server.join().is_err() {
            tracing::error!(device = %self.device, "the ublk server thread panicked");
        }
        match self.ctrl.del_dev() {
            Ok(_) => {
                if let Some(w) = self.watchdog.take() {
                    w.end();
                }
            }
            // The device stays: its watchdog removes it after the reconnect timeout.
            Err(e) => {
                tracing::debug!(device = %self.device, error = %e, "removing the ublk device")
            }
        }
    }
}

impl Drop for Ublk {
    fn drop(&mut self) {
        self.detach();
    }
}

/// Runs one queue: a task per tag on this thread's ring until the queue goes down.
fn serve_queue(
    qid: u16,
    dev: &UblkDev,
    vol: &Arc<Volume>,
    pool: &tokio::runtime::Handle,
    gate: &Arc<Gate>,
    trace: Option<Arc<ReadTrace>>,
) {
    let q = match UblkQueue::new(qid, dev) {
        Ok(q) => Rc::new(q),
        Err(e) => {
            tracing::error!(qid, error = %e, "ublk queue setup failed");
            return;
        }
    };
    let exe = Rc::new(smol::LocalExecutor::new());
    let load = Rc::new(QueueLoad {
        pending: Cell::new(0),
        offloaded: Cell::new(0),
        unpinned: Cell::new(false),
        cap: std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1)),
    });
    let mut tasks = Vec::new();
    for tag in q.tags() {
        let (q, vol, pool, gate, load, trace) = (
            q.clone(),
            vol.clone(),
            pool.clone(),
            gate.clone(),
            load.clone(),
            trace.clone(),
        );
        tasks.push(exe.spawn(async move {
            match serve_tag(&q, tag, vol, pool, &gate, &load, trace.as_deref()).await {
                Err(UblkError::QueueIsDown) | Ok(()) => {}
                Err(e) => tracing::error!(qid, tag, error = %e, "ublk tag ended"),
            }
        }));
    }
    let e2 = exe.clone();
    smol::block_on(exe.run(async move {
        let run_ops = || while e2.try_tick() {};
        let done = || tasks.iter().all(|t| t.is_finished());
        if let Err(e) = libublk::wait_and_handle_io_events(&q, Some(20), run_ops, done).await {
            tracing::error!(qid, error = %e, "ublk queue ended");
        }
    }));
}

/// How busy one queue's thread is, for choosing where a small request runs. The kernel
/// puts a submitter's requests on its CPU's queue, so one busy process fills one queue:
/// done all on the queue's thread they would leave the other cores idle, and all on
/// the pool they would each pay two thread switches.
struct QueueLoad {
    /// Requests this queue's tags hold (received, not yet answered).
    pending: Cell<usize>,
    /// Of those, the ones on the pool now.
    offloaded: Cell<usize>,
    /// At most this many on the pool at once (the other cores).
    cap: usize,
    /// Whether the queue's thread may run on every CPU yet (see `serve_tag`).
    unpinned: Cell<bool>,
}

/// What a request's work hands back to its tag: the result (bytes or -errno) and, for
/// a read, the bytes.
type Done = Arc<Mutex<Option<(i32, Vec<u8>)>>>;

async fn serve_tag(
    q: &UblkQueue<'_>,
    tag: u16,
    vol: Arc<Volume>,
    pool: tokio::runtime::Handle,
    gate: &Gate,
    load: &QueueLoad,
    trace: Option<&ReadTrace>,
) -> std::result::Result<(), UblkError> {
    // With user copy (the device's flags say, as the kernel set them) a request's bytes
    // move between the kernel's pages and our buffers by pread/pwrite on the char
    // device; else through a buffer per tag, one more copy each way.
    let mut data = if q.dev.dev_info.flags & u64::from(ub::UBLK_F_USER_COPY) != 0 {
        TagData::UserCopy {
            cdev: q.dev.tgt.fds[0],
            pos: libublk::io::UblkIOCtx::ublk_user_copy_pos(q.get_qid(), tag, 0),
        }
    } else {
        TagData::Buffer(IoBuf::<u8>::new(q.dev.dev_info.max_io_buf_bytes as usize))
    };
    let efd = Arc::new(File::from(eventfd().map_err(|e| {
        UblkError::OtherError(-e.raw_os_error().unwrap_or(libc::EIO))
    })?));
    q.submit_io_prep_cmd(tag, data.desc(), 0, data.buf())
        .await?;
    loop {
        // A hand-over waits for `active` to reach 0 after setting `stopping`; counting
        // before looking (both SeqCst) means one of the two always sees the other.
        gate.active.fetch_add(1, Ordering::SeqCst);
        while gate.stopping.load(Ordering::SeqCst) {
            gate.active.fetch_sub(1, Ordering::SeqCst);
            nap_on_ring(Duration::from_millis(20)).await?;
            gate.active.fetch_add(1, Ordering::SeqCst);
        }
        load.pending.set(load.pending.get() + 1);
        if !load.unpinned.replace(true) {
            // libublk pins a queue's thread to the CPUs whose requests it gets (once
            // the thread runs, so undone at the first request): one busy submitter
            // then shares its CPU with the thread serving it while the others idle.
            // Unpinned, the scheduler spreads them, as it does the NBD path's threads.
            if let Err(e) = super::sys::allow_every_cpu() {
                tracing::debug!(error = %e, "the ublk queue thread stays pinned");
            }
        }
        let iod = q.get_iod(tag);
        let op = iod.op_flags & 0xff;
        let fua = iod.op_flags & ub::UBLK_IO_F_FUA != 0;
        let off = iod.start_sector << 9;
        let bytes = (iod.nr_sectors as usize) << 9;
        if let (Some(t), ub::UBLK_IO_OP_READ) = (trace, op) {
            t.record(off, bytes as u64);
        }
        // Only reads and writes carry data; a discard or write-zeroes may span far more
        // than a request's buffer.
        let carries = op == ub::UBLK_IO_OP_READ || op == ub::UBLK_IO_OP_WRITE;
        let input = if op == ub::UBLK_IO_OP_WRITE && bytes <= IO_BUF as usize {
            data.take(bytes)
        } else {
            Ok(Vec::new())
        };
        let res = if carries && bytes > IO_BUF as usize {
            -libc::EINVAL
        } else if let Err(errno) = input {
            -errno
        } else if runs_inline(&vol, op, off, bytes, fua) && {
            // Let the other requests that came with this one count themselves first;
            // while more wait here, up to `cap` of them go to the other cores.
            smol::future::yield_now().await;
            load.pending.get() <= 1 || load.offloaded.get() >= load.cap
        } {
            // Microseconds of work: done here, without the two thread switches of the
            // pool (as the NBD session runs them on its task).
            let (res, out) = execute(&vol, op, off, bytes, fua, input.unwrap_or_default());
            data.give(res, &out)
        } else {
            let input = input.unwrap_or_default();
            load.offloaded.set(load.offloaded.get() + 1);
            let done: Done = Arc::default();
            let (d2, v2, e2) = (done.clone(), vol.clone(), efd.clone());
            pool.spawn_blocking(move || {
                let r = execute(&v2, op, off, bytes, fua, input);
                if let Ok(mut d) = d2.lock() {
                    *d = Some(r);
                }
                // Wakes the tag's read on the ring.
                let _ = (&*e2).write_all(&1u64.to_ne_bytes());
            });
            let mut count = [0u8; 8];
            let sqe = io_uring::opcode::Read::new(
                io_uring::types::Fd(efd.as_raw_fd()),
                count.as_mut_ptr(),
                8,
            )
            .build();
            let woke = ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await;
            load.offloaded.set(load.offloaded.get().saturating_sub(1));
            woke?;
            let (res, out) = done
                .lock()
                .ok()
                .and_then(|mut d| d.take())
                .unwrap_or((-libc::EIO, Vec::new()));
            data.give(res, &out)
        };
        gate.active.fetch_sub(1, Ordering::SeqCst);
        load.pending.set(load.pending.get().saturating_sub(1));
        q.submit_io_commit_cmd(tag, data.desc(), res).await?;
    }
}

/// Where a tag's request bytes are.
enum TagData {
    /// A buffer of the tag's own, which the kernel copies to and from.
    Buffer(IoBuf<u8>),
    /// None: pread/pwrite at `pos` of the char device `cdev` (`UBLK_F_USER_COPY`).
    UserCopy { cdev: std::os::fd::RawFd, pos: u64 },
}

impl TagData {
    fn desc(&self) -> BufDesc<'_> {
        match self {
            TagData::Buffer(b) => BufDesc::Slice(b.as_slice()),
            TagData::UserCopy { .. } => BufDesc::Slice(&[]),
        }
    }

    fn buf(&self) -> Option<&IoBuf<u8>> {
        match self {
            TagData::Buffer(b) => Some(b),
            TagData::UserCopy { .. } => None,
        }
    }

    /// A write's `bytes` bytes, or an errno.
    fn take(&self, bytes: usize) -> std::result::Result<Vec<u8>, i32> {
        match self {
            TagData::Buffer(b) => Ok(b.as_slice()[..bytes].to_vec()),
            TagData::UserCopy { cdev, pos } => {
                let mut v = vec![0u8; bytes];
                super::sys::pread_exact_at(*cdev, &mut v, *pos)
                    .map(|()| v)
                    .map_err(|e| {
                        tracing::warn!(error = %e, "ublk user copy of a write");
                        e.raw_os_error().unwrap_or(libc::EIO)
                    })
            }
        }
    }

    /// Hands a read's bytes to the kernel; the result to commit.
    fn give(&mut self, res: i32, out: &[u8]) -> i32 {
        if res <= 0 || out.is_empty() {
            return res;
        }
        match self {
            TagData::Buffer(b) => {
                b.as_mut_slice()[..out.len()].copy_from_slice(out);
                res
            }
            TagData::UserCopy { cdev, pos } => match super::sys::pwrite_all_at(*cdev, out, *pos) {
                Ok(()) => res,
                Err(e) => {
                    tracing::warn!(error = %e, "ublk user copy of a read");
                    -e.raw_os_error().unwrap_or(libc::EIO)
                }
            },
        }
    }
}

/// Sleeps a tag for `d` with a timeout on the queue's ring (the queue thread must keep
/// handling the ring's other completions meanwhile).
async fn nap_on_ring(d: Duration) -> std::result::Result<(), UblkError> {
    let ts = io_uring::types::Timespec::from(d);
    let sqe = io_uring::opcode::Timeout::new(&ts).build();
    // Ends with -ETIME, which is the point.
    let _ = ublk_submit_sqe_async(sqe, UblkUringData::Target as u64).await?;
    Ok(())
}

/// Largest read or write run on the queue's own thread.
const INLINE_MAX: usize = 64 << 10;

/// Whether a request is small work that cannot wait long: a read of a disk with no
/// remote to fetch from, or a write of whole blocks without FUA (no read-modify-write,
/// no fsync) while no checkpoint holds writers back.
fn runs_inline(vol: &Volume, op: u32, off: u64, bytes: usize, fua: bool) -> bool {
    let block = crate::format::BLOCK_SIZE;
    bytes <= INLINE_MAX
        && match op {
            ub::UBLK_IO_OP_READ => vol.local_only(),
            ub::UBLK_IO_OP_WRITE => {
                !fua && off.is_multiple_of(block as u64)
                    && bytes.is_multiple_of(block)
                    && !vol.write_may_wait()
            }
            _ => false,
        }
}

/// One request on the disk: the bytes done, or -errno.
fn execute(
    vol: &Volume,
    op: u32,
    off: u64,
    bytes: usize,
    fua: bool,
    input: Vec<u8>,
) -> (i32, Vec<u8>) {
    let mut out = Vec::new();
    let r = match op {
        ub::UBLK_IO_OP_READ => {
            out = vec![0u8; bytes];
            vol.read_at(off, &mut out)
        }
        ub::UBLK_IO_OP_WRITE => vol.write_at(off, &input),
        ub::UBLK_IO_OP_FLUSH => vol.flush(),
        ub::UBLK_IO_OP_DISCARD | ub::UBLK_IO_OP_WRITE_ZEROES => vol.write_zeroes(off, bytes as u64),
        _ => return (-libc::EINVAL, out),
    };
    let r = r.and_then(|()| {
        if fua && op != ub::UBLK_IO_OP_FLUSH {
            vol.flush()
        } else {
            Ok(())
        }
    });
    match r {
        // The kernel takes the byte count of a read or write (at most IO_BUF) and
        // ignores it for the others.
        Ok(()) if op == ub::UBLK_IO_OP_READ || op == ub::UBLK_IO_OP_WRITE => (bytes as i32, out),
        Ok(()) => (0, out),
        Err(e) => {
            tracing::warn!(error = %e, op, off, "ublk request failed");
            (-e.errno(), out)
        }
    }
}
