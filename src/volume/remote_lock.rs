//! Locks at a remote, so a collection (`gc DEST`) never runs while a push does: a push
//! takes a shared lock, a collection an exclusive one (the protocol restic uses for
//! `prune`). Without it a push could rely on a chunk it found at the remote that a
//! collection running beside it deletes, and name it in a new version.
//!
//! A lock is the object `locks/KIND-UUID` (KIND `push` or `gc`) holding JSON
//! `{"kind", "pid", "host", "time_ms"}`, rewritten every [`REFRESH`] while held and
//! removed when released. Taking one: write it, then list `locks/`; a conflicting lock
//! that is not stale (written in the last [`STALE`]) makes the taker remove its own and
//! fail with exit 5. Both write before they list, so of two takers at once at least one
//! sees the other (listings are consistent at S3, GCS, Azure and in a folder). A lock
//! left by a killed process goes stale and is then ignored (and removed by `gc`): at
//! once when it names this host and a PID that no longer runs, else after [`STALE`].
//! Times are the takers' clocks: hosts that push and collect keep them within minutes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::store::refs::RefStore;

/// How often a held lock is rewritten.
pub const REFRESH: Duration = Duration::from_secs(60);
/// A lock not rewritten for this long belongs to a process that is gone.
pub const STALE: Duration = Duration::from_secs(10 * 60);

/// What a lock is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    /// Shared: pushes run beside each other.
    Push,
    /// Exclusive: a collection runs alone.
    Gc,
}

/// The lock object's content.
#[derive(Debug, Serialize, Deserialize)]
pub struct LockInfo {
    /// Its kind.
    pub kind: LockKind,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's host name.
    pub host: String,
    /// When it was last written (unix milliseconds, the holder's clock).
    pub time_ms: u64,
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}

/// A lock held at a remote; released on drop.
pub struct RemoteLock {
    refs: Arc<dyn RefStore>,
    name: String,
    stop: Arc<AtomicBool>,
    refresher: Option<std::thread::JoinHandle<()>>,
}

fn write(refs: &dyn RefStore, name: &str, kind: LockKind) -> Result<()> {
    let info = LockInfo {
        kind,
        pid: std::process::id(),
        host: host_name(),
        time_ms: now_ms(),
    };
    let body = serde_json::to_vec(&info).map_err(|e| Error::internal(e.to_string()))?;
    refs.put(name, &body)
}

/// Every lock at the remote but `except`, with its name (unreadable ones count as
/// fresh `gc` locks: a lock is never ignored for being damaged).
pub fn list(refs: &dyn RefStore, except: Option<&str>) -> Result<Vec<(String, LockInfo)>> {
    let mut out = Vec::new();
    for n in refs.list_dir("locks")? {
        let name = format!("locks/{n}");
        if Some(name.as_str()) == except {
            continue;
        }
        let Some(body) = refs.get(&name)? else {
            continue; // released meanwhile
        };
        let info = serde_json::from_slice(&body).unwrap_or(LockInfo {
            kind: LockKind::Gc,
            pid: 0,
            host: "(unreadable lock)".into(),
            time_ms: now_ms(),
        });
        out.push((name, info));
    }
    Ok(out)
}

/// True when `info` was written within [`STALE`] of `now` by a process that may still
/// run: one of this host whose PID is gone (killed) is stale at once.
pub fn fresh(info: &LockInfo, now: u64) -> bool {
    if info.host == host_name()
        && info.pid != 0
        && !std::path::Path::new(&format!("/proc/{}", info.pid)).exists()
    {
        return false;
    }
    now.saturating_sub(info.time_ms) < STALE.as_millis() as u64
}

