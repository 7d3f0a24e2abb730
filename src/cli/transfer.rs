//! `mindcastle import NAME.swap IMAGE|-` and `mindcastle export [--snapshot ID] NAME.swap OUT|-`

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::process::ExitCode;

use super::{progress, PathArg};
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::volume::delta::apply_delta;
use crate::volume::history::ranges_of;
use crate::volume::{OpenOptions, Volume};

/// Arguments of `import`.
#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// The disk.
    swap: PathArg,
    /// Raw image, or - for stdin.
    image: String,
}

/// How an incremental export is written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeltaFormat {
    /// A raw image of the disk's size holding only the changed ranges (holes elsewhere).
    Raw,
    /// A delta stream of (offset, length, bytes) records for `mindcastle apply`.
    Stream,
}

/// Arguments of `export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Export this kept snapshot (id, id prefix or name) instead of the current state.
    #[arg(long)]
    snapshot: Option<String>,
    /// Only the ranges that changed since this snapshot (an incremental image).
    #[arg(long, value_name = "SNAPSHOT")]
    changed_since: Option<String>,
    /// Form of an incremental export.
    #[arg(long, value_enum, default_value = "raw", requires = "changed_since")]
    format: DeltaFormat,
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
        let mut f = File::open(&a.image).map_err(|e| Error::io(a.image.clone(), e))?;
        // A block device's length is where its end is.
        let len = match f.metadata() {
            Ok(m) if m.is_file() => m.len(),
            _ => f
                .seek(SeekFrom::End(0))
                .and_then(|n| f.seek(SeekFrom::Start(0)).map(|_| n))
                .unwrap_or(0),
        };
        // Refused before a byte is written: a disk half overwritten by an image that
        // never fit would lose what it held for nothing.
        if len > vol.size() {
            return Err(Error::invalid(format!(
                "{}: the image is {len} bytes, larger than the {}-byte disk; nothing was written",
                a.image,
                vol.size()
            )));
        }
        (Box::new(f), len)
    };
    let pb = progress::bytes(total, "import");
    let n = vol.import(&mut input, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    vol.close()?;
    tracing::info!(bytes = n, "imported");
    Ok(ExitCode::SUCCESS)
}

/// Stdout as a `Seek` that is never asked to seek; remembers whether a write failed
/// (the reader went away), so that error is told apart from the disk's own.
struct NoSeek<W> {
    out: W,
    failed: bool,
}
impl<W: Write> Write for NoSeek<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let r = self.out.write(b);
        self.failed |= r.is_err();
        r
    }
    fn flush(&mut self) -> std::io::Result<()> {
        let r = self.out.flush();
        self.failed |= r.is_err();
        r
    }
}
impl<W> Seek for NoSeek<W> {
    fn seek(&mut self, _: SeekFrom) -> std::io::Result<u64> {
        Err(std::io::Error::other("stdout cannot seek"))
    }
}

