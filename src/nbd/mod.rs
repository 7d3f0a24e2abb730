//! NBD server: fixed-newstyle handshake (`handshake`), then the transmission phase
//! (`session`) with many requests in flight, replies in any order. Async (tokio) at the
//! edge; the volume is called through `spawn_blocking`. Wire types live in `nbd-proto`.

mod access;
mod handshake;
mod server;
mod session;
mod tls;

pub use access::AccessList;
pub use server::{serve, Listen, ServeConfig};
pub use session::run as serve_transmission;
pub use session::{run_pausable, PauseSignal, Paused};
pub use tls::Tls;

/// Largest READ/WRITE payload accepted (also advertised as the maximum block size).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Advertised minimum block size.
pub const MIN_BLOCK: u32 = 512;
/// Advertised preferred block size.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Threads that run requests against the volume (tokio's blocking pool): enough to
/// keep many remote fetches waiting at once; each thread's stack and the allocator's
/// state for it cost memory, so the pool is bounded.
pub const BLOCKING_THREADS: usize = 32;
/// Largest NBD_CMD_CACHE range: on a disk behind a URL a CACHE fetches its whole
/// range, so one request may not ask for gigabytes.
pub const MAX_CACHE: u32 = 64 << 20;
/// Requests served at once per connection.
pub const MAX_IN_FLIGHT: usize = 64;

/// Seconds a client may take to send a WRITE's payload once its header came
/// (`MINDCASTLE_NBD_PAYLOAD_TIMEOUT`, 1 to 3600, default 30): the payload holds a share
/// of the request buffer budget, so a client that stalls mid-payload is cut off rather
/// than starving the others.
pub const PAYLOAD_TIMEOUT_ENV: &str = "MINDCASTLE_NBD_PAYLOAD_TIMEOUT";
const DEFAULT_PAYLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
static PAYLOAD_TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

/// Seconds from a connection's accept to the end of its handshake (TLS included)
/// (`MINDCASTLE_NBD_HANDSHAKE_TIMEOUT`, 1 to 3600, default 10, as qemu-nbd's): a client
/// that connects and says nothing is cut off, so idle connections cannot fill the
/// server.
pub const HANDSHAKE_TIMEOUT_ENV: &str = "MINDCASTLE_NBD_HANDSHAKE_TIMEOUT";
const DEFAULT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
static HANDSHAKE_TIMEOUT: std::sync::OnceLock<std::time::Duration> = std::sync::OnceLock::new();

fn seconds_env(
    name: &str,
    slot: &std::sync::OnceLock<std::time::Duration>,
) -> crate::error::Result<()> {
    let Some(v) = std::env::var_os(name) else {
        return Ok(());
    };
    let secs = v
        .to_str()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|s| (1..=3600).contains(s))
        .ok_or_else(|| {
            crate::error::Error::invalid(format!(
                "{name}={}: expected whole seconds from 1 to 3600",
                v.to_string_lossy()
            ))
        })?;
    let _ = slot.set(std::time::Duration::from_secs(secs));
    Ok(())
}

/// Reads and checks the NBD timeouts' variables once, at start-up.
pub fn configure_payload_timeout() -> crate::error::Result<()> {
    seconds_env(PAYLOAD_TIMEOUT_ENV, &PAYLOAD_TIMEOUT)?;
    seconds_env(HANDSHAKE_TIMEOUT_ENV, &HANDSHAKE_TIMEOUT)
}

/// The handshake deadline in force.
pub fn handshake_timeout() -> std::time::Duration {
    HANDSHAKE_TIMEOUT
        .get()
        .copied()
        .unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT)
}

/// The WRITE payload timeout in force.
pub fn payload_timeout() -> std::time::Duration {
    PAYLOAD_TIMEOUT
        .get()
        .copied()
        .unwrap_or(DEFAULT_PAYLOAD_TIMEOUT)
}

/// Bytes of request payloads (WRITE data, READ buffers) in flight across every
/// connection of one server: a request waits for its share before its buffer exists,
/// so many clients with deep queues cannot grow memory past the budget.
#[derive(Clone)]
pub struct PayloadBudget {
    sem: std::sync::Arc<tokio::sync::Semaphore>,
    units: u32,
}

impl PayloadBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        // A request larger than the whole budget waits for all of it (so it runs alone).
        let units = u32::try_from(bytes / 1024).unwrap_or(u32::MAX).max(1);
        Self {
            sem: std::sync::Arc::new(tokio::sync::Semaphore::new(units as usize)),
            units,
        }
    }

    /// `len` more bytes if they fit now.
    pub fn try_acquire(&self, len: u32) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let want = len.div_ceil(1024).clamp(1, self.units);
        self.sem.clone().try_acquire_many_owned(want).ok()
    }

    /// Waits until `len` more bytes fit; the share is returned when the permit drops.
    /// None when the budget is closed (never, in practice).
    pub async fn acquire(&self, len: u32) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let want = len.div_ceil(1024).clamp(1, self.units);
        self.sem.clone().acquire_many_owned(want).await.ok()
    }
}

/// What the handshake agreed.
#[derive(Clone, Debug)]
pub struct Negotiated {
    /// Structured replies are on.
    pub structured: bool,
    /// `base:allocation` was selected (context id 1).
    pub base_allocation: bool,
    /// Transmission flags sent.
    pub flags: u16,
    /// Index of the chosen export in the server's catalog (0: the default).
    pub export: usize,
}

/// The context id of `base:allocation`.
pub const BASE_ALLOCATION_ID: u32 = 1;
