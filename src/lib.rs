//! Mindcastle: a block device whose contents live in immutable, content-addressed,
//! compressed and encrypted chunk files.
//!
//! Layers, each using only the one below it:
//! - [`cli`]: the `mindcastle` command.
//! - [`attach`], [`hooks`]: block device (FUSE + loop), statechange script, signals.
//! - [`nbd`]: the NBD server (async edge).
//! - [`volume`]: blocks at any alignment, flush, checkpoint, snapshots, fsck, import/export.
//! - [`lsm`]: write-ahead log, memtable, sorted runs in levels, merges.
//! - [`format`]: pure byte layouts (records, nodes, roots, log, `.swap` file).
//! - [`store`]: where chunk files live.
//! - [`original`]: disks written by the original C Mindcastle (read only, for `convert`).

pub mod attach;
pub mod buffers;
pub mod cli;
pub mod cpus;
pub mod error;
pub mod format;
pub mod hooks;
pub mod lsm;
pub mod memory;
pub mod nbd;
pub mod original;
pub mod prehashed;
pub mod store;
pub mod threads;
pub mod trace;
pub mod volume;

pub use error::{Error, ErrorKind, Result};
pub use volume::{OpenOptions, Volume};
