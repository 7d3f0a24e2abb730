//! The log-structured merge tree, tuned for blocks: a write-ahead log and memtable in
//! front of sorted runs in levels. Data records are written once into data chunks; merges
//! rewrite only the index (entries keep pointing at their chunks), so an old chunk is
//! reused whole whenever its records survive.
//!
//! [`engine::Engine`] is the one object that owns it all: memtables, levels, the log,
//! checkpoints, merges and garbage collection. The other files are its parts.

pub mod chunker;
pub mod ctx;
pub mod diff;
pub mod engine;
pub mod entry;
pub mod lookup;
pub mod memtable;
pub mod merge;
pub mod pacer;
pub mod policy;
pub mod run;
pub mod tree;
pub mod wal;
