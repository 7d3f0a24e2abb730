//! `mindcastle fsck [--json] NAME.swap`

use std::process::ExitCode;

use super::{progress, PathArg};
use crate::error::{Error, Result};

/// Arguments of `fsck`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The disk.
    swap: PathArg,
}

/// Runs `fsck`: exit 0 when clean, 1 with one line per problem otherwise.
pub fn run(a: Args) -> Result<ExitCode> {
    let vol = super::inspect(&a.swap)?;
    let total: u64 = vol
        .engine()?
        .view()?
        .tree
        .runs()
        .map(|r| r.desc.entries)
        .sum();
    let pb = progress::count(total, "fsck");
    let report = vol.fsck(&|n| pb.set_position(n))?;
    pb.finish_and_clear();
    if a.json {
        let s = serde_json::to_string_pretty(&report).map_err(|e| Error::invalid(e.to_string()))?;
        outln!("{s}");
    } else {
        for p in &report.problems {
            outln!("{p}");
        }
        eprintln!(
            "fsck: {} chunks, {} nodes, {} records checked, {} problems",
            report.chunks_checked,
            report.nodes_checked,
            report.records_checked,
            report.problems.len()
        );
    }
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
