//! History commands: `snapshot`, `log`, `diff`, `clone`, `reset`, `forget`, `gc`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::PathArg;
use crate::error::{Error, Result};
use crate::volume::history::ranges_of;
use crate::volume::{OpenOptions, Volume};

fn writable(swap: &std::path::Path) -> Result<Volume> {
    Volume::open(swap, &OpenOptions::default())
}

fn json(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(v).map_err(|e| Error::internal(format!("JSON: {e}")))
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of unix seconds.
fn utc(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Arguments of `snapshot`.
#[derive(clap::Args, Debug)]
pub struct SnapshotArgs {
    /// A name to find the snapshot by (unique on this disk).
    #[arg(long)]
    name: Option<String>,
    /// A message kept with it.
    #[arg(short = 'm', long)]
    message: Option<String>,
    /// Print `{"id": …, "name": …}`.
    #[arg(long)]
    json: bool,
    /// The disk.
    swap: PathArg,
}

/// Runs `snapshot`.
pub fn snapshot(a: SnapshotArgs) -> Result<ExitCode> {
    let name = a.name.unwrap_or_default();
    let message = a.message.unwrap_or_default();
    let id = match writable(&a.swap) {
        Ok(vol) => {
            let r = vol.snapshot_labeled(&name, &message)?;
            vol.close()?;
            r.id.to_hex()
        }
        Err(e) if e.kind() == crate::error::ErrorKind::Busy => {
            crate::volume::request::snapshot_running(&a.swap, &name, &message)
                .map_err(|r| r.context(e.to_string()))?
        }
        Err(e) => return Err(e),
    };
    if a.json {
        outln!(
            "{}",
            json(&serde_json::json!({ "id": id, "name": name, "message": message }))?
        );
    } else {
        outln!("{id}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `log`.
#[derive(clap::Args, Debug)]
pub struct LogArgs {
    /// Print a JSON array (`id`, `time`, `name`, `message`, `added_bytes`; with --ref:
    /// `seq`, `root`, `time_ms`, `disk`, `message`, `signed_by`).
    #[arg(long)]
    json: bool,
    /// The versions of this ref at the remote given instead of a disk (newest first,
    /// the hash chain between them checked).
    #[arg(long = "ref", value_name = "NAME")]
    ref_name: Option<String>,
    /// The disk (with --ref: a folder or URL that refs were pushed to).
    swap: PathArg,
}

/// One version in `log --ref --json`.
#[derive(serde::Serialize)]
struct RefRow {
    seq: u64,
    root: String,
    time_ms: u64,
    disk: String,
    message: String,
    signed_by: Option<String>,
}

fn log_ref(a: &LogArgs, name: &str) -> Result<ExitCode> {
    let spec = a.swap.to_string_lossy();
    let refs = crate::volume::refs::open_refs(&spec, std::path::Path::new("."))?;
    let versions = crate::volume::refs::history(refs.as_ref(), name)?;
    let rows: Vec<RefRow> = versions
        .iter()
        .map(|v| RefRow {
            seq: v.seq,
            root: v.root.id.to_hex(),
            time_ms: v.time_ms,
            disk: uuid::Uuid::from_bytes(v.disk_uuid).to_string(),
            message: v.message.clone(),
            signed_by: v.signature.map(|s| {
                let text = crate::volume::signing::public_key_text(&s.public_key);
                if crate::volume::signing::signature_holds(v) {
                    text
                } else {
                    format!("{text} (signature does not verify)")
                }
            }),
        })
        .collect();
    if a.json {
        outln!("{}", json(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    for r in rows {
        outln!(
            "{name}@{}  {} UTC  root {}  disk {}{}{}",
            r.seq,
            utc(r.time_ms / 1000),
            &r.root[..16],
            r.disk,
            match &r.signed_by {
                Some(k) => format!("  signed {k}"),
                None => String::new(),
            },
            if r.message.is_empty() {
                String::new()
            } else {
                format!("  {}", r.message)
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `log`.
pub fn log(a: LogArgs) -> Result<ExitCode> {
    if let Some(name) = &a.ref_name {
        return log_ref(&a, name);
    }
    let vol = super::inspect(&a.swap)?;
    let rows = vol.log()?;
    if a.json {
        outln!("{}", json(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        outln!(
            "no snapshots (take one with: mindcastle snapshot {})",
            a.swap.display()
        );
    }
    for r in rows {
        outln!(
            "{}  {} UTC  +{} bytes  {}{}",
            r.id,
            utc(r.time),
            r.added_bytes,
            if r.name.is_empty() { "-" } else { &r.name },
            if r.message.is_empty() {
                String::new()
            } else {
                format!("  {}", r.message)
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `diff`.
#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Print `{"ranges": [{"offset": N, "length": N}, …], "bytes": N}`.
    #[arg(long)]
    json: bool,
    /// The disk.
    swap: PathArg,
    /// The older snapshot (id, id prefix or name).
    a: String,
    /// The newer snapshot (default: the head).
    b: Option<String>,
}

/// Runs `diff`.
pub fn diff(a: DiffArgs) -> Result<ExitCode> {
    let vol = super::inspect(&a.swap)?;
    let from = vol.find_snapshot(&a.a)?;
    let to = a.b.as_deref().map(|b| vol.find_snapshot(b)).transpose()?;
    let ranges = ranges_of(vol.diff_blocks(&from, to.as_ref())?);
    let bytes: u64 = ranges.iter().map(|r| r.length).sum();
    if a.json {
        outln!(
            "{}",
            json(&serde_json::json!({ "ranges": ranges, "bytes": bytes }))?
        );
    } else {
        for r in &ranges {
            outln!("{} {}", r.offset, r.length);
        }
        outln!("{} ranges, {bytes} bytes differ", ranges.len());
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `clone`.
#[derive(clap::Args, Debug)]
pub struct CloneArgs {
    /// The source: NAME.swap, or NAME.swap@SNAPSHOT for a kept snapshot.
    source: String,
    /// The new disk's `.swap` file (must not exist).
    new: PathArg,
}

/// Opens the source of a clone. The head is read as it is when its log holds no write;
/// otherwise it is opened for writing, so what the log holds (flushed writes not yet in
/// a root) is replayed and checkpointed into the root the clone starts from. A kept
/// snapshot is read as it is, beside a running holder too (it stays kept, so nothing
/// collects its chunks under the clone).
fn open_source(path: &std::path::Path, snapshot: bool) -> Result<Volume> {
    let read = |no_lock| {
        Volume::open(
            path,
            &OpenOptions {
                read_only: true,
                no_lock,
                ..Default::default()
            },
        )
    };
    let busy = crate::error::ErrorKind::Busy;
    if snapshot {
        return match read(false) {
            Err(e) if e.kind() == busy => read(true),
            other => other,
        };
    }
    // Read-only first: a head whose log holds no write is cloned as it is (from a
    // folder this process may not write, too). Writes only in the log need a
    // checkpoint first, which only a writer can make.
    match read(false) {
        Ok(vol) if vol.engine()?.view()?.pending.is_empty() => return Ok(vol),
        Ok(vol) => drop(vol),
        Err(e) if e.kind() == busy => return Err(held_head(path, &e)),
        Err(e) => return Err(e),
    }
    if crate::volume::read_swap(path)?.read_only {
        return read(false); // a read-only disk has no log of its own
    }
    match writable(path) {
        Err(e) if e.kind() == busy => Err(held_head(path, &e)),
        Err(e) => Err(e.context(format!(
            "{} has writes in its log that no root holds yet, and opening it to \
             checkpoint them failed",
            path.display()
        ))),
        ok => ok,
    }
}

/// The refusal of a clone of a head another process holds.
fn held_head(path: &std::path::Path, e: &Error) -> Error {
    Error::new(
        crate::error::ErrorKind::Busy,
        format!(
            "{e}. Its head includes writes only that process can checkpoint, so clone a \
             snapshot of it instead: mindcastle snapshot --name NAME {p} && mindcastle \
             clone {p}@NAME NEW.swap",
            p = path.display()
        ),
    )
}

/// Runs `clone`.
pub fn clone(a: CloneArgs) -> Result<ExitCode> {
    let (path, snap) = match a.source.rsplit_once('@') {
        Some((p, s)) if !std::path::Path::new(&a.source).exists() => {
            (PathBuf::from(p), Some(s.to_string()))
        }
        _ => (PathBuf::from(&a.source), None),
    };
    let vol = open_source(&path, snap.is_some())?;
    let state = match &snap {
        Some(s) => vol.find_snapshot(s)?,
        None => vol
            .root_ref()?
            .ok_or_else(|| Error::invalid(format!("{} has no root yet", path.display())))?,
    };
    let uuid = vol.clone_to(&state, &a.new)?;
    outln!(
        "cloned {}{} into {} (uuid {uuid})",
        path.display(),
        snap.map(|s| format!("@{s}")).unwrap_or_default(),
        a.new.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `reset`.
#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// The disk.
    swap: PathArg,
    /// The snapshot to go back to (id, id prefix or name).
    snapshot: String,
}

/// Runs `reset`.
pub fn reset(a: ResetArgs) -> Result<ExitCode> {
    let vol = writable(&a.swap)?;
    let target = vol.find_snapshot(&a.snapshot)?;
    let size_before = vol.size();
    let saved = vol.reset_to(&target)?;
    let size = vol.size();
    vol.close()?;
    outln!(
        "reset {} to {}; the state it left is kept as snapshot {}{}",
        a.swap.display(),
        target.id,
        saved.id,
        if size == size_before {
            String::new()
        } else {
            format!(" (the disk is {size} bytes now, the snapshot's size; it was {size_before})")
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `forget`.
#[derive(clap::Args, Debug)]
pub struct ForgetArgs {
    /// The disk.
    swap: PathArg,
    /// Snapshots to stop keeping (ids, id prefixes or names).
    #[arg(required = true)]
    snapshots: Vec<String>,
}

/// Runs `forget`.
pub fn forget(a: ForgetArgs) -> Result<ExitCode> {
    let vol = writable(&a.swap)?;
    let targets = a
        .snapshots
        .iter()
        .map(|s| vol.find_snapshot(s))
        .collect::<Result<Vec<_>>>()?;
    let held = || -> u64 {
        std::fs::read_dir(vol.data_dir())
            .map(|r| {
                r.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".lvl"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let before = held();
    vol.forget(&targets)?;
    let freed = before.saturating_sub(held());
    vol.close()?;
    for t in targets {
        outln!("forgot {}", t.id);
    }
    outln!("{freed} bytes freed");
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `gc`.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// Report what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// At a remote: a `.swap` whose key opens versions' roots (repeatable: one per disk
    /// that pushes there).
    #[arg(long, value_name = "FILE")]
    key_from: Vec<PathArg>,
    /// At a remote: keep this many newest versions of each ref (default: all).
    #[arg(long, value_name = "N")]
    keep: Option<u64>,
    /// At a remote: nothing younger than this goes (a version superseded, a chunk
    /// written), so followers reading an older version keep it (default 1h).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    grace: String,
    /// The disk (NAME.swap: its data folder), or a remote that refs were pushed to (a
    /// folder, s3://, gs://, az://).
    swap: PathArg,
}

/// True when `p` names a disk rather than a remote.
fn is_disk(p: &std::path::Path) -> bool {
    p.extension().is_some_and(|e| e == "swap") || p.is_file()
}

/// Runs `gc DEST` (a remote).
fn gc_remote(a: &GcArgs) -> Result<ExitCode> {
    let spec = a.swap.to_string_lossy();
    if !spec.contains("://") && !a.swap.is_dir() {
        return Err(crate::error::Error::not_found(format!(
            "{spec}: no such disk (NAME.swap) or folder"
        )));
    }
    let dest = crate::volume::sync::Destination::open(&spec)?;
    if !dest.moves_refs() {
        return Err(crate::error::Error::invalid(format!(
            "{spec}: gc of a remote needs a folder, s3://, gs:// or az:// (one with refs)"
        )));
    }
    let r = crate::volume::remote_gc::collect(
        &dest,
        &crate::volume::remote_gc::RemoteGc {
            keep: a.keep,
            grace: super::parse_duration(&a.grace, "--grace")?,
            dry_run: a.dry_run,
            keys: a.key_from.clone(),
        },
    )?;
    if a.json {
        outln!("{}", json(&r)?);
    } else {
        outln!(
            "{} refs; {} versions kept, {} older ones{}; {} chunks live, {} unreferenced \
             ({} bytes){}, {} unreferenced but younger than the grace period (kept)",
            r.refs,
            r.versions_kept,
            r.versions_deleted,
            if r.deleted { " deleted" } else { "" },
            r.live_chunks,
            r.garbage_chunks,
            r.garbage_bytes,
            if r.deleted {
                " deleted"
            } else {
                ", nothing deleted (dry run)"
            },
            r.young_chunks
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `gc`.
pub fn gc(a: GcArgs) -> Result<ExitCode> {
    if !is_disk(&a.swap) {
        return gc_remote(&a);
    }
    if !a.key_from.is_empty() || a.keep.is_some() || a.grace != "1h" {
        return Err(crate::error::Error::invalid(
            "--key-from, --keep and --grace are for gc of a remote (a folder or URL that \
             refs were pushed to), not of a disk",
        ));
    }
    let vol = writable(&a.swap)?;
    let r = vol.gc(a.dry_run)?;
    vol.close()?;
    if a.json {
        outln!("{}", json(&r)?);
    } else {
        outln!(
            "{} chunks live; {} unreferenced ({} bytes){}",
            r.live_chunks,
            r.garbage_chunks,
            r.garbage_bytes,
            if r.deleted {
                " deleted"
            } else {
                ", nothing deleted (dry run)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::utc;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_798_675_200 + 3661), "2026-12-31 01:01:01");
    }
}
