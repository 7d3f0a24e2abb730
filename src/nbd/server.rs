//! Accepts connections on a Unix socket or TCP address and serves each one. SIGINT,
//! SIGTERM and SIGHUP stop it cleanly (stop accepting, let connections go, flush,
//! checkpoint, remove the socket file); SIGUSR1 takes a snapshot, as it does for
//! `attach`; SIGUSR2 makes `--follow` look for a new version now; SIGALRM, SIGQUIT and
//! SIGPIPE are ignored.
//!
//! With `--follow`, a task looks for a newer version of the followed ref every poll
//! interval and offers each one as a new read-only export `REF@SEQ`; the empty name
//! and the name `REF` move to the newest, so a new connection gets it, while every
//! open connection keeps the export (and so the root) it opened. The volume behind an
//! export other than the head is opened by its first connection and closed with its
//! last (its index node cache and open files go with it), except the newest version's,
//! which stays open for the connections to come: a server following a ref for weeks
//! holds two disks open, not one per version it has seen.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

use super::handshake::{greet, options, Catalog, ExportInfo, Outcome, Peer, TlsState};
use super::Negotiated;
use super::{session, PayloadBudget};
use crate::error::{Error, Result};
use crate::format::root::RootRef;
use crate::volume::{OpenOptions, Volume};

/// Removes a socket left at `path` by an earlier run that was killed; refuses to
/// touch anything else there (a file, a folder, or a socket a server still answers on).
fn remove_stale_socket(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(Error::invalid(format!(
            "{} exists and is not a socket; not deleting it (choose another --socket path)",
            path.display()
        )));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::new(
            crate::error::ErrorKind::Busy,
            format!("a server is already listening on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
        .map_err(|e| Error::io(format!("removing the stale socket {}", path.display()), e))
}

/// Most connections in the transmission phase at once.
pub const MAX_CONNECTIONS: usize = 128;
/// Most connections still in their handshake at once: each is cut off at the
/// handshake deadline, and they do not count against [`MAX_CONNECTIONS`], so idle
/// connections cannot lock out a client that completes its handshake.
pub const MAX_HANDSHAKING: usize = 1024;

/// Where to listen.
#[derive(Clone, Debug)]
pub enum Listen {
    /// A Unix socket path.
    Unix(PathBuf),
    /// HOST:PORT.
    Tcp(String),
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: Listen,
    /// Export name.
    pub export: String,
    /// TLS, required of every client when set.
    pub tls: Option<super::Tls>,
    /// Serve without TLS on an address other than loopback.
    pub insecure_plaintext: bool,
    /// Who may use which export.
    pub allow: super::AccessList,
    /// Look for new versions of the followed ref this often (`--follow`).
    pub follow: Option<std::time::Duration>,
}

/// What a signal asks of the server.
enum SignalEvent {
    Stop,
    Snapshot,
    CheckVersions,
}

/// The signals the server answers; the ignored ones are held so they do nothing.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    _ignored: Vec<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Result<Self> {
        let sig = |k: SignalKind| signal(k).map_err(|e| Error::io("installing signal handlers", e));
        Ok(Self {
            int: sig(SignalKind::interrupt())?,
            term: sig(SignalKind::terminate())?,
            hup: sig(SignalKind::hangup())?,
            usr1: sig(SignalKind::user_defined1())?,
            usr2: sig(SignalKind::user_defined2())?,
            _ignored: vec![
                sig(SignalKind::alarm())?,
                sig(SignalKind::quit())?,
                sig(SignalKind::pipe())?,
            ],
        })
    }

    async fn next(&mut self) -> SignalEvent {
        tokio::select! {
            _ = self.int.recv() => SignalEvent::Stop,
            _ = self.term.recv() => SignalEvent::Stop,
            _ = self.hup.recv() => SignalEvent::Stop,
            _ = self.usr1.recv() => SignalEvent::Snapshot,
            _ = self.usr2.recv() => SignalEvent::CheckVersions,
        }
    }
}