impl RemoteLock {
    /// Takes a lock of `kind` at `refs`: shared for `Push` (fails while a collection
    /// runs), exclusive for `Gc` (fails while any other lock is held).
    pub fn take(refs: Arc<dyn RefStore>, kind: LockKind) -> Result<Self> {
        let tag = match kind {
            LockKind::Push => "push",
            LockKind::Gc => "gc",
        };
        let name = format!("locks/{tag}-{}", uuid::Uuid::new_v4().simple());
        write(refs.as_ref(), &name, kind)?;
        let conflicts = match list(refs.as_ref(), Some(&name)) {
            Ok(all) => {
                let now = now_ms();
                all.into_iter()
                    .filter(|(_, i)| {
                        fresh(i, now) && (kind == LockKind::Gc || i.kind == LockKind::Gc)
                    })
                    .collect::<Vec<_>>()
            }
            Err(e) => {
                let _ = refs.delete(&name);
                return Err(e);
            }
        };
        if let Some((other, info)) = conflicts.first() {
            let _ = refs.delete(&name);
            let what = match kind {
                LockKind::Push => "a collection (gc) is running there",
                LockKind::Gc => "a push or another collection is running there",
            };
            return Err(Error::new(
                ErrorKind::Busy,
                format!(
                    "{}: {what} ({other}: pid {} on {}, {} s ago); try again when it ends \
                     (a lock not renewed for {} minutes is taken as abandoned)",
                    refs.describe(),
                    info.pid,
                    info.host,
                    now_ms().saturating_sub(info.time_ms) / 1000,
                    STALE.as_secs() / 60
                ),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let refresher = {
            let (refs, name, stop) = (refs.clone(), name.clone(), stop.clone());
            std::thread::Builder::new()
                .name("mindcastle-remote-lock".into())
                .spawn(move || {
                    let step = Duration::from_millis(200);
                    let mut waited = Duration::ZERO;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(step);
                        waited += step;
                        if waited >= REFRESH {
                            waited = Duration::ZERO;
                            if let Err(e) = write(refs.as_ref(), &name, kind) {
                                tracing::warn!(error = %e, lock = %name, "renewing the remote lock failed");
                            }
                        }
                    }
                })
                .map_err(|e| Error::io("starting the lock renewer", e))?
        };
        Ok(Self {
            refs,
            name,
            stop,
            refresher: Some(refresher),
        })
    }
}

impl Drop for RemoteLock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.refresher.take() {
            let _ = h.join();
        }
        if let Err(e) = self.refs.delete(&self.name) {
            tracing::warn!(error = %e, lock = %self.name, "releasing the remote lock failed; it goes stale");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::refs::FolderRefs;

    #[test]
    fn pushes_share_and_a_collection_excludes() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::io("tempdir", e))?;
        let refs: Arc<dyn RefStore> = Arc::new(FolderRefs::new(dir.path()));
        let p1 = RemoteLock::take(refs.clone(), LockKind::Push)?;
        let p2 = RemoteLock::take(refs.clone(), LockKind::Push)?;
        let e = RemoteLock::take(refs.clone(), LockKind::Gc).err();
        assert_eq!(e.map(|e| e.kind()), Some(ErrorKind::Busy));
        drop((p1, p2));
        let g = RemoteLock::take(refs.clone(), LockKind::Gc)?;
        let e = RemoteLock::take(refs.clone(), LockKind::Push).err();
        assert!(e.is_some_and(|e| e.to_string().contains("collection")));
        assert!(RemoteLock::take(refs.clone(), LockKind::Gc).is_err());
        drop(g);
        assert!(
            refs.list_dir("locks")?.is_empty(),
            "released locks are removed"
        );
        // A stale lock (its holder killed) is ignored.
        let old = LockInfo {
            kind: LockKind::Gc,
            pid: 1,
            host: "gone".into(),
            time_ms: now_ms() - STALE.as_millis() as u64 - 1,
        };
        refs.put(
            "locks/gc-old",
            &serde_json::to_vec(&old).map_err(|e| Error::internal(e.to_string()))?,
        )?;
        drop(RemoteLock::take(refs.clone(), LockKind::Push)?);
        Ok(())
    }
}
