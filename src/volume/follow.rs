//! A `.swap` that follows a ref (`ref=NAME` beside `fallback=`): each open takes the
//! ref's newest version, as `git pull --ff-only` would, while the disk has no state of
//! its own; `mindcastle update` does the same on its own and refuses when it cannot.
//!
//! A disk is at a version when its `snapshot=` is that version's root and its log holds
//! no writes. Then moving `snapshot=` to a newer version's root loses nothing, and the
//! log (which belongs to the root it was started on) is empty, so nothing is replayed
//! onto a root it was not written on. A disk with writes of its own stays on them, with
//! a warning: its writes are never dropped for a newer image.
//!
//! Every version taken is checked against the `.swap` file's `trust=`, `origin=` and
//! `refseq=` (see [`super::refs::Trust`]); `refseq=` is then the version taken, so a
//! remote that later offers an older one is refused (rollback).

use std::path::Path;

use serde::Serialize;

use super::disk_files::{base_dir, write_atomic};
use super::refs::{get_version, newest, open_refs, Found, Trust};
use crate::error::{Error, ErrorKind, Result};
use crate::format::swapfile::SwapFile;

/// What following did at an open or an update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Followed {
    /// The disk was at the newest version already.
    Current,
    /// Moved to a newer version.
    Moved,
    /// The disk has writes of its own since the version it came from; it stays on them.
    Diverged,
    /// No fallback could say (offline, or no such ref yet): the disk stays where it was.
    Unreachable,
}

/// The report of a follow.
#[derive(Debug, Clone, Serialize)]
pub struct FollowReport {
    /// The ref.
    #[serde(rename = "ref")]
    pub name: String,
    /// What happened.
    pub outcome: Followed,
    /// The version the disk was at (0: none).
    pub from_seq: u64,
    /// The newest version at the remote (0: unknown).
    pub newest_seq: u64,
    /// The root the disk is at now, hex.
    pub root: Option<String>,
    /// The fallback the ref was read from.
    pub remote: Option<String>,
}

/// True when the data folder's log holds writes (so the state is the disk's own).
fn log_has_writes(dir: &Path) -> Result<bool> {
    if !dir.is_dir() {
        return Ok(false);
    }
    let replay = crate::lsm::wal::Wal::read_ops(&dir.join("wal"), 0)?;
    Ok(!replay.ops.is_empty())
}

/// The trust rules of `swap`.
fn trust_of<'a>(swap: &'a SwapFile, name: &'a str) -> Result<Trust<'a>> {
    let origin = match &swap.origin {
        Some(o) => Some(
            *uuid::Uuid::parse_str(o)
                .map_err(|e| Error::invalid(format!("origin={o}: {e}")))?
                .as_bytes(),
        ),
        None => None,
    };
    Ok(Trust {
        name,
        keys: &swap.trust,
        origin,
        floor: swap.ref_seq,
    })
}

type Newest = (Found, std::sync::Arc<dyn crate::store::refs::RefStore>);

/// The newest version of ref `name` at the first of `swap`'s fallbacks that has it,
/// with the error of the last fallback that could not answer. A damaged version is an
/// error, never passed over for another fallback's.
fn find_newest(
    swap: &SwapFile,
    name: &str,
    base: &Path,
) -> Result<(Option<Newest>, Option<Error>)> {
    let mut last_err: Option<Error> = None;
    for f in &swap.fallbacks {
        let refs = open_refs(f, base)?;
        match newest(refs.as_ref(), name, 0, false) {
            Ok(Some(v)) => return Ok((Some((v, refs)), last_err)),
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::Corrupt => return Err(e),
            Err(e) => {
                tracing::warn!(remote = %f, error = %e, "could not read the ref here");
                last_err = Some(e);
            }
        }
    }
    Ok((None, last_err))
}

