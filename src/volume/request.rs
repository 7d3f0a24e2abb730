//! `mindcastle snapshot` while another process (attach or serve) holds the disk: the
//! command leaves a request file in the data folder and sends the holder SIGUSR1; the
//! holder takes the snapshot with the request's name and message and answers in a
//! reply file. A SIGUSR1 without a request takes an unnamed snapshot, as in the
//! original.
//!
//! Files (JSON, in the data folder, never chunks):
//! `snapshot-request.N` = `{"name": …, "message": …}`; `snapshot-reply.N` =
//! `{"id": HEX64}` or `{"error": TEXT}`, where N is the asking process's PID.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::Volume;
use crate::error::{Error, ErrorKind, Result};
use crate::format::root::RootRef;

const REQUEST: &str = "snapshot-request.";
const REPLY: &str = "snapshot-reply.";
/// How long the asking command waits for the holder's answer.
const WAIT: Duration = Duration::from_secs(120);

#[derive(serde::Serialize, serde::Deserialize)]
struct Request {
    name: String,
    message: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Reply {
    id: Option<String>,
    error: Option<String>,
}

fn write_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// The mindcastle process that holds the disk's lock: found from the kernel's lock table,
/// never this process, and checked to run mindcastle (a signal to anything else could
/// kill it).
fn holder(dir: &Path) -> Result<i32> {
    let pid = super::disk_files::lock_holder(dir).ok_or_else(|| {
        Error::new(
            ErrorKind::Unavailable,
            format!(
                "no process holds the lock of {} any more (it may have just closed the disk); \
                 try again",
                dir.display()
            ),
        )
    })?;
    if pid == std::process::id() as i32 {
        return Err(Error::internal(
            "asked to signal this very process as the holder of its own disk",
        ));
    }
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let is_mindcastle = exe.as_ref().and_then(|p| p.file_name()).is_some_and(|n| {
        n.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .starts_with("mindcastle")
    });
    if !is_mindcastle {
        return Err(Error::new(
            ErrorKind::Busy,
            format!(
                "process {pid} holds {} but is not mindcastle ({}); not signalling it",
                dir.display(),
                exe.map_or("its program is unknown".into(), |p| p.display().to_string())
            ),
        ));
    }
    Ok(pid)
}

/// Asks the process holding `swap` to take a snapshot; returns its id.
pub fn snapshot_running(swap: &Path, name: &str, message: &str) -> Result<String> {
    let sw = super::read_swap(swap)?;
    let dir = super::data_dir(swap, &sw);
    let pid = holder(&dir)?;
    let me = std::process::id();
    let request = dir.join(format!("{REQUEST}{me}"));
    let reply = dir.join(format!("{REPLY}{me}"));
    let _ = std::fs::remove_file(&reply);
    let text = serde_json::to_string(&Request {
        name: name.to_string(),
        message: message.to_string(),
    })
    .map_err(|e| Error::internal(e.to_string()))?;
    write_file(&request, &text)?;
    if let Err(e) = crate::attach::sys::send_signal(pid, libc::SIGUSR1) {
        let _ = std::fs::remove_file(&request);
        return Err(Error::io(
            format!("signalling process {pid} (the holder of the disk)"),
            e,
        ));
    }
    let started = Instant::now();
    while started.elapsed() < WAIT {
        if let Ok(text) = std::fs::read_to_string(&reply) {
            let _ = std::fs::remove_file(&reply);
            let r: Reply = serde_json::from_str(&text)
                .map_err(|e| Error::internal(format!("snapshot reply: {e}")))?;
            return match (r.id, r.error) {
                (Some(id), _) => Ok(id),
                (None, Some(e)) => Err(Error::invalid(format!("process {pid}: {e}"))),
                (None, None) => Err(Error::internal("empty snapshot reply")),
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_file(&request);
    Err(Error::new(
        ErrorKind::Unavailable,
        format!(
            "process {pid} holds the disk but did not answer a snapshot request in {} s \
             (is it a mindcastle attach or serve?)",
            WAIT.as_secs()
        ),
    ))
}

fn pending(dir: &Path) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(REQUEST)?;
            (!n.ends_with(".tmp")).then(|| (e.path(), n.to_string()))
        })
        .collect()
}

/// SIGUSR1 in the process holding the disk: answers every request file, or takes one
/// unnamed snapshot when there is none. Returns the snapshots taken.
pub fn on_sigusr1(vol: &Volume) -> Vec<Result<RootRef>> {
    let dir = vol.data_dir().to_path_buf();
    let requests = pending(&dir);
    if requests.is_empty() {
        return vec![vol.snapshot_labeled("", "")];
    }
    let mut out = Vec::new();
    for (path, who) in requests {
        let r = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))
            .and_then(|t| {
                serde_json::from_str::<Request>(&t)
                    .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
            })
            .and_then(|req| vol.snapshot_labeled(&req.name, &req.message));
        let _ = std::fs::remove_file(&path);
        let reply = match &r {
            Ok(root) => Reply {
                id: Some(root.id.to_hex()),
                error: None,
            },
            Err(e) => Reply {
                id: None,
                error: Some(e.to_string()),
            },
        };
        if let Ok(text) = serde_json::to_string(&reply) {
            if let Err(e) = write_file(&dir.join(format!("{REPLY}{who}")), &text) {
                tracing::warn!(error = %e, "answering a snapshot request");
            }
        }
        out.push(r);
    }
    out
}
