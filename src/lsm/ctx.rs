//! What every tree operation needs: the store, the keys and a cache of decoded nodes.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::Keys;
use crate::format::node::{Node, NodeRef};
use crate::store::ChunkStore;

/// Decoded nodes kept in memory (each at most ~44 KiB decoded).
pub const NODE_CACHE_ENTRIES: usize = 2048;

/// Shared context of one open disk.
pub struct Ctx {
    /// Chunk storage.
    pub store: Arc<dyn ChunkStore>,
    /// Ciphers of the disk key.
    pub keys: Keys,
    cache: Mutex<LruCache<(ChunkId, u32), Arc<Node>>>,
}

impl Ctx {
    /// A context over `store` with `keys`.
    pub fn new(store: Arc<dyn ChunkStore>, keys: Keys) -> Self {
        Self {
            store,
            keys,
            cache: Mutex::new(LruCache::new(
                NonZeroUsize::new(NODE_CACHE_ENTRIES).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// Reads, authenticates and decodes a node in index chunk `chunk`.
    pub fn node(&self, chunk: &ChunkId, r: &NodeRef) -> Result<Arc<Node>> {
        let key = (*chunk, r.offset);
        if let Ok(mut c) = self.cache.lock() {
            if let Some(n) = c.get(&key) {
                return Ok(n.clone());
            }
        }
        let mut opened = None;
        self.store
            .read_verified(chunk, u64::from(r.offset), r.len as usize, &mut |stored| {
                opened = Some(
                    Node::open(&self.keys, stored, &r.tag)
                        .map_err(|e| e.context(format!("index node at {}+{}", chunk, r.offset)))?,
                );
                Ok(())
            })?;
        let node =
            Arc::new(opened.ok_or_else(|| Error::internal("a verified node read kept nothing"))?);
        if let Ok(mut c) = self.cache.lock() {
            c.put(key, node.clone());
        }
        Ok(node)
    }
}
