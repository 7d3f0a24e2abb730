//! `mindcastle convert [--size …] [--key-from-old] [--json] OLD.swap NEW.swap`

use std::process::ExitCode;

use super::size_args::SizeArgs;
use super::{progress, PathArg};
use crate::error::{Error, Result};
use crate::volume::convert::{convert, ConvertOptions};

/// Arguments of `convert`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    size: SizeArgs,
    /// Keep the old disk's key (default: the new disk gets a new random key).
    #[arg(long)]
    key_from_old: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// A disk written by the original C Mindcastle (opened read-only, never changed).
    old: PathArg,
    /// The new disk's `.swap` file (must not exist).
    new: PathArg,
}

/// Runs `convert`.
pub fn run(a: Args) -> Result<ExitCode> {
    let size = a.size.bytes_or(0)?;
    let opts = ConvertOptions {
        size: (size > 0).then_some(size),
        key_from_old: a.key_from_old,
    };
    let pb = progress::bytes(0, "convert");
    let tick = |done: u64, total: u64| {
        pb.set_length(total);
        pb.set_position(done)
    };
    let report = convert(&a.old, &a.new, &opts, &tick)?;
    pb.finish_and_clear();
    if a.json {
        let text = serde_json::to_string_pretty(&report)
            .map_err(|e| Error::internal(format!("report as JSON: {e}")))?;
        outln!("{text}");
    } else {
        outln!(
            "converted {} into {} (uuid {}, {} bytes): {} blocks copied ({} of them zeros, \
             stored as holes), {} holes",
            a.old.display(),
            a.new.display(),
            report.uuid,
            report.size,
            report.blocks,
            report.zero_blocks,
            report.holes
        );
    }
    Ok(ExitCode::SUCCESS)
}
