//! `mindcastle info [--json] NAME.swap`

use std::process::ExitCode;

use super::PathArg;
use crate::error::{Error, Result};

/// Arguments of `info`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The disk.
    swap: PathArg,
}

/// Runs `info`.
pub fn run(a: Args) -> Result<ExitCode> {
    let vol = super::inspect(&a.swap)?;
    if let Some(disk) = vol.original() {
        // Inspect before converting: what the original's tree says, nothing more.
        let chunks = disk.chunks();
        let bytes: u64 = chunks.iter().map(|c| u64::from(c.size)).sum();
        if a.json {
            let v = serde_json::json!({
                "format": "original",
                "uuid": vol.uuid(),
                "size": vol.size(),
                "levels": disk.level_count(),
                "chunk_count": chunks.len(),
                "chunk_bytes": bytes,
            });
            outln!("{v:#}");
        } else {
            outln!("format:            original C Mindcastle (read only; convert with: mindcastle convert {} NEW.swap)", a.swap.display());
            outln!("uuid:              {}", vol.uuid());
            outln!("size:              {}", vol.size());
            outln!("levels:            {}", disk.level_count());
            outln!("chunk count:       {} ({bytes} bytes)", chunks.len());
        }
        return Ok(ExitCode::SUCCESS);
    }
    let i = vol.info()?;
    if a.json {
        let s = serde_json::to_string_pretty(&i).map_err(|e| Error::invalid(e.to_string()))?;
        outln!("{s}");
        return Ok(ExitCode::SUCCESS);
    }
    outln!("format:            v1");
    outln!("uuid:              {}", i.uuid);
    outln!("size:              {}", i.size);
    outln!(
        "root:              {}",
        i.root.as_deref().unwrap_or("(none: empty disk)")
    );
    if let Some(h) = &i.snaphash {
        outln!("snaphash:          {h}");
    }
    outln!("levels:            {}", i.levels.len());
    for l in &i.levels {
        outln!(
            "  level {}: {} entries ({} with data), {} index chunks, {} data chunks",
            l.level,
            l.entries,
            l.data_entries,
            l.index_chunks,
            l.data_chunks
        );
    }
    outln!("chunk count:       {}", i.chunk_count);
    outln!("logical bytes:     {}", i.logical_bytes);
    outln!("stored records:    {}", i.stored_record_bytes);
    outln!("bytes on disk:     {}", i.bytes_on_disk);
    outln!("compression ratio: {:.2}", i.compression_ratio);
    outln!("dedup ratio:       {:.2}", i.dedup_ratio);
    outln!(
        "chunks reached:    {} local, {} in the cache, {} partly in the cache, {} only behind a fallback",
        i.locations.local,
        i.locations.cache,
        i.locations.cache_partial,
        i.locations.remote
    );
    for f in &i.fetched {
        outln!(
            "fetched:           {} requests, {} bytes from {} (runs that held the disk, closed)",
            f.requests,
            f.bytes,
            f.url
        );
    }
    outln!("snapshots:         {}", i.snapshots.len());
    for s in &i.snapshots {
        outln!("  {s}");
    }
    if i.pending_blocks > 0 {
        outln!(
            "pending blocks:    {} (in the write-ahead log)",
            i.pending_blocks
        );
    }
    Ok(ExitCode::SUCCESS)
}
