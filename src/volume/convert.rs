//! `convert`: copies every block of a disk written by the original C Mindcastle into a
//! new disk in this version's format.
//!
//! The source is opened read-only and never changed (not even a lock file). The
//! target is built under `NEW.swap.converting` and renamed to `NEW.swap` only once it
//! is complete and closed, so `NEW.swap` never names half a disk: a convert that dies
//! leaves the source as it was and a `.converting` file plus its data folder, which
//! the next convert names for removal.

use std::path::{Path, PathBuf};

use super::{DiskFormat, OpenOptions, Volume, BS};
use crate::error::{Error, Result};
use crate::format::crypto::DiskKey;

/// Blocks read per window: a step of the step writers (4 MiB), so every run fits one.
const STEP: u64 = (super::steps::STEP as u64) / BS;

/// How to convert.
#[derive(Clone, Debug, Default)]
pub struct ConvertOptions {
    /// Size of the new disk (at least the old one's); default the old size.
    pub size: Option<u64>,
    /// Keep the old disk's key (default: a new random key).
    pub key_from_old: bool,
}

/// What a convert did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ConvertReport {
    /// The new disk's uuid.
    pub uuid: String,
    /// Its size in bytes.
    pub size: u64,
    /// Blocks the old disk held a record for.
    pub blocks: u64,
    /// Of those, blocks of zeros (the new disk stores none of them).
    pub zero_blocks: u64,
    /// Blocks the old disk never wrote (holes in both).
    pub holes: u64,
}

fn converting_path(new: &Path) -> PathBuf {
    let mut s = new.as_os_str().to_os_string();
    s.push(".converting");
    PathBuf::from(s)
}

/// Converts `old` (original format) into a new disk at `new`; `progress` gets the
/// bytes of the old disk done so far and its size.
pub fn convert(
    old: &Path,
    new: &Path,
    opts: &ConvertOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<ConvertReport> {
    let src = Volume::open(
        old,
        &OpenOptions {
            read_only: true,
            ..Default::default()
        },
    )?;
    let Some(disk) = src.original() else {
        return Err(Error::invalid(format!(
            "{} is already in this version's format ({:?}); nothing to convert",
            old.display(),
            src.format()
        )));
    };
    debug_assert_eq!(src.format(), DiskFormat::Original);
    if new.exists() {
        return Err(Error::invalid(format!(
            "{} already exists; not overwriting it",
            new.display()
        )));
    }
    let partial = converting_path(new);
    if partial.exists() {
        let hint = super::read_swap(&partial)
            .map(|s| format!(" and {}", super::data_dir(&partial, &s).display()))
            .unwrap_or_default();
        return Err(Error::invalid(format!(
            "{} is left from a convert that did not finish; remove it{hint}, then run \
             convert again",
            partial.display()
        )));
    }
    let size = opts.size.unwrap_or(src.size());
    if size < src.size() {
        return Err(Error::invalid(format!(
            "--size {size} is smaller than the old disk ({} bytes)",
            src.size()
        )));
    }
    let key = if opts.key_from_old {
        let swap = super::read_swap(old)?;
        DiskKey(
            swap.key
                .ok_or_else(|| Error::internal("a parsed .swap file without its key"))?,
        )
    } else {
        DiskKey::random()
    };
    let dst = Volume::create_with_key(&partial, size, key)?;
    let mut report = ConvertReport {
        uuid: dst.uuid().to_string(),
        size,
        blocks: 0,
        zero_blocks: 0,
        holes: 0,
    };
    let total = src.size() / BS;
    let mut buf = vec![0u8; (STEP * BS) as usize];
    // Runs are written by the step writers while the next window is read.
    dst.write_steps(|w| {
        let mut lba = 0;
        while lba < total {
            let n = STEP.min(total - lba);
            let window = buf
                .get_mut(..(n * BS) as usize)
                .ok_or_else(|| Error::internal("convert window"))?;
            let present = disk
                .read_blocks(lba, window)
                .map_err(|e| e.context(format!("reading {}", old.display())))?;
            // Write each run of blocks the old disk holds; holes stay holes.
            let mut i = 0usize;
            while i < present.len() {
                if !present.get(i).copied().unwrap_or(false) {
                    report.holes += 1;
                    i += 1;
                    continue;
                }
                let mut j = i;
                while present.get(j).copied().unwrap_or(false) {
                    j += 1;
                }
                let run = window
                    .get(i * BS as usize..j * BS as usize)
                    .ok_or_else(|| Error::internal("convert run"))?;
                report.blocks += (j - i) as u64;
                report.zero_blocks += run
                    .chunks(BS as usize)
                    .filter(|b| crate::format::record::is_zero(b))
                    .count() as u64;
                let mut step = w.buffer()?;
                step.get_mut(..run.len())
                    .ok_or_else(|| Error::internal("a convert run longer than a step"))?
                    .copy_from_slice(run);
                w.write((lba + i as u64) * BS, step, run.len())?;
                i = j;
            }
            lba += n;
            progress(lba * BS, src.size());
        }
        Ok(())
    })?;
    dst.close()?;
    std::fs::rename(&partial, new).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", partial.display(), new.display()),
            e,
        )
    })?;
    crate::store::local::sync_dir(&super::disk_files::base_dir(new))?;
    src.close()?;
    Ok(report)
}
