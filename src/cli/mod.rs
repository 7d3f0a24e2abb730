//! The `mindcastle` command line: clap definitions, one file per subcommand.

/// `println!` for reports: a reader that went away ends the output quietly; any other
/// write error is returned (exit 6).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::output::print(&format!("{}\n", format_args!($($arg)*)))?
    };
}

mod attach;
mod convert;
mod create;
mod fsck;
mod history;
mod info;
mod output;
mod progress;
mod resize;
mod serve;
mod size_args;
mod sync;
mod transfer;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::{Error, Result};

/// Git for storage: disks in immutable, encrypted, content-addressed chunks.
#[derive(Parser, Debug)]
#[command(name = "mindcastle", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Memory budget of this process (e.g. 64M, 1G; default 128M, or
    /// MINDCASTLE_MEMORY): memtables, index node cache and NBD request buffers are
    /// sized from it.
    #[arg(long, global = true, value_name = "SIZE")]
    memory: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a new disk: NAME.swap plus its swapdata-UUID/ folder.
    Create(create::Args),
    /// Print a disk's uuid, size, root, levels and space figures.
    Info(info::Args),
    /// Grow a disk, or with --shrink make it smaller (the blocks past the new end are
    /// dropped); the disk must not be in use.
    Resize(resize::Args),
    /// Write a raw image (or - for stdin) into a disk.
    Import(transfer::ImportArgs),
    /// Write a whole disk (or a kept snapshot) out as a raw image (or - for stdout), or
    /// only what changed since a snapshot.
    Export(transfer::ExportArgs),
    /// Write a delta stream (`export --changed-since … --format stream`) into a disk or
    /// an image.
    Apply(transfer::ApplyArgs),
    /// Verify every chunk, node and record reachable from the root and kept snapshots.
    Fsck(fsck::Args),
    /// Attach the disk as a block device and run the statechange script (the default
    /// command: `mindcastle NAME.swap SCRIPT`).
    Attach(attach::Args),
    /// Publish: copy every chunk the root and kept snapshots reach to a folder or URL.
    Push(sync::PushArgs),
    /// Fetch every reachable chunk from the fallbacks into the local data folder.
    Pull(sync::PullArgs),
    /// Move a disk that follows a ref (`ref=` in its .swap) to the ref's newest version
    /// (fast-forward only: refused when the disk has writes of its own).
    Update(sync::UpdateArgs),
    /// Make an Ed25519 key for signing ref versions (`push --ref --sign KEY`).
    Keygen(sync::KeygenArgs),
    /// Warm the cache in the order a recorded --trace read the disk.
    Prefetch(sync::PrefetchArgs),
    /// Serve the disk over NBD on a Unix socket or TCP until SIGINT/SIGTERM.
    Serve(serve::Args),
    /// Flush and keep the current state as a snapshot (asks a running attach or serve
    /// to do it when one holds the disk).
    Snapshot(history::SnapshotArgs),
    /// List the kept snapshots, newest first; with --ref, a remote ref's versions.
    Log(history::LogArgs),
    /// The byte ranges that differ between two snapshots (or a snapshot and the head).
    Diff(history::DiffArgs),
    /// A new writable disk starting from a disk's state or one of its snapshots.
    Clone(history::CloneArgs),
    /// Go back to a snapshot (the state left is kept as a snapshot first).
    Reset(history::ResetArgs),
    /// Stop keeping snapshots (their chunks are deleted when nothing else needs them).
    Forget(history::ForgetArgs),
    /// Delete the data folder's chunks that no kept state reaches; of a remote (a folder
    /// or URL with refs): the chunks and old versions no kept ref version needs.
    Gc(history::GcArgs),
    /// Copy a disk written by the original C Mindcastle into a new disk in this
    /// version's format (the old disk is only read).
    Convert(convert::Args),
    /// (Internal) the reconnect timeout of a ublk device: started by `attach`.
    #[command(hide = true)]
    UblkWatchdog(attach::WatchdogArgs),
}

pub use crate::format::size::parse_size;

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MINDCASTLE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colours only on a terminal (and never with NO_COLOR), so logs in files and pipes
    // stay plain text that grep can match.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Runs the command line; errors print one line and map to an exit code by kind.
