//! Starting `mindcastle serve` for a test, and checking the real clients exist.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// True when `tool` is on PATH. Under CI=true a missing tool fails the test loudly;
/// otherwise the caller skips with a message.
pub fn have(tool: &str) -> bool {
    let ok = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .env("PATH", path_env())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is required under CI=true (installed by .ci/run)");
        }
        eprintln!("SKIPPING: {tool} is not installed (scripts/install-deps.sh installs it)");
    }
    ok
}

/// PATH with /usr/bin first (nbdsh needs Debian's Python).
pub fn path_env() -> String {
    format!(
        "/usr/bin:/bin:/usr/sbin:/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A running server; stopped with SIGTERM on drop.
pub struct Server {
    pub child: Option<Child>,
    pub socket: PathBuf,
}

impl Server {
    /// Serves `swap` on a socket in `dir`, with extra args.
    pub fn start(dir: &Path, swap: &Path, extra: &[&str]) -> Self {
        Self::start_with_env(dir, swap, extra, &[])
    }

    /// [`Server::start`] with extra environment variables.
    pub fn start_with_env(dir: &Path, swap: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let socket = dir.join(format!("nbd-{}.sock", rand_suffix()));
        let child = Command::new(env!("CARGO_BIN_EXE_mindcastle"))
            .envs(env.iter().copied())
            .arg("serve")
            .arg(swap)
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !socket.exists() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child: Some(child),
            socket,
        }
    }

    /// The libnbd URI.
    pub fn uri(&self) -> String {
        format!("nbd+unix:///?socket={}", self.socket.display())
    }

    /// SIGTERM, then the exit status must be 0.
    pub fn stop(mut self) {
        let mut c = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let st = c.wait().unwrap();
        assert!(st.success(), "serve exited with {st}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

/// Runs a client tool with PATH set for it.
pub fn tool(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .env("PATH", path_env())
        .output()
        .unwrap()
}

/// Runs a tool and requires success.
pub fn tool_ok(cmd: &str, args: &[&str]) -> Output {
    let o = tool(cmd, args);
    assert!(
        o.status.success(),
        "{cmd} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}