/// SIGUSR1: flush, checkpoint and keep the result as a snapshot (off the async threads);
/// each snapshot taken becomes an export.
async fn snapshot(exports: &Arc<Exports>) {
    let ex = exports.clone();
    let r = tokio::task::spawn_blocking(move || {
        let taken = crate::volume::request::on_sigusr1(&ex.head);
        for root in taken.iter().flatten() {
            if let Err(e) = ex.add_snapshot(root) {
                tracing::warn!(error = %e, "offering the snapshot as an export");
            }
        }
        taken
    })
    .await;
    match r {
        Ok(taken) => {
            for t in taken {
                match t {
                    Ok(root) => {
                        tracing::info!(snapshot = %root.id, "snapshot taken");
                        eprintln!("mindcastle: snapshot {}", root.id);
                    }
                    Err(e) => tracing::warn!(error = %e, "snapshot failed"),
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "snapshot task failed"),
    }
}

/// What an export other than the head reads.
#[derive(Clone, Copy)]
enum Behind {
    /// A snapshot the head keeps.
    Snapshot(RootRef),
    /// A version of the followed ref.
    Version(RootRef),
}

/// What the server offers: the head (export 0), every kept snapshot and, with
/// `--follow`, every version seen, read-only, by name or id. Their volumes are opened
/// on their first connection and closed after their last.
pub struct Exports {
    head: Arc<Volume>,
    catalog: RwLock<Catalog>,
    /// What each export other than the head reads, by catalog index.
    roots: RwLock<Vec<Option<Behind>>>,
    /// Volumes open for exports other than the head, by catalog index: the
    /// connections reading them hold them.
    opened: Mutex<Opened>,
    /// Request buffers of every connection share this.
    payload: PayloadBudget,
}

impl Exports {
    fn new(head: Arc<Volume>, name: &str) -> Result<Self> {
        // A followed version: also by REF and REF@SEQ.
        let aliases = match head.followed() {
            Some((r, seq)) => vec![r.to_string(), format!("{r}@{seq}")],
            None => Vec::new(),
        };
        let info = ExportInfo {
            name: name.to_string(),
            aliases,
            description: format!("mindcastle disk {}", head.uuid()),
            size: head.size(),
            read_only: !head.writable(),
        };
        let ex = Self {
            catalog: RwLock::new(Catalog {
                exports: vec![info],
                default: 0,
            }),
            roots: RwLock::new(vec![None]),
            payload: PayloadBudget::new(crate::memory::Budget::process().request_bytes()),
            opened: Mutex::new(Opened::default()),
            head,
        };
        if ex.head.original().is_none() {
            for k in ex.head.kept()? {
                ex.add_snapshot(&k)?;
            }
        }
        Ok(ex)
    }

    /// Offers kept snapshot `root` as a read-only export named by its name (or id).
    fn add_snapshot(&self, root: &RootRef) -> Result<()> {
        let r = self.head.snapshot_root(root)?;
        let id = root.id.to_hex();
        let (name, aliases) = if r.name.is_empty() {
            (id.clone(), Vec::new())
        } else {
            (r.name.clone(), vec![id.clone()])
        };
        let info = ExportInfo {
            name,
            aliases,
            description: format!("snapshot {id} of mindcastle disk {}", self.head.uuid()),
            size: r.size,
            read_only: true,
        };
        self.offer(info, Behind::Snapshot(*root), None)
    }

    /// Adds an export; with `moves`, the alias and the empty name move to it.
    fn offer(&self, info: ExportInfo, behind: Behind, moves: Option<&str>) -> Result<()> {
        let mut cat = self
            .catalog
            .write()
            .map_err(|_| Error::internal("catalog lock"))?;
        let mut roots = self
            .roots
            .write()
            .map_err(|_| Error::internal("catalog lock"))?;
        if let Some(alias) = moves {
            for e in &mut cat.exports {
                e.aliases.retain(|a| a != alias);
            }
        }
        cat.exports.push(info);
        roots.push(Some(behind));
        if moves.is_some() {
            cat.default = cat.exports.len() - 1;
        }
        Ok(())
    }

    /// Offers version `v` of the followed ref as export `REF@SEQ`, and moves the empty
    /// name and `REF` to it (connections already open keep what they opened).
    fn add_version(&self, v: &crate::format::ref_version::RefVersion) -> Result<()> {
        let info = ExportInfo {
            name: format!("{}@{}", v.name, v.seq),
            aliases: vec![v.name.clone()],
            description: format!(
                "version {} of ref {} ({}), read-only",
                v.seq, v.name, v.root.id
            ),
            size: v.disk_size,
            read_only: true,
        };
        self.offer(info, Behind::Version(v.root), Some(&v.name))?;
        // The version before stays open only while connections read it.
        if let Ok(mut o) = self.opened.lock() {
            o.newest = None;
        }
        Ok(())
    }

    fn catalog(&self) -> Option<Catalog> {
        self.catalog.read().ok().map(|c| c.clone())
    }

    /// The volume behind export `i` (opening a snapshot on first use).
    fn volume(&self, i: usize) -> Result<Arc<Volume>> {
        let behind = match self.roots.read().ok().and_then(|r| r.get(i).copied()) {
            Some(Some(b)) => b,
            _ => return Ok(self.head.clone()),
        };
        let mut opened = self
            .opened
            .lock()
            .map_err(|_| Error::internal("exports lock"))?;
        opened.by_export.retain(|_, v| v.strong_count() > 0);
        if let Some(v) = opened.by_export.get(&i).and_then(Weak::upgrade) {
            return Ok(v);
        }
        // The head holds the disk lock; the snapshot stays readable while it is kept,
        // a version while the remote keeps it.
        let (snapshot, at_root) = match behind {
            Behind::Snapshot(r) => (Some(r.id), None),
            Behind::Version(r) => (None, Some(r)),
        };
        let v = Arc::new(Volume::open(
            self.head.swap_path(),
            &OpenOptions {
                read_only: true,
                snapshot,
                at_root,
                no_lock: true,
                ..Default::default()
            },
        )?);
        opened.by_export.insert(i, Arc::downgrade(&v));
        let newest = self.catalog.read().is_ok_and(|c| c.default == i);
        if newest && matches!(behind, Behind::Version(_)) {
            opened.newest = Some(v.clone());
        }
        Ok(v)
    }

    /// Exports other than the head whose volumes are open now.
    #[cfg(test)]
    fn open_volumes(&self) -> usize {
        self.opened.lock().map_or(0, |o| {
            o.by_export
                .values()
                .filter(|v| v.strong_count() > 0)
                .count()
        })
    }
}

/// The volumes of exports other than the head.
#[derive(Default)]
struct Opened {
    /// Each export's volume while some connection holds it.
    by_export: HashMap<usize, Weak<Volume>>,
    /// The newest version's, held here too once opened, until a newer one is offered.
    newest: Option<Arc<Volume>>,
}

/// The limits every connection is counted against.
#[derive(Clone)]
struct Limits {
    handshaking: Arc<Semaphore>,
    serving: Arc<Semaphore>,
    allow: Arc<super::AccessList>,
}

impl Limits {
    fn new(allow: super::AccessList) -> Self {
        Self {
            handshaking: Arc::new(Semaphore::new(MAX_HANDSHAKING)),
            serving: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            allow: Arc::new(allow),
        }
    }
}

async fn handle<S>(
    mut stream: S,
    exports: Arc<Exports>,
    tls: Option<super::Tls>,
    limits: Limits,
    peer: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(handshaking) = limits.handshaking.clone().try_acquire_owned() else {
        tracing::warn!(%peer, "too many connections in their handshake; refusing one");
        return;
    };
    let Some(catalog) = exports.catalog() else {
        return;
    };
    let deadline = tokio::time::Instant::now() + super::handshake_timeout();
    let late = || {
        tracing::info!(%peer, secs = super::handshake_timeout().as_secs(), "handshake not done by its deadline; closing");
    };
    let no_zeroes = match tokio::time::timeout_at(deadline, greet(&mut stream)).await {
        Ok(Ok(Some(z))) => z,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "handshake ended"),
        Err(_) => return late(),
    };
    let allow = limits.allow.clone();
    let anonymous = Peer {
        access: &allow,
        identity: None,
        addr: &peer,
    };
    let Some(tls) = tls else {
        let out = tokio::time::timeout_at(
            deadline,
            options(&mut stream, &catalog, no_zeroes, TlsState::Off, &anonymous),
        )
        .await;
        return match out {
            Ok(Ok(Outcome::Go(neg))) => {
                transmit(stream, neg, exports, limits, handshaking, peer).await
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "handshake ended"),
            Err(_) => late(),
        };
    };
    match tokio::time::timeout_at(
        deadline,
        options(
            &mut stream,
            &catalog,
            no_zeroes,
            TlsState::Required,
            &anonymous,
        ),
    )
    .await
    {
        Ok(Ok(Outcome::StartTls)) => {}
        Ok(Ok(_)) => return,
        Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "handshake ended"),
        Err(_) => return late(),
    }
    let after = AfterTls {
        catalog,
        no_zeroes,
        deadline,
        exports,
        limits,
        handshaking,
        peer: peer.clone(),
    };
    match tls {
        super::Tls::X509 { acceptor, .. } => {
            match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                Ok(Ok(secure)) => {
                    let identity = secure
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(|c| super::access::common_name(c));
                    after.run(secure, identity).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(peer = %after.peer, error = %e, "TLS handshake failed; closing")
                }
                Err(_) => late(),
            }
        }
        super::Tls::Psk(ctx, index) => {
            let secure = openssl::ssl::Ssl::new(&ctx)
                .and_then(|ssl| tokio_openssl::SslStream::new(ssl, stream));
            let mut secure = match secure {
                Ok(s) => s,
                Err(e) => return tracing::warn!(error = %e, "OpenSSL session"),
            };
            match tokio::time::timeout_at(deadline, std::pin::Pin::new(&mut secure).accept()).await
            {
                Ok(Ok(())) => {
                    let identity = secure.ssl().ex_data(index).cloned();
                    after.run(secure, identity).await;
                }
                Ok(Err(e)) => {
                    tracing::info!(peer = %after.peer, error = %e, "TLS (PSK) handshake failed; closing")
                }
                Err(_) => late(),
            }
        }
    }
}

