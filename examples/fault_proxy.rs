//! The tests' HTTP proxy as a program, for benchmarks: forwards 127.0.0.1:PORT to an
//! upstream port on 127.0.0.1, adding latency and faults, and keeps a file with its
//! counters (`requests body_bytes injected`) up to date.
//!
//! Usage: fault_proxy UPSTREAM_PORT LATENCY_MS STATS_FILE [UNAVAILABLE_PERMILLE]
//!        [CORRUPT_PERMILLE]; prints the port it listens on, runs until killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/common/proxy.rs"]
mod proxy;

use std::sync::atomic::Ordering;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: u64| -> u64 {
        args.get(i)
            .map_or(default, |a| a.parse().expect("a number"))
    };
    assert!(
        args.len() >= 4,
        "usage: fault_proxy UPSTREAM_PORT LATENCY_MS STATS_FILE [503‰] [corrupt‰]"
    );
    let p = proxy::Proxy::start(
        arg(1, 0) as u16,
        proxy::Faults {
            latency: Duration::from_millis(arg(2, 0)),
            unavailable_permille: arg(4, 0) as u32,
            corrupt_permille: arg(5, 0) as u32,
            add_object_headers: false,
            ignore_range: false,
            truncate_permille: 0,
            stall: false,
        },
        42,
    );
    println!("{}", p.port);
    let stats = args[3].clone();
    loop {
        let c = &p.counts;
        let line = format!(
            "{} {} {}\n",
            c.requests.load(Ordering::Relaxed),
            c.body_bytes.load(Ordering::Relaxed),
            c.injected.load(Ordering::Relaxed)
        );
        let tmp = format!("{stats}.tmp");
        std::fs::write(&tmp, line).unwrap();
        std::fs::rename(&tmp, &stats).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
}
