//! Web servers for tests, on 127.0.0.1: nginx serving a folder (Range on, WebDAV PUT
//! and DELETE for `push` over http), and a daemon handle that stops its process.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_port(port: u16) {
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "nothing listens on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A process stopped on drop with SIGTERM (nginx's master then stops its workers),
/// SIGKILL if it lingers.
pub struct Daemon(pub Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx serving `root` on 127.0.0.1 with Range and WebDAV PUT/DELETE.
pub fn nginx(dir: &Path, root: &Path) -> (Daemon, u16) {
    let port = free_port();
    let conf = dir.join("nginx.conf");
    let user = if unsafe_is_root() { "user root;\n" } else { "" };
    std::fs::write(
        &conf,
        format!(
            "{user}daemon off;\nworker_processes 1;\npid {pid};\nerror_log {err} info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n access_log off;\n client_body_temp_path {tmp};\n\
             client_max_body_size 64m;\n\
             server {{\n  listen 127.0.0.1:{port};\n  root {root};\n\
             location / {{ dav_methods PUT DELETE; create_full_put_path on; }}\n }}\n}}\n",
            pid = s(&dir.join("nginx.pid")),
            err = s(&dir.join("nginx.err")),
            tmp = s(&dir.join("nginx-body")),
            root = s(root),
        ),
    )
    .unwrap();
    let child = Command::new("nginx")
        .args(["-c", s(&conf), "-p", s(dir)])
        .env("PATH", super::server::path_env())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_port(port);
    (Daemon(child), port)
}

pub fn unsafe_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}