/// The rest of a connection once its TLS handshake is done: the options again, inside
/// TLS, then the transmission phase.
struct AfterTls {
    catalog: Catalog,
    no_zeroes: bool,
    deadline: tokio::time::Instant,
    exports: Arc<Exports>,
    limits: Limits,
    handshaking: tokio::sync::OwnedSemaphorePermit,
    peer: String,
}

impl AfterTls {
    async fn run<T>(self, mut secure: T, identity: Option<String>)
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let allow = self.limits.allow.clone();
        let verified = Peer {
            access: &allow,
            identity,
            addr: &self.peer,
        };
        let out = tokio::time::timeout_at(
            self.deadline,
            options(
                &mut secure,
                &self.catalog,
                self.no_zeroes,
                TlsState::Established,
                &verified,
            ),
        )
        .await;
        drop(verified);
        let peer = self.peer;
        match out {
            Ok(Ok(Outcome::Go(neg))) => {
                transmit(
                    secure,
                    neg,
                    self.exports,
                    self.limits,
                    self.handshaking,
                    peer,
                )
                .await
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(%peer, error = %e, "handshake ended"),
            Err(_) => tracing::info!(%peer, "handshake not done by its deadline; closing"),
        }
    }
}

/// The transmission phase of a connection whose handshake chose an export.
async fn transmit<S>(
    stream: S,
    neg: Negotiated,
    exports: Arc<Exports>,
    limits: Limits,
    handshaking: tokio::sync::OwnedSemaphorePermit,
    peer: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    drop(handshaking);
    let Ok(_serving) = limits.serving.clone().try_acquire_owned() else {
        tracing::warn!(%peer, max = MAX_CONNECTIONS, "too many connections; closing one after its handshake");
        return;
    };
    tracing::debug!(?neg, %peer, "transmission phase");
    let ex = exports.clone();
    let export = neg.export;
    let vol = match tokio::task::spawn_blocking(move || ex.volume(export)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return tracing::warn!(error = %e, "opening the export"),
        Err(e) => return tracing::warn!(error = %e, "opening the export"),
    };
    let budget = exports.payload.clone();
    if let Err(e) = session::run(stream, vol, neg, None, budget).await {
        tracing::debug!(%peer, error = %e, "connection ended");
    }
}

