//! What every tree operation needs: the store, the keys and a cache of decoded nodes.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::crypto::Keys;
use crate::format::node::{Node, NodeRef};
use crate::store::ChunkStore;

/// Shared context of one open disk.
pub struct Ctx {
    /// Chunk storage.
    pub store: Arc<dyn ChunkStore>,
    /// Ciphers of the disk key.
    pub keys: Keys,
    /// Bytes of cut chunks a chunker holds before storing them (a share of the memory
    /// budget): merges that rewrite sparse chunks keep to it as checkpoints do.
    pub pending_chunk_bytes: usize,
    cache: Mutex<NodeCache>,
}

/// Decoded nodes, least recently used out first once their bytes pass `limit`.
struct NodeCache {
    lru: LruCache<(ChunkId, u32), Arc<Node>>,
    bytes: usize,
    limit: usize,
}

impl NodeCache {
    fn put(&mut self, key: (ChunkId, u32), node: Arc<Node>) {
        self.bytes += node.mem_bytes();
        if let Some(old) = self.lru.put(key, node) {
            self.bytes = self.bytes.saturating_sub(old.mem_bytes());
        }
        while self.bytes > self.limit {
            match self.lru.pop_lru() {
                Some((_, n)) => self.bytes = self.bytes.saturating_sub(n.mem_bytes()),
                None => break,
            }
        }
    }
}

impl Ctx {
    /// A context over `store` with `keys`, keeping up to `cache_bytes` of decoded nodes
    /// and `pending_chunk_bytes` of cut chunks per chunker.
    pub fn new(
        store: Arc<dyn ChunkStore>,
        keys: Keys,
        cache_bytes: usize,
        pending_chunk_bytes: usize,
    ) -> Self {
        Self {
            store,
            keys,
            pending_chunk_bytes,
            cache: Mutex::new(NodeCache {
                lru: LruCache::unbounded(),
                bytes: 0,
                limit: cache_bytes,
            }),
        }
    }

    /// Reads, authenticates and decodes a node in index chunk `chunk`.
    pub fn node(&self, chunk: &ChunkId, r: &NodeRef) -> Result<Arc<Node>> {
        let key = (*chunk, r.offset);
        if let Ok(mut c) = self.cache.lock() {
            if let Some(n) = c.lru.get(&key) {
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
