//! The original never called fsync, so an acknowledged FLUSH could be lost on power
//! loss. This test traces the system calls of a real run: a flush must fdatasync the
//! write-ahead log before it returns, and a checkpoint must fsync every new chunk, the
//! data folder and the `.swap` file's folder before the sealed log segment it covers is
//! deleted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::server::have;

#[test]
fn flush_and_checkpoint_reach_the_disk() {
    if !have("strace") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let swap = common::new_disk(dir.path(), 16 << 20);
    let img = dir.path().join("img");
    std::fs::write(&img, common::data(8, 3 << 20)).unwrap();
    let trace = dir.path().join("trace");
    let st = Command::new("strace")
        .args([
            "-f",
            "-y",
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,ftruncate,unlink,unlinkat",
            "-o",
        ])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_mindcastle"))
        .args(["import", swap.to_str().unwrap(), img.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let t = std::fs::read_to_string(&trace).unwrap();
    let lines: Vec<&str> = t.lines().collect();
    let pos = |pred: &dyn Fn(&str) -> bool| lines.iter().position(|l| pred(l));
    // The flush at the end of the import: fdatasync of the log.
    let wal_sync =
        pos(&|l| l.contains("fdatasync(") && l.contains("/wal>")).expect("fdatasync of the wal");
    // Chunks fsynced (fdatasync on .lvl files), then the folder, then the .swap rename.
    let chunk_sync =
        pos(&|l| l.contains("fdatasync(") && l.contains(".lvl>")).expect("chunk fdatasync");
    let swap_rename =
        pos(&|l| l.starts_with(char::is_numeric) && l.contains("rename") && l.contains("t.swap\""))
            .expect("atomic rename of the .swap file");
    let dir_sync_after_rename = lines[swap_rename..]
        .iter()
        .any(|l| l.contains("fsync(") && !l.contains(".lvl>") && !l.contains(".swap"));
    // Freezing the memtable seals its log segment: synced, then renamed to wal.old.
    let rotate = pos(&|l| l.contains("rename") && l.contains("wal.old\""))
        .expect("log segment sealed as wal.old");
    let old_dropped = lines[swap_rename..]
        .iter()
        .any(|l| l.contains("unlink") && l.contains("wal.old\""));
    assert!(
        rotate < swap_rename,
        "the segment is sealed before the root is named"
    );
    assert!(
        wal_sync < swap_rename,
        "flush must sync the log before the checkpoint"
    );
    assert!(
        chunk_sync < swap_rename,
        "chunks must be durable before the root is named"
    );
    assert!(
        dir_sync_after_rename,
        "the folder must be fsynced after the rename"
    );
    assert!(
        old_dropped,
        "the sealed segment goes only after the root that covers it is named"
    );
}
