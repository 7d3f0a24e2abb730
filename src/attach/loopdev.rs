//! Loop devices through `losetup` (util-linux): attach a file, detach a device.

use std::path::Path;
use std::process::Command;

use crate::error::{Error, ErrorKind, Result};

/// Attaches `file` to the first free loop device; returns `/dev/loopN`.
pub fn attach(file: &Path) -> Result<String> {
    // Direct I/O keeps a second copy of every block out of the page cache; not every
    // kernel allows it on FUSE files, so fall back to buffered.
    for args in [
        &["--find", "--show", "--direct-io=on"][..],
        &["--find", "--show"][..],
    ] {
        let out = Command::new("losetup")
            .args(args)
            .arg(file)
            .output()
            .map_err(|e| Error::io("running losetup (util-linux)", e))?;
        if out.status.success() {
            let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if dev.starts_with("/dev/") {
                return Ok(dev);
            }
        }
        tracing::debug!(?args, err = %String::from_utf8_lossy(&out.stderr), "losetup attempt failed");
    }
    Err(Error::new(
        ErrorKind::Unavailable,
        format!(
            "losetup could not attach {} to a loop device",
            file.display()
        ),
    ))
}

/// Detaches a loop device.
pub fn detach(dev: &str) -> Result<()> {
    let st = Command::new("losetup")
        .args(["-d", dev])
        .status()
        .map_err(|e| Error::io("running losetup -d", e))?;
    if st.success() {
        // The kernel finishes a detach when the last opener (udev's probe, say) closes
        // the device; wait for that so nothing is left when we exit.
        let name = dev.trim_start_matches("/dev/");
        let backing = std::path::PathBuf::from(format!("/sys/block/{name}/loop/backing_file"));
        for _ in 0..200 {
            if !backing.exists() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(25));
        }
        tracing::warn!(device = dev, "loop device still busy 5 s after detach");
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::Io,
            format!("losetup -d {dev} failed ({st})"),
        ))
    }
}

/// Loop devices whose backing file is `file` (from sysfs, without touching the file,
/// which may sit on a dead FUSE mount).
pub fn devices_backed_by(file: &Path) -> Vec<String> {
    let want = file.to_string_lossy().into_owned();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let backing = std::fs::read_to_string(e.path().join("loop/backing_file")).ok()?;
            // The kernel may append " (deleted)".
            let b = backing.trim_end();
            (b == want || b.strip_suffix(" (deleted)") == Some(want.as_str()))
                .then(|| format!("/dev/{name}"))
        })
        .collect()
}
