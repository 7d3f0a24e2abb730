//! `--size` (with suffixes) and `-s` (GiB, as in the original), the same in every
//! command that makes a disk.

use super::parse_size;
use crate::error::{Error, Result};

/// The size of a new disk.
#[derive(clap::Args, Debug)]
pub struct SizeArgs {
    /// Size of a new disk (suffixes K, M, G, T); default 100G.
    #[arg(long, value_parser = parse_size, conflicts_with = "gib")]
    size: Option<u64>,
    /// Size of a new disk in GiB, as in the original `-s`.
    #[arg(short = 's', value_name = "GiB")]
    gib: Option<u64>,
}

impl SizeArgs {
    /// Bytes, or `default` when neither was given.
    /// Whether a size was given at all.
    pub fn given(&self) -> bool {
        self.size.is_some() || self.gib.is_some()
    }

    /// The size given, or `default`.
    pub fn bytes_or(&self, default: u64) -> Result<u64> {
        match (self.size, self.gib) {
            (Some(s), _) => Ok(s),
            (None, Some(g)) => g
                .checked_mul(1 << 30)
                .filter(|&b| b > 0)
                .ok_or_else(|| Error::invalid(format!("-s {g}: not a usable size in GiB"))),
            (None, None) => Ok(default),
        }
    }
}