/// For `serve --follow`: the newest version of the ref the `.swap` at `path` follows
/// when it is newer than `floor` and passes the file's trust rules (None: nothing
/// newer, or no fallback answered).
pub fn newer_version(
    path: &Path,
    floor: u64,
) -> Result<Option<crate::format::ref_version::RefVersion>> {
    let mut swap = super::read_swap(path)?;
    let Some(name) = swap.follow.clone() else {
        return Ok(None);
    };
    swap.ref_seq = swap.ref_seq.max(floor);
    let (found, err) = find_newest(&swap, &name, &base_dir(path))?;
    let Some((f, refs)) = found else {
        if let Some(e) = err {
            return Err(e);
        }
        return Ok(None);
    };
    let what = format!(
        "{}: version {} of ref '{name}'",
        refs.describe(),
        f.version.seq
    );
    trust_of(&swap, &name)?.check(&f.version, &what)?;
    Ok((f.version.seq > floor).then_some(f.version))
}

/// Resolves `swap`'s `ref=` (unchanged without one). With `persist`, a move is
/// written to the `.swap` at `path` (the caller holds the disk's lock); without it, only
/// when there is no data folder (nothing else could be writing the `.swap`); with `strict`,
/// a diverged or unreachable disk is an error (`update`).
pub fn follow(
    path: &Path,
    swap: &mut SwapFile,
    dir: &Path,
    persist: bool,
    strict: bool,
) -> Result<Option<FollowReport>> {
    let Some(name) = swap.follow.clone() else {
        return Ok(None);
    };
    let base = base_dir(path);
    let mut report = FollowReport {
        name: name.clone(),
        outcome: Followed::Unreachable,
        from_seq: swap.ref_seq,
        newest_seq: 0,
        root: swap.snapshot.map(|r| r.id.to_hex()),
        remote: None,
    };
    // The version the disk came from is asked for beside the newest (from the first
    // fallback, where the ref nearly always is), so a move costs no extra round trip.
    let first = match swap.fallbacks.first() {
        Some(f) if swap.ref_seq > 0 && swap.snapshot.is_some() => Some(open_refs(f, &base)?),
        _ => None,
    };
    let (newest_found, prior) = std::thread::scope(|s| {
        let (name, seq) = (name.as_str(), swap.ref_seq);
        let prior = first.as_ref().map(|r| {
            let spawned = crate::threads::spawn(s, move || get_version(r.as_ref(), name, seq));
            (r, spawned)
        });
        let n = find_newest(swap, name, &base);
        let p = prior.map(|(r, h)| match h {
            Some(h) => crate::threads::join(h, "version look-up"),
            None => get_version(r.as_ref(), name, seq),
        });
        (n, p)
    });
    let (found, last_err) = newest_found?;
    if let Some((_, refs)) = &found {
        report.remote = Some(refs.describe());
    }
    let Some((newest_found, refs)) = found else {
        let why = match last_err {
            Some(e) => e.to_string(),
            None => format!("no fallback has ref '{name}'"),
        };
        if strict || swap.snapshot.is_none() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                format!("{}: following ref '{name}': {why}", path.display()),
            ));
        }
        tracing::warn!(disk = %path.display(), r#ref = %name, reason = %why, "the followed ref could not be read; opening the version the disk is at");
        return Ok(Some(report));
    };
    let v = &newest_found.version;
    let what = format!("{}: version {} of ref '{name}'", refs.describe(), v.seq);
    let trusted = trust_of(swap, &name)?.check(v, &what);
    report.newest_seq = v.seq;
    // Writes only in the log are the disk's own as much as checkpointed ones: the same
    // answer either way, whether or not a checkpoint ran.
    if trusted.is_ok()
        && v.seq == swap.ref_seq
        && swap.snapshot == Some(v.root)
        && !log_has_writes(dir)?
    {
        report.outcome = Followed::Current;
        return Ok(Some(report));
    }
    // At the version it came from: that version's root and an empty log.
    // A root this disk wrote itself is in its data folder (a checkpoint stores it
    // there); one it took from a version is not (unless `pull` copied it: then the
    // disk stays, which loses nothing).
    let not_own = |root: &crate::format::root::RootRef| !dir.join(root.id.file_name()).exists();
    let at_version = match (swap.ref_seq, &swap.snapshot) {
        (_, None) => true,
        (0, Some(root)) => not_own(root),
        (seq, Some(root)) => {
            let from_first = first
                .as_ref()
                .is_some_and(|f| f.describe() == refs.describe());
            let came_from = match prior {
                Some(p) if from_first => p?,
                _ => get_version(refs.as_ref(), &name, seq)?,
            };
            match came_from {
                Some(f) => f.version.root == *root,
                // Collected at the remote.
                None => not_own(root),
            }
        }
    };
    if !at_version || log_has_writes(dir)? {
        report.outcome = Followed::Diverged;
        // Its own state is opened whatever the remote offers; a version it would refuse
        // is only reported.
        if let Err(e) = trusted {
            if strict {
                return Err(e);
            }
            tracing::warn!(disk = %path.display(), error = %e, "the ref's newest version is refused; the disk has writes of its own and stays on them");
            return Ok(Some(report));
        }
        if strict {
            let why = if v.seq > swap.ref_seq {
                format!(
                    "; not moving it to version {} (make a disk of the new version with \
                     `mindcastle clone`, or of this state with `push --ref`)",
                    v.seq
                )
            } else {
                ", the newest; it stays on them (`update` moves only a disk without writes \
                 of its own; `push --ref` publishes this state)"
                    .to_string()
            };
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{}: the disk has writes of its own since version {} of ref '{name}'{why}",
                    path.display(),
                    swap.ref_seq,
                ),
            ));
        }
        if v.seq > swap.ref_seq {
            tracing::warn!(disk = %path.display(), r#ref = %name, at = swap.ref_seq, newest = v.seq, "the disk has writes of its own; staying on them");
        } else {
            tracing::debug!(disk = %path.display(), r#ref = %name, "the disk has writes of its own since its version, the newest");
        }
        return Ok(Some(report));
    }
    // A disk at its version takes only a version it trusts.
    trusted?;
    // The version's size comes with it: its source may have been resized since.
    if v.disk_size != swap.size {
        tracing::info!(disk = %path.display(), from = swap.size, to = v.disk_size, "following: the ref's newest version is of another size");
    }
    swap.snapshot = Some(v.root);
    swap.ref_seq = v.seq;
    swap.size = v.disk_size;
    if persist {
        // The empty log belongs to the old root (its segment numbers follow that root's):
        // gone first, so a crash before the .swap is written leaves the old root with no
        // log, never the new root with the old root's log.
        if dir.is_dir() {
            crate::lsm::wal::Wal::remove_if_empty(&dir.join("wal"))?;
        }
        write_atomic(path, &swap.render())?;
    } else if !dir.is_dir() {
        // A reader with no data folder (so no writer beside it, and no log): the move
        // is noted too, so `refseq=` keeps refusing older versions. A `.swap` it may not
        // write (a read-only place) only loses that memory, with a warning.
        if let Err(e) = write_atomic(path, &swap.render()) {
            tracing::warn!(disk = %path.display(), error = %e, "could not note the version taken in the .swap (rollback protection starts again from its refseq=)");
        }
    }
    tracing::info!(disk = %path.display(), r#ref = %name, version = v.seq, root = %v.root.id, "following: at the ref's newest version");
    report.outcome = Followed::Moved;
    report.root = Some(v.root.id.to_hex());
    Ok(Some(report))
}

/// `mindcastle update`: fast-forwards the disk at `path` to its ref's newest version,
/// under the disk's lock; an error when it has writes of its own or no fallback answers.
pub fn update(path: &Path) -> Result<FollowReport> {
    let mut swap = super::read_swap(path)?;
    if swap.follow.is_none() {
        return Err(Error::invalid(format!(
            "{} follows no ref (add ref=NAME, or make a follower with `push --ref NAME \
             --swap-out FILE`)",
            path.display()
        )));
    }
    let dir = super::disk_files::data_dir(path, &swap);
    std::fs::create_dir_all(&dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let _lock = super::disk_files::DiskLock::take(&dir, true)?;
    // Read again under the lock: a writer may have checkpointed before it let go.
    swap = super::read_swap(path)?;
    follow(path, &mut swap, &dir, true, true)?
        .ok_or_else(|| Error::internal("a followed ref vanished from the .swap"))
}
