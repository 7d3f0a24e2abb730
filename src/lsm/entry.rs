//! What the index says about one block, with chunk indices resolved to ids.

use crate::format::chunk_id::ChunkId;

/// Where a block's current contents are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    /// The block reads as zeros (written zeros or trimmed).
    Zero,
    /// The block is a record in a data chunk.
    Data(DataRef),
}

/// A record inside a data chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataRef {
    /// The data chunk.
    pub chunk: ChunkId,
    /// That chunk's size.
    pub chunk_size: u32,
    /// Record offset in the chunk.
    pub offset: u32,
    /// Stored record length.
    pub len: u32,
    /// Record tag.
    pub tag: [u8; 16],
}
