//! A real S3 server for tests: s3s-fs on 127.0.0.1 with SigV4 keys.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Stdio};

use super::web::{free_port, wait_port, Daemon};

/// The access key the server is started with.
pub const KEY: &str = "mindcastle-test-key";
/// Its secret.
pub const SECRET: &str = "mindcastle-test-secret";

/// s3s-fs on 127.0.0.1, data under `root`, bucket `bucket` made.
pub fn start(root: &Path) -> (Daemon, u16) {
    let port = free_port();
    std::fs::create_dir_all(root.join("bucket")).unwrap();
    let child = Command::new("s3s-fs")
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", KEY, "--secret-key", SECRET])
        .arg(root)
        .env("PATH", super::server::path_env())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_port(port);
    (Daemon(child), port)
}

/// The environment a client of the server on `port` needs.
pub fn env(port: u16) -> [(&'static str, String); 4] {
    [
        ("AWS_ACCESS_KEY_ID", KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY", SECRET.to_string()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}")),
    ]
}
