//! A power cut loses nothing a FLUSH acknowledged. In a qemu guest (Debian's kernel,
//! software emulation), mindcastle keeps its disk on an ext4 filesystem on a virtio
//! disk and is attached through the default front end (ublk on that kernel); a shell
//! loop writes 256 KiB pieces with `dd conv=fsync` (each fsync reaches mindcastle as a
//! FLUSH) and prints an ack on the serial console after each returns. The host then
//! kills qemu outright, so the guest's page cache and every write its kernel had not
//! flushed to the virtual disk vanish,
//! at a moment that varies: 0 to 300 acks after the first log rotation shows on the
//! console (the first 64 MiB memtable frozen), so a background checkpoint is under way or
//! done. (A fixed count of acks was flaky: the first rotation lands anywhere from about
//! 256 to 300 acks in, with the old code and the new alike.) A second
//! guest mounts the same disk: mindcastle's fsck must be clean, every acknowledged
//! piece must read back exactly, and the disk must attach again.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::vm;
use sha2::{Digest, Sha256};

const PIECE: usize = 256 << 10;

fn acks(console: &str) -> Vec<usize> {
    console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("MCVM ack "))
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

#[test]
fn acknowledged_writes_survive_a_power_cut() {
    if !vm::capable("the power-cut VM test") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let pattern = tmp.path().join("pattern");
    // Incompressible, so 256 pieces fill the 64 MiB memtable.
    let bytes: Vec<u8> = common::noise(4242, 32 * PIECE);
    std::fs::write(&pattern, &bytes).unwrap();
    let initrd = tmp.path().join("initrd.gz");
    vm::initrd(&initrd, "power-cut.sh", Some(&pattern));
    let img = tmp.path().join("data.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(768 << 20)
        .unwrap();
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(&img)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4 on the data image");

    // Guest 1 writes until the power goes.
    // MINDCASTLE_POWER_CUT_AT=N replays a run that cut N acks after the first rotation.
    let target = std::env::var("MINDCASTLE_POWER_CUT_AT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos() as usize
                % 301
        });
    eprintln!(
        "cutting the power {target} acks after the first log rotation \
         (MINDCASTLE_POWER_CUT_AT={target} replays)"
    );
    let acks_after_rotation = |c: &str| -> Option<usize> {
        let at = c.find("sealed the log segment")?;
        Some(acks(c.get(at..).unwrap_or_default()).len())
    };
    let mut g = vm::Guest::boot(
        &initrd,
        &tmp.path().join("write.log"),
        "mcmode=write",
        Some(&img),
    );
    let reached = g.wait_until(Duration::from_secs(900), |c| {
        acks_after_rotation(c).is_some_and(|n| n >= target) || c.contains("MCVM-RESULT fail")
    });
    let console = g.power_cut();
    assert!(
        reached && !console.contains("MCVM-RESULT fail"),
        "the writer did not get {target} acks:\n{console}"
    );
    let acked = acks(&console);
    let last = *acked.last().unwrap();
    assert_eq!(acked, (0..=last).collect::<Vec<_>>(), "acks out of order");
    let sealed = console.matches("sealed the log segment").count();
    let committed = console
        .matches("DEBUG mindcastle::lsm::engine: checkpoint")
        .count();
    eprintln!(
        "power cut after {} acknowledged pieces, {sealed} log rotations, {committed} checkpoints done",
        acked.len()
    );
    assert!(
        sealed >= 1,
        "no memtable was frozen before the cut:\n{console}"
    );

    // Guest 2 checks what survived.
    let mut g = vm::Guest::boot(
        &initrd,
        &tmp.path().join("check.log"),
        &format!("mcmode=check mcmax={last}"),
        Some(&img),
    );
    g.wait_until(Duration::from_secs(900), |c| c.contains("MCVM-RESULT"));
    let console = g.power_cut();
    assert!(
        console.contains("MCVM fsck clean"),
        "fsck after the power cut:\n{console}"
    );
    let mut seen = 0;
    for line in console.lines() {
        let Some(rest) = line.trim().strip_prefix("MCVM piece ") else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let i: usize = f.next().unwrap().parse().unwrap();
        let got = f.next().unwrap_or("");
        let src = (i % 32) * PIECE;
        let want = hex::encode(Sha256::digest(&bytes[src..src + PIECE]));
        assert_eq!(
            got, want,
            "acknowledged piece {i} differs after the power cut"
        );
        seen += 1;
    }
    assert_eq!(seen, last + 1, "not every piece was checked:\n{console}");
    assert!(
        console.contains("MCVM-RESULT pass"),
        "reattach after the power cut:\n{console}"
    );
}
