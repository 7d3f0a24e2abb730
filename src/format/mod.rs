//! Pure bytes <-> types: every on-disk structure, with no I/O and no clock.
//! Each file opens with its byte layout; `docs/FORMAT.md` collects them.

pub mod bytes;
pub mod chunk_id;
pub mod crypto;
pub mod lz4;
pub mod node;
pub mod record;
pub mod ref_version;
pub mod root;
pub mod sha512_lanes;
pub mod size;
pub mod swapfile;
pub mod wal;

/// Bytes in one block, the unit of the index.
pub const BLOCK_SIZE: usize = 4096;
