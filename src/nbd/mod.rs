//! NBD server: fixed-newstyle handshake (`handshake`), then the transmission phase
//! (`session`) with many requests in flight, replies in any order. Async (tokio) at the
//! edge; the volume is called through `spawn_blocking`. Wire types live in `nbd-proto`.

mod handshake;
mod server;
mod session;

pub use server::{serve, Listen, ServeConfig};
pub use session::run as serve_transmission;

/// Largest READ/WRITE payload accepted (also advertised as the maximum block size).
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Advertised minimum block size.
pub const MIN_BLOCK: u32 = 512;
/// Advertised preferred block size.
pub const PREFERRED_BLOCK: u32 = 4096;
/// Requests served at once per connection.
pub const MAX_IN_FLIGHT: usize = 64;

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
