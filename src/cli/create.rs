//! `mindcastle create [--size 100G] NAME.swap`

use std::process::ExitCode;

use super::{parse_size, PathArg};
use crate::error::Result;
use crate::volume::{Volume, DEFAULT_SIZE};

/// Arguments of `create`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Disk size (suffixes K, M, G, T); default 100G.
    #[arg(short, long, value_parser = parse_size)]
    size: Option<u64>,
    /// The `.swap` file to write (refuses to overwrite).
    swap: PathArg,
}

/// Runs `create`.
pub fn run(a: Args) -> Result<ExitCode> {
    let vol = Volume::create(&a.swap, a.size.unwrap_or(DEFAULT_SIZE))?;
    println!(
        "created {} ({} bytes, uuid {}, data in {})",
        a.swap.display(),
        vol.size(),
        vol.uuid(),
        vol.data_dir().display()
    );
    vol.close()?;
    Ok(ExitCode::SUCCESS)
}
