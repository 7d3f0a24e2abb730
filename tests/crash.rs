//! Crash test: a child process writes (with overlapping sub-block writes), flushes, says
//! "acked N" after each flush, and is killed with SIGKILL at a random moment, often in
//! the middle of a checkpoint. After reopening, every byte acknowledged by a flush must
//! be there; blocks touched only after the last acknowledgement may hold either state.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use mindcastle::Volume;

const SIZE: u64 = 4 << 20;
const OPS_PER_BATCH: u64 = 6;

/// The `i`th write of the sequence: (offset, bytes).
fn write_op(i: u64) -> (u64, Vec<u8>) {
    let r = i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 20;
    let blocks = SIZE / 4096;
    // Every fifth write is large (64-263 blocks): its records go straight into a
    // chunk and the log names it.
    let (len, off) = if i.is_multiple_of(3) {
        (1 + r % 3000, 8192 + (r % 200) * 37)
    } else if i % 5 == 1 {
        (4096 * (64 + r % 200), (r % (blocks - 264)) * 4096)
    } else {
        (4096 * (1 + r % 24), (r % (blocks - 32)) * 4096)
    };
    (off, common::data(i, len as usize))
}

fn apply(model: &mut [u8], i: u64) {
    let (off, d) = write_op(i);
    model[off as usize..off as usize + d.len()].copy_from_slice(&d);
}

#[test]
#[ignore = "the child process of acknowledged_writes_survive_sigkill, which runs it"]
fn crash_child() {
    let path = std::env::var("MINDCASTLE_CRASH_DISK")
        .expect("crash_child runs as the child of acknowledged_writes_survive_sigkill");
    let vol = Volume::open(path.as_ref(), &common::small()).unwrap();
    let mut i = 0u64;
    for batch in 0.. {
        for _ in 0..OPS_PER_BATCH {
            let (off, d) = write_op(i);
            vol.write_at(off, &d).unwrap();
            i += 1;
        }
        vol.flush().unwrap();
        println!("acked {batch}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let iterations: u64 = std::env::var("CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    for it in 0..iterations {
        let path = dir.path().join(format!("c{it}.swap"));
        Volume::create(&path, SIZE).unwrap().close().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MINDCASTLE_CRASH_DISK", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut last: Option<u64> = None;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("acked ") {
                    last = n.trim().parse().ok();
                }
            }
            last
        });
        // Kill after a pseudo-random delay between 50 and 800 ms.
        let delay = 50 + (it * 7919 + 13) % 750;
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let last = reader.join().unwrap();
        let acked_ops = last.map_or(0, |b| (b + 1) * OPS_PER_BATCH);

        let vol = Volume::open(&path, &common::small()).unwrap();
        let mut got = vec![0u8; SIZE as usize];
        vol.read_at(0, &mut got).unwrap();
        let mut model = vec![0u8; SIZE as usize];
        for i in 0..acked_ops {
            apply(&mut model, i);
        }
        // Allowed states of each block touched by the unacknowledged batch.
        let mut states: Vec<Vec<u8>> = vec![model.clone()];
        let mut touched = HashSet::new();
        let mut m = model.clone();
        for i in acked_ops..acked_ops + OPS_PER_BATCH {
            let (off, d) = write_op(i);
            for b in off / 4096..=(off + d.len() as u64 - 1) / 4096 {
                touched.insert(b);
            }
            apply(&mut m, i);
            states.push(m.clone());
        }
        for b in 0..(SIZE / 4096) as usize {
            let r = b * 4096..(b + 1) * 4096;
            if touched.contains(&(b as u64)) {
                assert!(
                    states.iter().any(|s| s[r.clone()] == got[r.clone()]),
                    "iteration {it}: block {b} matches no allowed state ({acked_ops} ops acked)"
                );
            } else {
                assert!(
                    model[r.clone()] == got[r],
                    "iteration {it}: acknowledged block {b} lost ({acked_ops} ops acked)"
                );
            }
        }
        let report = vol.fsck(&|_| {}).unwrap();
        assert!(
            report.problems.is_empty(),
            "iteration {it}: {:?}",
            report.problems
        );
        eprintln!(
            "iteration {it}: killed after {delay} ms, {acked_ops} ops acknowledged, all present"
        );
    }
}
