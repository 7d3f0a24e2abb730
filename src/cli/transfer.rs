//! `mindcastle import NAME.swap IMAGE|-` and `mindcastle export [--snapshot ID] NAME.swap OUT|-`

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::process::ExitCode;

use super::{progress, PathArg};
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::volume::{OpenOptions, Volume};

/// Arguments of `import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The disk.
    swap: PathArg,
    /// Raw image, or - for stdin.
    image: String,
}

/// Arguments of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Export this kept snapshot (root id) instead of the current state.
    #[arg(long)]
    snapshot: Option<String>,
    /// The disk.
    swap: PathArg,
    /// Output file, or - for stdout. An existing regular file is not overwritten
    /// without --force (block devices are written in place).
    out: String,
    /// Overwrite an existing output file.
    #[arg(long)]
    force: bool,
}

/// Runs `import`.
pub fn import(a: ImportArgs) -> Result<ExitCode> {
    let vol = Volume::open(&a.swap, &OpenOptions::default())?;
    let (mut input, total): (Box<dyn std::io::Read>, u64) = if a.image == "-" {
        (Box::new(std::io::stdin().lock()), vol.size())
    } else {
        let f = File::open(&a.image).map_err(|e| Error::io(a.image.clone(), e))?;
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        (Box::new(f), len)
    };
    let pb = progress::bytes(total, "import");
    let n = vol.import(&mut input, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    vol.close()?;
    tracing::info!(bytes = n, "imported");
    Ok(ExitCode::SUCCESS)
}

/// Stdout as a `Seek` that is never asked to seek.
struct NoSeek<W>(W);
impl<W: Write> Write for NoSeek<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
impl<W> Seek for NoSeek<W> {
    fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
        Err(std::io::Error::other("stdout cannot seek"))
    }
}

/// An existing output that is not a block device (or character device such as
/// /dev/null) is kept unless `force`: swapped arguments must not destroy a file.
fn refuse_overwrite(out: &str, force: bool) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::metadata(out) else {
        return Ok(());
    };
    let ft = meta.file_type();
    if force || ft.is_block_device() || ft.is_char_device() || ft.is_fifo() {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{out} exists ({} bytes); not overwriting it (use --force to replace it)",
        meta.len()
    )))
}

/// Runs `export`.
pub fn export(a: ExportArgs) -> Result<ExitCode> {
    let snapshot = a.snapshot.as_deref().map(ChunkId::from_hex).transpose()?;
    let vol = Volume::open(
        &a.swap,
        &OpenOptions {
            read_only: true,
            snapshot,
            ..Default::default()
        },
    )?;
    let pb = progress::bytes(vol.size(), "export");
    let tick = |n| pb.set_position(n);
    if a.out == "-" {
        let mut out = NoSeek(std::io::BufWriter::with_capacity(
            1 << 20,
            std::io::stdout().lock(),
        ));
        // A reader that went away (export - | head) leaves the image cut short: an
        // error (exit 6), never a success.
        vol.export(&mut out, false, &tick)
            .map_err(|e| e.context("standard output closed before the whole disk was written"))?;
    } else {
        refuse_overwrite(&a.out, a.force)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&a.out)
            .map_err(|e| Error::io(a.out.clone(), e))?;
        let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        vol.export(&mut f, regular, &tick)?;
        if regular {
            f.set_len(vol.size())
                .map_err(|e| Error::io(a.out.clone(), e))?;
        }
        // Files and block devices are made durable; a character device such as
        // /dev/null has nothing to sync (and says EINVAL).
        let block = {
            use std::os::unix::fs::FileTypeExt;
            f.metadata().is_ok_and(|m| m.file_type().is_block_device())
        };
        if regular || block {
            f.sync_all().map_err(|e| Error::io(a.out.clone(), e))?;
        }
    }
    pb.finish_and_clear();
    Ok(ExitCode::SUCCESS)
}
