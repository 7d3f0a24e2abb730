//! `mindcastle push NAME.swap DEST [--swap-out REMOTE.swap] [--json]` and
//! `mindcastle pull NAME.swap [--json]`.

use std::process::ExitCode;

use super::{progress, PathArg};
use crate::error::{Error, Result};
use crate::format::swapfile::SwapFile;
use crate::volume::refs::{Published, RefPush};
use crate::volume::signing::{public_key_text, Signer};
use crate::volume::sync::{Destination, Transfer};
use crate::volume::{read_swap, OpenOptions, Volume};

/// Arguments of `push`.
#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Also write a `.swap` for other hosts: a disk of its own (a new uuid, so its own
    /// data folder) with the same size, key and root, reading its chunks through
    /// `fallback=DEST` (refuses to overwrite).
    #[arg(long)]
    swap_out: Option<PathArg>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Then name the pushed state as the next version of this ref at DEST (like a git
    /// branch: main, stable, images/web). Refused when the ref moved since this disk
    /// last pushed it (non-fast-forward, exit 5) unless --force.
    #[arg(long = "ref", value_name = "NAME")]
    ref_name: Option<String>,
    /// With --ref: make the version even when it does not follow the one this disk last
    /// knew (the ref's history is kept; nothing at DEST is deleted).
    #[arg(long, requires = "ref_name")]
    force: bool,
    /// With --ref: a message kept with the version.
    #[arg(long, short = 'm', requires = "ref_name", default_value = "")]
    message: String,
    /// With --ref: sign the version with this key (made by `mindcastle keygen`).
    #[arg(long, requires = "ref_name", value_name = "KEY")]
    sign: Option<PathArg>,
    /// The disk.
    swap: PathArg,
    /// A folder, or s3://, gs://, az://, http(s):// (a server that takes PUT; refs need
    /// a create-only put, so not plain HTTP).
    dest: String,
}

/// Arguments of `update`.
#[derive(clap::Args, Debug)]
pub struct UpdateArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// A disk whose `.swap` has `ref=` (as `push --ref NAME --swap-out` writes it).
    swap: PathArg,
}

/// Arguments of `keygen`.
#[derive(clap::Args, Debug)]
pub struct KeygenArgs {
    /// Where the new key goes (mode 0600; never overwritten).
    file: PathArg,
}

/// Arguments of `prefetch`.
#[derive(clap::Args, Debug)]
pub struct PrefetchArgs {
    /// A read trace recorded with `--trace` (`offset length time` per line).
    #[arg(long)]
    trace: PathArg,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// The disk (its `.swap` needs `cache=`).
    swap: PathArg,
}

/// Arguments of `pull`.
#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Only what this kept snapshot needs (id, unique id prefix or name): its chunks,
    /// the head's index and the roots, not the head's data.
    #[arg(long, value_name = "SNAP")]
    snapshot: Option<String>,
    /// The disk.
    swap: PathArg,
}

fn report(t: &Transfer, what: &str, json: bool) -> Result<()> {
    report_with(t, None, what, json)
}

fn report_with(t: &Transfer, r: Option<&Published>, what: &str, json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(t).map_err(|e| Error::internal(e.to_string()))?;
        if let (Some(r), Some(obj)) = (r, v.as_object_mut()) {
            let rv = serde_json::to_value(r).map_err(|e| Error::internal(e.to_string()))?;
            obj.insert("ref".into(), rv);
        }
        let s = serde_json::to_string_pretty(&v).map_err(|e| Error::internal(e.to_string()))?;
        outln!("{s}");
    } else {
        outln!(
            "{what}: {} chunks reachable, {} copied ({} bytes), {} already there; root {}",
            t.chunks,
            t.copied,
            t.bytes,
            t.present,
            t.root.as_deref().unwrap_or("(none)")
        );
        if let Some(r) = r {
            let signed = match &r.signed_by {
                Some(k) => format!(", signed by {k}"),
                None => String::new(),
            };
            if r.created {
                outln!(
                    "ref {}: version {} (after {}){signed}",
                    r.name,
                    r.seq,
                    r.previous_seq
                );
            } else {
                outln!("ref {}: already at this root (version {})", r.name, r.seq);
            }
        }
    }
    Ok(())
}

