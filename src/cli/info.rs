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
    let i = vol.info()?;
    if a.json {
        let s = serde_json::to_string_pretty(&i).map_err(|e| Error::invalid(e.to_string()))?;
        println!("{s}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("uuid:              {}", i.uuid);
    println!("size:              {}", i.size);
    println!(
        "root:              {}",
        i.root.as_deref().unwrap_or("(none: empty disk)")
    );
    if let Some(h) = &i.snaphash {
        println!("snaphash:          {h}");
    }
    println!("levels:            {}", i.levels.len());
    for l in &i.levels {
        println!(
            "  level {}: {} entries ({} with data), {} index chunks, {} data chunks",
            l.level, l.entries, l.data_entries, l.index_chunks, l.data_chunks
        );
    }
    println!("chunk count:       {}", i.chunk_count);
    println!("logical bytes:     {}", i.logical_bytes);
    println!("stored records:    {}", i.stored_record_bytes);
    println!("bytes on disk:     {}", i.bytes_on_disk);
    println!("compression ratio: {:.2}", i.compression_ratio);
    println!("dedup ratio:       {:.2}", i.dedup_ratio);
    println!("snapshots:         {}", i.snapshots.len());
    for s in &i.snapshots {
        println!("  {s}");
    }
    if i.pending_blocks > 0 {
        println!(
            "pending blocks:    {} (in the write-ahead log)",
            i.pending_blocks
        );
    }
    Ok(ExitCode::SUCCESS)
}
