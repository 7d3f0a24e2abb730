//! `mindcastle resize [--shrink] [--json] NAME.swap SIZE`

use std::process::ExitCode;

use super::PathArg;
use crate::error::{Error, Result};
use crate::volume::{OpenOptions, Volume};

/// Arguments of `resize`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Allow a smaller size: the blocks past the new end are dropped.
    #[arg(long)]
    shrink: bool,
    /// Print `size_before`, `size` and `dropped_blocks` as JSON.
    #[arg(long)]
    json: bool,
    /// The disk.
    swap: PathArg,
    /// The new size (suffixes K, M, G, T; a multiple of 4096).
    #[arg(value_parser = super::parse_size)]
    size: u64,
}

/// What `resize --json` prints.
#[derive(serde::Serialize)]
struct Report {
    size_before: u64,
    size: u64,
    dropped_blocks: u64,
}

/// Runs `resize`.
pub fn run(a: Args) -> Result<ExitCode> {
    if let Some(why) = crate::format::swapfile::bad_disk_size(a.size) {
        return Err(Error::invalid(why));
    }
    let vol = Volume::open(
        &a.swap,
        &OpenOptions {
            resizing: true,
            ..OpenOptions::default()
        },
    )?;
    let before = vol.size();
    if a.size < before && !a.shrink {
        return Err(Error::invalid(format!(
            "{}: {} bytes is smaller than the disk ({before} bytes); shrinking drops the \
             blocks past the new end: pass --shrink to do that",
            a.swap.display(),
            a.size
        )));
    }
    let dropped = vol.resize(a.size)?;
    vol.close()?;
    let r = Report {
        size_before: before,
        size: a.size,
        dropped_blocks: dropped,
    };
    if a.json {
        let text =
            serde_json::to_string_pretty(&r).map_err(|e| Error::internal(format!("JSON: {e}")))?;
        outln!("{text}");
    } else {
        outln!(
            "{}: {} -> {} bytes{}",
            a.swap.display(),
            r.size_before,
            r.size,
            if r.dropped_blocks > 0 {
                format!("; {} blocks past the new end dropped", r.dropped_blocks)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