/// Runs `push`.
pub fn push(a: PushArgs) -> Result<ExitCode> {
    // The key first: a bad key file fails before anything is copied.
    let signer = a.sign.as_deref().map(Signer::load).transpose()?;
    if let Some(name) = &a.ref_name {
        crate::format::ref_version::check_name(name)?;
    }
    // The disk before the destination: a disk that cannot open (another process holds
    // it) leaves no empty destination folder behind.
    let vol = Volume::open(&a.swap, &OpenOptions::default())
        .map_err(|e| held(&a.swap, a.ref_name.is_some(), e))?;
    let dest = Destination::open(&a.dest)?;
    if a.ref_name.is_some() && !dest.moves_refs() {
        return Err(Error::invalid(format!(
            "{}: a plain HTTP server cannot create an object only if it is absent, so a ref \
             cannot be moved there without risking a lost update; push refs to a folder \
             (then serve it over HTTP), s3://, gs:// or az://",
            a.dest
        )));
    }
    // A ref names chunks the push finds at DEST: no collection may run meanwhile.
    let _lock = match &a.ref_name {
        Some(_) => Some(dest.lock_for_push()?),
        None => None,
    };
    let pb = progress::bytes(0, "push");
    let t = vol.push(&dest, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    let published = match &a.ref_name {
        Some(name) => Some(vol.publish_ref(
            &dest,
            &RefPush {
                name,
                message: &a.message,
                signer: signer.as_ref(),
                force: a.force,
            },
        )?),
        None => None,
    };
    let source_uuid = vol.uuid().to_string();
    vol.close()?;
    if let Some(out) = &a.swap_out {
        let mut swap: SwapFile = read_swap(&a.swap)?;
        let fallback = dest.fallback_line()?;
        // A new uuid: the copy gets a data folder of its own even beside the source,
        // whose folder only the source may write (see `claim_folder`).
        swap.uuid = uuid::Uuid::new_v4().to_string();
        swap.fallbacks = vec![fallback];
        swap.swapdata = None;
        swap.cache = None;
        swap.cache_size = None;
        // A follower of the ref: it moves to each newer version when opened, taking
        // only versions of this disk (and signed by this key, when signed).
        swap.follow = published.as_ref().map(|p| p.name.clone());
        swap.ref_seq = published.as_ref().map_or(0, |p| p.seq);
        swap.origin = published.as_ref().map(|_| source_uuid.clone());
        swap.trust = match (&published, &signer) {
            (Some(_), Some(s)) => vec![s.public_key()],
            _ => Vec::new(),
        };
        crate::volume::create_swap(out, &swap)?;
    }
    report_with(&t, published.as_ref(), "push", a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// A push of a disk another process (`serve`, `attach`) holds is refused: it
/// checkpoints first, which only the holder can. The refusal says how to publish the
/// disk's state now without stopping it: a snapshot (taken by the holder), cloned
/// (read-only, hard links), and the clone pushed. Not for `--ref`: a clone is another
/// disk, whose versions would not follow this one's (its push would not fast-forward).
fn held(swap: &std::path::Path, to_ref: bool, e: Error) -> Error {
    if e.kind() != crate::error::ErrorKind::Busy {
        return e;
    }
    let p = swap.display();
    let how = if to_ref {
        "stop it (SIGINT), then push; a clone of it is another disk, whose versions of \
         the ref would not follow this one's"
            .to_string()
    } else {
        format!(
            "to publish its state without stopping it: mindcastle snapshot --name NAME {p} \
             && mindcastle clone {p}@NAME COPY.swap && mindcastle push COPY.swap DEST"
        )
    };
    Error::new(
        crate::error::ErrorKind::Busy,
        format!("{e}. A push checkpoints the disk first, which only that process can do; {how}"),
    )
}

/// Runs `pull`.
pub fn pull(a: PullArgs) -> Result<ExitCode> {
    let vol = Volume::open(&a.swap, &OpenOptions::default())?;
    let pb = progress::bytes(0, "pull");
    let t = vol.pull(a.snapshot.as_deref(), &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    vol.close()?;
    report(&t, "pull", a.json)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `prefetch`.
pub fn prefetch(a: PrefetchArgs) -> Result<ExitCode> {
    let ranges = crate::volume::prefetch::read_trace(&a.trace)?;
    let vol = super::inspect(&a.swap)?;
    vol.check_prefetch_target()?;
    let pb = progress::count(ranges.len() as u64, "prefetch");
    let p = vol.prefetch(&ranges, &|n| pb.set_position(n))?;
    pb.finish_and_clear();
    if a.json {
        let s = serde_json::to_string_pretty(&p).map_err(|e| Error::internal(e.to_string()))?;
        outln!("{s}");
    } else {
        outln!("prefetch: {} ranges, {} bytes read", p.ranges, p.bytes);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `update`.
pub fn update(a: UpdateArgs) -> Result<ExitCode> {
    let r = crate::volume::follow::update(&a.swap)?;
    if a.json {
        let s = serde_json::to_string_pretty(&r).map_err(|e| Error::internal(e.to_string()))?;
        outln!("{s}");
    } else {
        match r.outcome {
            crate::volume::follow::Followed::Moved => outln!(
                "{}: ref {} version {} -> {} (root {})",
                a.swap.display(),
                r.name,
                r.from_seq,
                r.newest_seq,
                r.root.as_deref().unwrap_or("(none)")
            ),
            _ => outln!(
                "{}: already at ref {} version {}",
                a.swap.display(),
                r.name,
                r.newest_seq
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `keygen`.
pub fn keygen(a: KeygenArgs) -> Result<ExitCode> {
    let s = Signer::generate(&a.file)?;
    let public = public_key_text(&s.public_key());
    let pub_path = {
        let mut p = a.file.clone().into_os_string();
        p.push(".pub");
        std::path::PathBuf::from(p)
    };
    std::fs::write(&pub_path, format!("{public}\n"))
        .map_err(|e| Error::io(format!("writing {}", pub_path.display()), e))?;
    outln!("signing key: {} (keep it secret)", a.file.display());
    outln!("public key:  {} (also in {})", public, pub_path.display());
    outln!("readers trust it with this line in their .swap: trust={public}");
    Ok(ExitCode::SUCCESS)
}
