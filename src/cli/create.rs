//! `mindcastle create [--size 100G] NAME.swap`

use std::process::ExitCode;

use super::size_args::SizeArgs;
use super::PathArg;
use crate::error::Result;
use crate::volume::{Volume, DEFAULT_SIZE};

/// Arguments of `create`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    size: SizeArgs,
    /// The `.swap` file to write (refuses to overwrite).
    swap: PathArg,
}

/// Runs `create`.
pub fn run(a: Args) -> Result<ExitCode> {
    let vol = Volume::create(&a.swap, a.size.bytes_or(DEFAULT_SIZE)?)?;
    outln!(
        "created {} ({} bytes, uuid {}, data in {})",
        a.swap.display(),
        vol.size(),
        vol.uuid(),
        vol.data_dir().display()
    );
    vol.close()?;
    Ok(ExitCode::SUCCESS)
}