/// An export to `out` failed with `e`: a regular file cut short is removed, so it
/// cannot pass for the image (a device is left as it is).
fn cut_short(f: File, out: &str, regular: bool, e: Error) -> Error {
    drop(f);
    if !regular {
        return e;
    }
    let _ = std::fs::remove_file(out);
    e.context(format!("{out} removed"))
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

/// A snapshot given by id, id prefix or name, as its root id.
fn resolve(swap: &std::path::Path, spec: &str) -> Result<ChunkId> {
    if let Ok(id) = ChunkId::from_hex(spec) {
        return Ok(id);
    }
    Ok(super::inspect(swap)?.find_snapshot(spec)?.id)
}

/// Runs `export --changed-since`.
fn export_changes(a: &ExportArgs, since: &str) -> Result<ExitCode> {
    let head = super::inspect(&a.swap)?;
    let from = head.find_snapshot(since)?;
    let to = a
        .snapshot
        .as_deref()
        .map(|s| head.find_snapshot(s))
        .transpose()?;
    let ranges = ranges_of(head.diff_blocks(&from, to.as_ref())?);
    let total: u64 = ranges.iter().map(|r| r.length).sum();
    let reader = match &to {
        Some(t) => Volume::open(
            &a.swap,
            &OpenOptions {
                read_only: true,
                snapshot: Some(t.id),
                no_lock: true,
                ..Default::default()
            },
        )?,
        None => head,
    };
    let pb = progress::bytes(total, "export");
    let tick = |n| pb.set_position(n);
    let rep = match (a.format, a.out.as_str()) {
        (DeltaFormat::Stream, "-") => {
            let out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
            reader.export_delta(out, &from, to.as_ref(), &ranges, &tick)?
        }
        (DeltaFormat::Raw, "-") => {
            return Err(Error::invalid(
                "--format raw needs a file (its holes are seeks); use --format stream for -",
            ))
        }
        (format, out) => {
            refuse_overwrite(out, a.force)?;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(out)
                .map_err(|e| Error::io(out.to_string(), e))?;
            let regular = f.metadata().is_ok_and(|m| m.is_file());
            let rep = if format == DeltaFormat::Stream {
                reader.export_delta(
                    std::io::BufWriter::new(&mut f),
                    &from,
                    to.as_ref(),
                    &ranges,
                    &tick,
                )
            } else {
                f.set_len(reader.size())
                    .map_err(|e| Error::io(out.to_string(), e))
                    .and_then(|()| reader.export_ranges(&mut f, &ranges, &tick))
            };
            match rep {
                Ok(rep) => {
                    f.sync_all().map_err(|e| Error::io(out.to_string(), e))?;
                    rep
                }
                Err(e) => return Err(cut_short(f, out, regular, e)),
            }
        }
    };
    pb.finish_and_clear();
    eprintln!(
        "mindcastle: exported {} changed ranges, {} bytes",
        rep.records, rep.bytes
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `apply`.
#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// A delta stream (`export --changed-since A --format stream`), or - for stdin.
    stream: String,
    /// Where to write it: a disk (`NAME.swap`) or an image file or block device of the
    /// same size.
    target: PathArg,
}

/// The delta stream as a file that can be read twice: the named file, or standard
/// input copied into an unlinked temporary file.
fn stream_file(stream: &str) -> Result<File> {
    if stream != "-" {
        return File::open(stream).map_err(|e| Error::io(stream.to_string(), e));
    }
    let dir = std::env::temp_dir();
    let path = dir.join(format!(
        ".mindcastle-apply-{}-{}",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    let ctx = |e| Error::io(format!("keeping standard input in {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(ctx)?;
    let _ = std::fs::remove_file(&path);
    std::io::copy(&mut std::io::stdin().lock(), &mut f).map_err(ctx)?;
    f.seek(SeekFrom::Start(0)).map_err(ctx)?;
    Ok(f)
}

/// The size of an `apply` target: a disk's size, or an image file's or device's length.
fn target_size(target: &std::path::Path) -> Result<u64> {
    if target.extension().is_some_and(|e| e == "swap") {
        return Ok(crate::volume::read_swap(target)?.size);
    }
    File::open(target)
        .and_then(|mut f| f.seek(SeekFrom::End(0)))
        .map_err(|e| Error::io(target.display().to_string(), e))
}

/// Runs `apply`.
pub fn apply(a: ApplyArgs) -> Result<ExitCode> {
    let mut input = stream_file(&a.stream)?;
    // The whole stream is checked (order, bounds, counts, CRC) before a byte of the
    // target changes: a stream cut short or damaged leaves the target as it was.
    let total = {
        let mut r = std::io::BufReader::with_capacity(1 << 20, &mut input);
        let size = target_size(&a.target)?;
        apply_delta(&mut r, size, &mut |_, _| Ok(()), &|_| {})
            .map_err(|e| e.context(format!("nothing was written to {}", a.target.display())))?
            .bytes
    };
    input
        .seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(a.stream.clone(), e))?;
    let input = std::io::BufReader::with_capacity(1 << 20, input);
    let is_disk = a.target.extension().is_some_and(|e| e == "swap");
    let pb = progress::bytes(total, "apply");
    let tick = |n| pb.set_position(n);
    let rep = if is_disk {
        let vol = Volume::open(&a.target, &OpenOptions::default())?;
        // Records never overlap (the stream is checked to be in order): several
        // threads write them while this one reads the next.
        let rep = vol.write_steps(|w| {
            apply_delta(
                input,
                vol.size(),
                &mut |off, b| {
                    let mut buf = w.buffer()?;
                    buf.get_mut(..b.len())
                        .ok_or_else(|| Error::internal("a delta record longer than a step"))?
                        .copy_from_slice(b);
                    w.write(off, buf, b.len())
                },
                &tick,
            )
        })?;
        vol.flush()?;
        vol.close()?;
        rep
    } else {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&a.target)
            .map_err(|e| Error::io(a.target.display().to_string(), e))?;
        let size = f
            .seek(SeekFrom::End(0))
            .map_err(|e| Error::io(a.target.display().to_string(), e))?;
        let rep = apply_delta(
            input,
            size,
            &mut |off, b| {
                f.seek(SeekFrom::Start(off))
                    .and_then(|_| f.write_all(b))
                    .map_err(|e| Error::io(a.target.display().to_string(), e))
            },
            &tick,
        )?;
        f.sync_all()
            .map_err(|e| Error::io(a.target.display().to_string(), e))?;
        rep
    };
    pb.finish_and_clear();
    outln!(
        "applied {} ranges, {} bytes to {}",
        rep.records,
        rep.bytes,
        a.target.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Runs `export`.
pub fn export(a: ExportArgs) -> Result<ExitCode> {
    if let Some(since) = &a.changed_since {
        return export_changes(&a, since);
    }
    let snapshot = a
        .snapshot
        .as_deref()
        .map(|s| resolve(&a.swap, s))
        .transpose()?;
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
        let mut out = NoSeek {
            out: std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock()),
            failed: false,
        };
        // A reader that went away (export - | head) leaves the image cut short: an
        // error (exit 6), never a success.
        if let Err(e) = vol.export(&mut out, false, &tick) {
            return Err(if out.failed {
                e.context("standard output closed before the whole disk was written")
            } else {
                e
            });
        }
    } else {
        refuse_overwrite(&a.out, a.force)?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&a.out)
            .map_err(|e| Error::io(a.out.clone(), e))?;
        let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
        let written = vol.export(&mut f, regular, &tick).and_then(|()| {
            if regular {
                f.set_len(vol.size())
                    .map_err(|e| Error::io(a.out.clone(), e))?;
            }
            Ok(())
        });
        if let Err(e) = written {
            return Err(cut_short(f, &a.out, regular, e));
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
