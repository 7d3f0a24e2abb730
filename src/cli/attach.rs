//! `mindcastle [attach] [--size 100G | -s GiB] [--trace FILE | -t FILE] [--fuse] NAME.swap SCRIPT`

use std::process::ExitCode;

use super::size_args::SizeArgs;
use super::PathArg;
use crate::attach::{run as attach, AttachConfig};
use crate::error::Result;
use crate::volume::DEFAULT_SIZE;

/// Arguments of `attach` (also the two-argument form of the original).
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    size: SizeArgs,
    /// Log every read (offset, length, time in ns) to FILE.
    #[arg(short, long)]
    trace: Option<PathArg>,
    /// Use the FUSE + loop path even where kernel nbd exists.
    #[arg(long)]
    fuse: bool,
    /// Warm the cache from a read trace (`--trace` output) beside the device (the
    /// `.swap` needs `cache=`).
    #[arg(long)]
    prefetch: Option<PathArg>,
    /// The disk (created if missing).
    swap: PathArg,
    /// The statechange script (a path; must be executable).
    script: String,
}

/// Runs `attach`.
pub fn run(a: Args) -> Result<ExitCode> {
    let size = a.size.bytes_or(DEFAULT_SIZE)?;
    let cfg = AttachConfig {
        swap: a.swap,
        script: a.script,
        size,
        size_given: a.size.given(),
        trace: a.trace,
        force_fuse: a.fuse,
        prefetch: a.prefetch,
    };
    Ok(ExitCode::from(attach(&cfg)?))
}
