//! `mindcastle [attach] [--size 100G | -s GiB] [--trace FILE | -t FILE] [--fuse] NAME.swap SCRIPT`

use std::process::ExitCode;

use super::{parse_size, PathArg};
use crate::attach::{run as attach, AttachConfig};
use crate::error::Result;
use crate::volume::DEFAULT_SIZE;

/// Arguments of `attach` (also the two-argument form of the original).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Size of a new disk (suffixes K, M, G, T); default 100G.
    #[arg(long, value_parser = parse_size, conflicts_with = "gib")]
    size: Option<u64>,
    /// Size of a new disk in GiB, as in the original `-s`.
    #[arg(short = 's')]
    gib: Option<u64>,
    /// Log every read (offset, length, time in ns) to FILE.
    #[arg(short, long)]
    trace: Option<PathArg>,
    /// Use the FUSE + loop path even where kernel nbd exists.
    #[arg(long)]
    fuse: bool,
    /// The disk (created if missing).
    swap: PathArg,
    /// The statechange script (a path; must be executable).
    script: String,
}

/// Runs `attach`.
pub fn run(a: Args) -> Result<ExitCode> {
    let size = match (a.size, a.gib) {
        (Some(s), _) => s,
        (None, Some(g)) => g
            .checked_mul(1 << 30)
            .ok_or_else(|| crate::error::Error::invalid("-s is too large"))?,
        (None, None) => DEFAULT_SIZE,
    };
    let cfg = AttachConfig {
        swap: a.swap,
        script: a.script,
        size,
        trace: a.trace,
        force_fuse: a.fuse,
    };
    Ok(ExitCode::from(attach(&cfg)?))
}