pub fn run() -> ExitCode {
    init_logging();
    let cli = Cli::parse_from(with_default_command(std::env::args_os().collect()));
    match crate::memory::Budget::from_arg_or_env(cli.memory.as_deref()) {
        Ok(b) => {
            b.set_for_process();
            crate::memory::configure_allocator();
        }
        Err(e) => return report(&e),
    }
    if let Err(e) = crate::nbd::configure_payload_timeout()
        .and_then(|()| crate::lsm::engine::configure_memtable_entries())
    {
        return report(&e);
    }
    let r: Result<ExitCode> = match cli.command {
        Command::Create(a) => create::run(a),
        Command::Info(a) => info::run(a),
        Command::Resize(a) => resize::run(a),
        Command::Import(a) => transfer::import(a),
        Command::Export(a) => transfer::export(a),
        Command::Apply(a) => transfer::apply(a),
        Command::Fsck(a) => fsck::run(a),
        Command::Serve(a) => serve::run(a),
        Command::Push(a) => sync::push(a),
        Command::Pull(a) => sync::pull(a),
        Command::Update(a) => sync::update(a),
        Command::Keygen(a) => sync::keygen(a),
        Command::Prefetch(a) => sync::prefetch(a),
        Command::Attach(a) => attach::run(a),
        Command::Convert(a) => convert::run(a),
        Command::Snapshot(a) => history::snapshot(a),
        Command::Log(a) => history::log(a),
        Command::Diff(a) => history::diff(a),
        Command::Clone(a) => history::clone(a),
        Command::Reset(a) => history::reset(a),
        Command::Forget(a) => history::forget(a),
        Command::Gc(a) => history::gc(a),
        Command::UblkWatchdog(a) => attach::watchdog(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

/// The original's form `mindcastle [-s GiB] [-t FILE] NAME.swap SCRIPT` means `attach`:
/// taken when the first argument is a flag of attach, a name ending in `.swap`, or an
/// existing file. Anything else goes to clap, so a mistyped subcommand gets its
/// "did you mean" instead of creating a disk named after the typo.
fn with_default_command(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let Some(first) = args.get(1) else {
        return args;
    };
    let text = first.to_string_lossy();
    let is_command = Cli::command()
        .get_subcommands()
        .any(|c| c.get_name() == text || c.get_all_aliases().any(|a| a == text))
        || text == "help";
    let attach_flag =
        text.starts_with('-') && !matches!(text.as_ref(), "-h" | "--help" | "-V" | "--version");
    let disk = text.ends_with(".swap") || std::path::Path::new(first).is_file();
    if !is_command && (attach_flag || disk) {
        args.insert(1, "attach".into());
    }
    args
}

fn report(e: &Error) -> ExitCode {
    eprintln!("mindcastle: {e}");
    ExitCode::from(e.kind().exit_code())
}

/// Opens a disk to look at it: read-only and without the lock, so it works beside a
/// running writer (showing its last checkpoint plus its logged writes).
fn inspect(path: &std::path::Path) -> Result<crate::volume::Volume> {
    crate::volume::Volume::open(
        path,
        &crate::volume::OpenOptions {
            read_only: true,
            no_lock: true,
            ..Default::default()
        },
    )
}

/// `10s`, `500ms`, `2m`, `1h`, or plain seconds.
pub(crate) fn parse_duration(s: &str, flag: &str) -> Result<std::time::Duration> {
    let bad = || {
        Error::invalid(format!(
            "{flag} {s}: not a duration (like 10s, 500ms, 2m, 1h)"
        ))
    };
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| bad())?;
    let d = match unit {
        "ms" => std::time::Duration::from_millis(n),
        "s" => std::time::Duration::from_secs(n),
        "m" => std::time::Duration::from_secs(n.saturating_mul(60)),
        "h" => std::time::Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(bad()),
    };
    Ok(d)
}

/// A path argument.
pub type PathArg = PathBuf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100G"), Ok(100 << 30));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("4097").is_err());
        assert!(parse_size("x").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
