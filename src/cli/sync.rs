//! `mindcastle push NAME.swap DEST [--swap-out REMOTE.swap] [--json]` and
//! `mindcastle pull NAME.swap [--json]`.

use std::process::ExitCode;

use super::{progress, PathArg};
use crate::error::{Error, Result};
use crate::format::swapfile::SwapFile;
use crate::volume::sync::{Destination, Transfer};
use crate::volume::{read_swap, OpenOptions, Volume};

/// Arguments of `push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Also write a `.swap` for other hosts: a disk of its own (a new uuid, so its own
    /// data folder) with the same size, key and root, reading its chunks through
    /// `fallback=DEST` (refuses to overwrite).
    #[arg(long)]
    swap_out: Option<PathArg>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The disk.
    swap: PathArg,
    /// A folder, or s3://, gs://, az://, http(s):// (a server that takes PUT).
    dest: String,
}

/// Arguments of `prefetch`.
#[derive(clap::Args, Debug)]
pub struct PrefetchArgs {
    /// A read trace recorded with `--trace` (`offset length time` per line).
    #[arg(long)]
    trace: PathArg,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The disk (its `.swap` needs `cache=`).
    swap: PathArg,
}

/// Arguments of `pull`.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Only what this kept snapshot needs (id, unique id prefix or name): its chunks,
    /// the head's index and the roots, not the head's data.
    #[arg(long, value_name = "SNAP")]
    snapshot: Option<String>,
    /// The disk.
    swap: PathArg,
}

fn report(t: &Transfer, what: &str, json: bool) -> Result<()> {
    if json {
        let s = serde_json::to_string_pretty(t).map_err(|e| Error::internal(e.to_string()))?;
        outln!("{s}");
    } else {
        outln!(
            "{what}: {} chunks reachable, {} copied ({} bytes), {} already there; root {}",
            t.chunks,
            t.copied,
            t.bytes,
            t.present,
            t.root.as_deref().unwrap_or("(none)")
        );
    }
    Ok(())
}

/// Runs `push`.
pub fn push(a: PushArgs) -> Result<ExitCode> {
    let dest = Destination::open(&a.dest)?;
    let vol = Volume::open(&a.swap, &OpenOptions::default())?;
    let pb = progress::bytes(0, "push");
    let t = vol.push(&dest, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    vol.close()?;
    if let Some(out) = &a.swap_out {
        let mut swap: SwapFile = read_swap(&a.swap)?;
        let fallback = dest.fallback_line()?;
        // A new uuid: the copy gets a data folder of its own even beside the source,
        // whose folder only the source may write (see `claim_folder`).
        swap.uuid = uuid::Uuid::new_v4().to_string();
        swap.fallbacks = vec![fallback];
        swap.swapdata = None;
        swap.cache = None;
        swap.cache_size = None;
        crate::volume::create_swap(out, &swap)?;
    }
    report(&t, "push", a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `pull`.
pub fn pull(a: PullArgs) -> Result<ExitCode> {
    let vol = Volume::open(&a.swap, &OpenOptions::default())?;
    let pb = progress::bytes(0, "pull");
    let t = vol.pull(a.snapshot.as_deref(), &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    vol.close()?;
    report(&t, "pull", a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `prefetch`.
pub fn prefetch(a: PrefetchArgs) -> Result<ExitCode> {
    let ranges = crate::volume::prefetch::read_trace(&a.trace)?;
    let vol = super::inspect(&a.swap)?;
    vol.check_prefetch_target()?;
    let pb = progress::count(ranges.len() as u64, "prefetch");
    let p = vol.prefetch(&ranges, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    if a.json {
        let s = serde_json::to_string_pretty(&p).map_err(|e| Error::internal(e.to_string()))?;
        outln!("{s}");
    } else {
        outln!("prefetch: {} ranges, {} bytes read", p.ranges, p.bytes);
    }
    Ok(ExitCode::SUCCESS)
}