/// Serves `vol` until SIGINT/SIGTERM; then flushes and checkpoints.
pub fn serve(vol: Volume, prefetch: Option<Vec<(u64, u64)>>, cfg: ServeConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
        )
        .max_blocking_threads(crate::nbd::BLOCKING_THREADS)
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    let vol = Arc::new(vol);
    // Stopped (and its fetches waited for) when `serve` returns.
    let _prefetch = prefetch.and_then(|ranges| vol.prefetch_in_background(ranges));
    let v2 = Arc::new(Exports::new(vol.clone(), &cfg.export)?);
    let check_now = Arc::new(tokio::sync::Notify::new());
    if let Some(every) = cfg.follow {
        let floor = vol.followed().map_or(0, |(_, s)| s);
        rt.spawn(follow_versions(v2.clone(), every, floor, check_now.clone()));
    }
    rt.block_on(async move {
        let mut signals = Signals::new()?;
        let limits = Limits::new(cfg.allow.clone());
        match &cfg.listen {
            Listen::Unix(path) => {
                remove_stale_socket(path)?;
                let l = UnixListener::bind(path).map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
                tracing::info!(socket = %path.display(), "serving");
                let scheme = if cfg.tls.is_some() { "nbds+unix" } else { "nbd+unix" };
                eprintln!("mindcastle: serving {scheme}:///{}?socket={}", cfg.export, path.display());
                loop {
                    tokio::select! {
                        a = l.accept() => match a {
                            Ok((s, _)) => {
                                widen_send_buffer(&s);
                                spawn_conn(s, &v2, &cfg.tls, &limits, "unix".into())
                            }
                            Err(e) => accept_failed(e).await,
                        },
                        ev = signals.next() => match ev {
                            SignalEvent::Stop => break,
                            SignalEvent::Snapshot => snapshot(&v2).await,
                            SignalEvent::CheckVersions => check_now.notify_one(),
                        },
                    }
                }
                let _ = std::fs::remove_file(path);
            }
            Listen::Tcp(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| Error::io(format!("binding {addr}"), e))?;
                let local = l.local_addr().map_err(|e| Error::io("local address", e))?;
                if !local.ip().is_loopback() && cfg.tls.is_none() {
                    if !cfg.insecure_plaintext {
                        return Err(Error::invalid(format!(
                            "refusing to serve {local} without TLS: anyone who can reach it could read and \
                             write this disk, in plaintext. Give --tls-certificates DIR or --tls-psk FILE, \
                             listen on 127.0.0.1, or say --insecure-plaintext. A self-signed certificate \
                             for HOST: mkdir DIR && openssl req -x509 -newkey ec -pkeyopt \
                             ec_paramgen_curve:P-256 -nodes -days 365 -subj /CN=HOST -addext \
                             subjectAltName=DNS:HOST -keyout DIR/server-key.pem -out DIR/server-cert.pem \
                             && cp DIR/server-cert.pem DIR/ca-cert.pem; clients copy ca-cert.pem into \
                             their certificate folder and connect to nbds://HOST:PORT/EXPORT?tls-certificates=FOLDER \
                             (a CA for many clients: docs/REFERENCE.md, \"Serving over a network\")"
                        )));
                    }
                    tracing::warn!(%local, "serving a non-loopback address in plaintext (--insecure-plaintext): anyone who can reach it can read and write this disk");
                }
                let scheme = if cfg.tls.is_some() { "nbds" } else { "nbd" };
                eprintln!("mindcastle: serving {scheme}://{local}/{}", cfg.export);
                loop {
                    tokio::select! {
                        a = l.accept() => match a {
                            Ok((s, addr)) => {
                                let _ = s.set_nodelay(true);
                                spawn_conn(s, &v2, &cfg.tls, &limits, addr.to_string())
                            }
                            Err(e) => accept_failed(e).await,
                        },
                        ev = signals.next() => match ev {
                            SignalEvent::Stop => break,
                            SignalEvent::Snapshot => snapshot(&v2).await,
                            SignalEvent::CheckVersions => check_now.notify_one(),
                        },
                    }
                }
            }
        }
        Ok::<(), Error>(())
    })?;
    // Connections still open are dropped with the runtime.
    drop(rt);
    if vol.writable() {
        vol.flush()?;
        vol.checkpoint()?;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `serve --follow`: every `every` (or at SIGUSR2), asks the followed ref's remote for
/// a version newer than the newest offered, checks it against the `.swap` file's trust
/// rules, and offers it. A failure is logged and the next poll tries again.
async fn follow_versions(
    exports: Arc<Exports>,
    every: std::time::Duration,
    mut floor: u64,
    check_now: Arc<tokio::sync::Notify>,
) {
    let path = exports.head.swap_path().to_path_buf();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = check_now.notified() => {}
        }
        let p = path.clone();
        let found =
            tokio::task::spawn_blocking(move || crate::volume::follow::newer_version(&p, floor))
                .await;
        match found {
            Ok(Ok(Some(v))) => match exports.add_version(&v) {
                Ok(()) => {
                    floor = v.seq;
                    tracing::info!(r#ref = %v.name, version = v.seq, root = %v.root.id, "following: offering a new version");
                    eprintln!(
                        "mindcastle: offering {}@{} (root {})",
                        v.name, v.seq, v.root.id
                    );
                }
                Err(e) => tracing::warn!(error = %e, "offering a new version"),
            },
            Ok(Ok(None)) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "following: looking for a new version failed"),
            Err(e) => tracing::warn!(error = %e, "following: the look-up task failed"),
        }
    }
}

