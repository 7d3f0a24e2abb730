//! Figures for `mindcastle info`.

use serde::Serialize;

use super::Volume;
use crate::error::Result;
use crate::store::ChunkStore;

/// One level.
#[derive(Debug, Serialize)]
pub struct LevelInfo {
    /// Level number.
    pub level: u32,
    /// Index entries.
    pub entries: u64,
    /// Entries with data.
    pub data_entries: u64,
    /// Index chunks.
    pub index_chunks: usize,
    /// Data chunks referenced.
    pub data_chunks: usize,
}

/// What `info` prints.
#[derive(Debug, Serialize)]
pub struct Info {
    /// On-disk format (always `v1` here; `info` reports original disks itself).
    pub format: super::DiskFormat,
    /// Disk UUID.
    pub uuid: String,
    /// Disk size in bytes.
    pub size: u64,
    /// Current root chunk id, if any.
    pub root: Option<String>,
    /// The root's tag.
    pub snaphash: Option<String>,
    /// Levels, newest first.
    pub levels: Vec<LevelInfo>,
    /// Chunk files in the data folder.
    pub chunk_count: usize,
    /// Bytes of blocks holding data (4096 per block).
    pub logical_bytes: u64,
    /// Stored (compressed, sealed) record bytes those blocks reference.
    pub stored_record_bytes: u64,
    /// Bytes of the chunk files in the data folder.
    pub bytes_on_disk: u64,
    /// logical_bytes / stored_record_bytes.
    pub compression_ratio: f64,
    /// stored_record_bytes / bytes of distinct data chunks referenced: above 1 when
    /// chunks are shared, below 1 when chunks still carry overwritten records.
    pub dedup_ratio: f64,
    /// Snapshots kept readable.
    pub snapshots: Vec<String>,
    /// Writes in the log not yet checkpointed.
    pub pending_blocks: usize,
    /// Where the chunks the root and kept snapshots reach are.
    pub locations: Locations,
    /// What each URL fallback has served this disk, over the runs that held it for
    /// writing and closed (`fetched.json` in the data folder).
    pub fetched: Vec<crate::store::fetch_log::SourceCount>,
}

/// Where reachable chunks are: the local data folder, the cache folder, or only behind
/// a fallback.
#[derive(Debug, Default, Serialize)]
pub struct Locations {
    /// In the local data folder.
    pub local: usize,
    /// In the cache folder (and not local).
    pub cache: usize,
    /// Held in part in the cache folder (the byte ranges read so far); the rest is only
    /// behind a fallback.
    pub cache_partial: usize,
    /// Only in a fallback.
    pub remote: usize,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

impl Volume {
    /// Checks the disk; `progress` is called with the number of entries checked so far.
    pub fn fsck(&self, progress: &dyn Fn(u64)) -> Result<super::FsckReport> {
        self.engine()?.fsck(progress)
    }

    /// Computes the figures (walks the whole index once).
    pub fn info(&self) -> Result<Info> {
        let view = self.engine()?.view()?;
        let figures = self.engine()?.index_stats(&view)?;
        let (logical, stored, unique) = (
            figures.logical_bytes,
            figures.stored_record_bytes,
            figures.unique_chunk_bytes,
        );
        let pending_blocks = figures.pending_blocks;
        // The local data folder's chunks (the store lists the first of its stack).
        let mut chunk_count = 0;
        let mut on_disk = 0;
        let files = self.engine()?.chunk_files();
        let listed = files.list()?;
        for id in &listed {
            chunk_count += 1;
            on_disk += files.size(id).unwrap_or(0);
        }
        let locations = self.locations(listed)?;
        Ok(Info {
            locations,
            fetched: crate::store::fetch_log::load(self.data_dir()),
            format: super::DiskFormat::V1,
            uuid: self.uuid.clone(),
            size: self.size(),
            root: view.root.map(|r| r.id.to_hex()),
            snaphash: view.root.map(|r| hex::encode(r.tag)),
            levels: view
                .tree
                .runs()
                .map(|r| LevelInfo {
                    level: r.desc.level,
                    entries: r.desc.entries,
                    data_entries: r.desc.data_entries,
                    index_chunks: r.desc.index_chunks.len(),
                    data_chunks: r.table.len(),
                })
                .collect(),
            chunk_count,
            logical_bytes: logical,
            stored_record_bytes: stored,
            bytes_on_disk: on_disk,
            compression_ratio: ratio(logical, stored),
            dedup_ratio: ratio(stored, unique),
            snapshots: view.kept.iter().map(|k| k.id.to_hex()).collect(),
            pending_blocks,
        })
    }
}

impl Volume {
    fn locations(&self, local: Vec<crate::format::chunk_id::ChunkId>) -> Result<Locations> {
        let local: std::collections::HashSet<_> = local.into_iter().collect();
        let swap = super::read_swap(self.swap_path())?;
        let (cached, partial): (std::collections::HashSet<_>, std::collections::HashSet<_>) =
            match &swap.cache {
                Some(dir) => {
                    let dir = super::disk_files::base_dir(self.swap_path()).join(dir);
                    (
                        crate::store::local::LocalStore::open_read_only(&dir)
                            .list()?
                            .into_iter()
                            .collect(),
                        crate::store::partial::list(&dir).into_iter().collect(),
                    )
                }
                None => Default::default(),
            };
        let mut l = Locations::default();
        for id in self.engine()?.reachable()? {
            if local.contains(&id) {
                l.local += 1;
            } else if cached.contains(&id) {
                l.cache += 1;
            } else if partial.contains(&id) {
                l.cache_partial += 1;
            } else {
                l.remote += 1;
            }
        }
        Ok(l)
    }
}
