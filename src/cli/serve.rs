//! `mindcastle serve NAME.swap (--socket PATH | --listen HOST:PORT) [--read-only] [--export NAME]
//! [--tls-certificates DIR [--tls-verify-peer] | --tls-psk FILE] [--allow EXPORT=ID[:ro],…]
//! [--insecure-plaintext] [--follow [--poll DURATION]]`

use std::process::ExitCode;

use super::PathArg;
use crate::error::{Error, Result};
use crate::nbd::{serve, Listen, ServeConfig};
use crate::volume::{OpenOptions, Volume};

/// Arguments of `serve`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Listen on this Unix socket.
    #[arg(long, conflicts_with = "listen")]
    socket: Option<PathArg>,
    /// Listen on HOST:PORT (default 127.0.0.1:10809 when no --socket).
    #[arg(long)]
    listen: Option<String>,
    /// Serve read-only (writes get EPERM).
    #[arg(long)]
    read_only: bool,
    /// Export name clients ask for ("" always matches too).
    #[arg(long, default_value = "")]
    export: String,
    /// Warm the cache in the order this read trace (from `--trace`) read the disk,
    /// on a thread beside the server (the `.swap` needs `cache=`).
    #[arg(long)]
    prefetch: Option<PathArg>,
    /// Require TLS: DIR holds ca-cert.pem, server-cert.pem and server-key.pem (the
    /// layout of qemu-nbd and nbdkit); clients connect with nbds:// URIs.
    #[arg(long, value_name = "DIR")]
    tls_certificates: Option<PathArg>,
    /// With --tls-certificates: clients must present a certificate ca-cert.pem signed.
    #[arg(long, requires = "tls_certificates")]
    tls_verify_peer: bool,
    /// Require TLS with pre-shared keys: FILE has USERNAME:HEXKEY lines (psktool's
    /// format, as qemu, nbdkit and libnbd read it); the username is the identity.
    #[arg(long, value_name = "FILE", conflicts_with = "tls_certificates")]
    tls_psk: Option<PathArg>,
    /// Allow --listen on an address other than loopback without TLS (anyone who can
    /// reach it reads and writes the disk, in plaintext).
    #[arg(long, conflicts_with_all = ["tls_certificates", "tls_psk"])]
    insecure_plaintext: bool,
    /// Who may use which export: EXPORT=ID[:ro][,ID…], repeatable; EXPORT is an export's
    /// name (the head's --export name, a snapshot's name or id) or *; ID is a client
    /// certificate's common name (with --tls-verify-peer) or a PSK username (with
    /// --tls-psk); :ro gives read-only access.
    /// With any --allow, an export no rule names is refused to everyone.
    #[arg(long, value_name = "EXPORT=ID,…")]
    allow: Vec<String>,
    /// Offer each new version of the ref the `.swap` follows (`ref=`) as a new
    /// read-only export REF@SEQ, looking every --poll (and at SIGUSR2); the empty
    /// export name and REF select the newest, connections keep what they opened.
    /// Needs --read-only.
    #[arg(long, requires = "read_only")]
    follow: bool,
    /// With --follow: how often to look (e.g. 10s, 500ms, 2m, 1h; default 10s).
    #[arg(
        long,
        requires = "follow",
        value_name = "DURATION",
        default_value = "10s"
    )]
    poll: String,
    /// The disk.
    swap: PathArg,
}

/// Runs `serve`.
pub fn run(a: Args) -> Result<ExitCode> {
    let listen = match (a.socket, a.listen) {
        (Some(p), _) => Listen::Unix(p),
        (None, Some(l)) => Listen::Tcp(l),
        (None, None) => Listen::Tcp("127.0.0.1:10809".into()),
    };
    let allow = crate::nbd::AccessList::parse(&a.allow)?;
    let tls = match (&a.tls_certificates, &a.tls_psk) {
        (Some(dir), _) => Some(crate::nbd::Tls::load(dir, a.tls_verify_peer)?),
        (None, Some(file)) => Some(crate::nbd::Tls::load_psk(file)?),
        (None, None) => None,
    };
    if !allow.is_open()
        && !tls
            .as_ref()
            .is_some_and(crate::nbd::Tls::identifies_clients)
    {
        return Err(Error::invalid(
            "--allow names identities: it needs --tls-certificates with --tls-verify-peer \
             (certificate common names) or --tls-psk (usernames)",
        ));
    }
    let follow = if a.follow {
        let d = super::parse_duration(&a.poll, "--poll")?;
        if d.is_zero() {
            return Err(Error::invalid("--poll 0: give a positive interval"));
        }
        Some(d)
    } else {
        None
    };
    let vol = Volume::open(
        &a.swap,
        &OpenOptions {
            read_only: a.read_only,
            ..Default::default()
        },
    )?;
    if follow.is_some() && vol.followed().is_none() {
        return Err(Error::invalid(format!(
            "--follow: {} follows no ref (it needs ref=NAME beside fallback=, as `push --ref \
             NAME --swap-out FILE` writes it)",
            a.swap.display()
        )));
    }
    let prefetch = match &a.prefetch {
        Some(p) => {
            vol.check_prefetch_target()?;
            Some(crate::volume::prefetch::read_trace(p)?)
        }
        None => None,
    };
    serve(
        vol,
        prefetch,
        ServeConfig {
            listen,
            export: a.export,
            tls,
            insecure_plaintext: a.insecure_plaintext,
            allow,
            follow,
        },
    )
    .map_err(|e: Error| e.context("serve"))?;
    Ok(ExitCode::SUCCESS)
}
