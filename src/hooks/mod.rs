//! The statechange script: resolved like the original (a path, must be executable), run
//! with the event as its argument and `DEVICE`, `PID`, `UUID` (and `SNAPSHOT_UUID`) set.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};

/// Events passed to the script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A new disk was created and attached.
    Create,
    /// An existing disk was attached.
    Open,
    /// A snapshot was taken.
    Snapshot,
    /// The disk is about to be detached.
    Close,
    /// The disk was attached again to the device a killed attach left (kernel nbd
    /// through netlink): whatever the script set up on `open` (a mount) is still there.
    Recover,
}

impl Event {
    /// The argument the script receives.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Create => "create",
            Event::Open => "open",
            Event::Snapshot => "snapshot",
            Event::Close => "close",
            Event::Recover => "recover",
        }
    }
}

/// A resolved script.
#[derive(Clone, Debug)]
pub struct Script {
    path: PathBuf,
}

impl Script {
    /// Resolves `name`: a name with a `/` is a path; a bare name is searched in PATH.
    /// It must exist and be executable.
    pub fn resolve(name: &str) -> Result<Self> {
        let candidates: Vec<PathBuf> = if name.contains('/') {
            vec![PathBuf::from(name)]
        } else {
            std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join(name)).collect())
                .unwrap_or_default()
        };
        for c in candidates {
            if let Ok(m) = std::fs::metadata(&c) {
                if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                    let path = std::fs::canonicalize(&c).unwrap_or(c);
                    return Ok(Self { path });
                }
                if m.is_file() {
                    return Err(Error::invalid(format!(
                        "statechange script {} is not executable",
                        c.display()
                    )));
                }
            }
        }
        Err(Error::not_found(format!(
            "statechange script '{name}' not found (give a path like ./{name}, or put it in PATH)"
        )))
    }

    /// The script's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs the script for `event`; returns its exit code (None when killed by a signal).
    pub fn run(
        &self,
        event: Event,
        device: &str,
        uuid: &str,
        snapshot: Option<&str>,
    ) -> Result<Option<i32>> {
        let mut cmd = Command::new(&self.path);
        cmd.arg(event.as_str())
            .env("DEVICE", device)
            .env("PID", std::process::id().to_string())
            .env("UUID", uuid);
        if let Some(s) = snapshot {
            cmd.env("SNAPSHOT_UUID", s);
        }
        let st = cmd
            .status()
            .map_err(|e| Error::io(format!("running {}", self.path.display()), e))?;
        tracing::info!(event = event.as_str(), status = %st, "statechange script finished");
        Ok(st.code())
    }
}