/// Bytes of replies a connection's socket queues before a send waits for the client:
/// one 1 MiB reply (4 MiB measured no faster, 1.02x, and costs the kernel more per
/// connection a client does not read from).
const SEND_BUFFER: libc::c_int = 1 << 20;

/// Lets the kernel queue a whole large reply on a Unix socket, so sending one takes one
/// wake-up of the reader instead of one per 208 KiB (the default); capped by
/// `net.core.wmem_max`. 1 MiB reads at queue depth 8: 1.11x and 1.25x in two
/// `bench/ab.sh` runs of 4 rounds (4 MiB in the second); 256 KiB reads at depth 1:
/// 1.18x. Not for TCP, whose send buffer the kernel sizes by itself (setting it turns
/// that off). Best effort: the default works.
fn widen_send_buffer(s: &impl std::os::fd::AsRawFd) {
    let v = SEND_BUFFER;
    #[allow(unsafe_code)]
    // SAFETY: `s` is an open socket for the duration of the call, and the option value
    // is a c_int read from a live stack variable of the length passed.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::addr_of!(v).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not widen a socket's send buffer");
    }
}

/// An accept that failed (out of file descriptors, most often): logged, and the next
/// one waits a moment, so the loop does not spin while the cause lasts.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

fn spawn_conn<S>(
    s: S,
    exports: &Arc<Exports>,
    tls: &Option<super::Tls>,
    limits: &Limits,
    peer: String,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(handle(
        s,
        exports.clone(),
        tls.clone(),
        limits.clone(),
        peer,
    ));
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::format::ref_version::RefVersion;

    fn version(name: &str, seq: u64, root: RootRef, size: u64) -> RefVersion {
        RefVersion {
            seq,
            previous: [0; 32],
            root,
            disk_size: size,
            disk_uuid: [0; 16],
            time_ms: 0,
            name: name.to_string(),
            message: String::new(),
            signature: None,
        }
    }

    /// A snapshot's or an old version's volume closes with its last connection (a
    /// server following a ref for weeks would otherwise hold every version it served);
    /// the newest version's stays open until a newer one is offered; a connection
    /// already open keeps reading what it opened.
    #[test]
    fn volumes_behind_exports_close_with_their_last_connection() {
        let dir = tempfile::tempdir().unwrap();
        let head = Volume::create(&dir.path().join("d.swap"), 1 << 20).unwrap();
        head.write_at(0, &[1u8; 4096]).unwrap();
        let one = head.snapshot().unwrap();
        head.write_at(0, &[2u8; 4096]).unwrap();
        let two = head.snapshot().unwrap();
        head.write_at(0, &[3u8; 4096]).unwrap();
        let ex = Exports::new(Arc::new(head), "").unwrap();
        // Exports 1 and 2: the kept snapshots.
        let first = |v: &Volume| {
            let mut b = [0u8; 1];
            v.read_at(0, &mut b).unwrap();
            b[0]
        };
        let a = ex.volume(1).unwrap();
        let b = ex.volume(1).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "two connections, one volume");
        assert_eq!(first(&a), 1);
        assert_eq!(ex.open_volumes(), 1);
        drop((a, b));
        assert_eq!(
            ex.open_volumes(),
            0,
            "a snapshot's volume outlived its connections"
        );
        assert_eq!(
            first(&ex.volume(2).unwrap()),
            2,
            "reopened on the next connection"
        );
        assert_eq!(ex.open_volumes(), 0);

        // Versions: the newest stays open without connections, until the next comes.
        ex.add_version(&version("main", 1, one, 1 << 20)).unwrap();
        let v1 = ex.catalog().unwrap().default;
        let held = ex.volume(v1).unwrap();
        assert_eq!(first(&held), 1);
        let again = ex.volume(v1).unwrap();
        drop(again);
        assert_eq!(ex.open_volumes(), 1, "the newest version was closed");
        ex.add_version(&version("main", 2, two, 1 << 20)).unwrap();
        let v2 = ex.catalog().unwrap().default;
        assert_ne!(v1, v2);
        assert_eq!(first(&ex.volume(v2).unwrap()), 2);
        assert_eq!(ex.open_volumes(), 2, "version 1 is held by its connection");
        assert_eq!(first(&held), 1, "an open connection keeps its version");
        drop(held);
        assert_eq!(ex.open_volumes(), 1, "only the newest version stays open");
        assert_eq!(first(&ex.volume(v1).unwrap()), 1, "an old version reopens");
    }
}
