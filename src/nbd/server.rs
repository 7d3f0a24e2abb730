//! Accepts connections on a Unix socket or TCP address and serves each one; on SIGINT or
//! SIGTERM stops accepting, lets connections go, then flushes and checkpoints.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

use super::handshake::{negotiate, ExportInfo};
use super::session;
use crate::error::{Error, Result};
use crate::volume::Volume;

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 128;

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
}

async fn handle<S>(mut stream: S, vol: Arc<Volume>, info: Arc<ExportInfo>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    match negotiate(&mut stream, &info).await {
        Ok(Some(neg)) => {
            tracing::debug!(?neg, "transmission phase");
            if let Err(e) = session::run(stream, vol, neg, None).await {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::debug!(error = %e, "handshake ended"),
    }
}

/// Serves `vol` until SIGINT/SIGTERM; then flushes and checkpoints.
pub fn serve(vol: Volume, cfg: ServeConfig) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2),
        )
        .build()
        .map_err(|e| Error::io("starting the runtime", e))?;
    let vol = Arc::new(vol);
    let info = Arc::new(ExportInfo {
        name: cfg.export.clone(),
        description: format!("mindcastle disk {}", vol.uuid()),
        size: vol.size(),
        read_only: !vol.writable(),
    });
    let v2 = vol.clone();
    rt.block_on(async move {
        let mut int = signal(SignalKind::interrupt()).map_err(|e| Error::io("signals", e))?;
        let mut term = signal(SignalKind::terminate()).map_err(|e| Error::io("signals", e))?;
        let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        match &cfg.listen {
            Listen::Unix(path) => {
                if path.exists() {
                    // A socket left by an earlier run that was killed.
                    let _ = std::fs::remove_file(path);
                }
                let l = UnixListener::bind(path).map_err(|e| Error::io(format!("binding {}", path.display()), e))?;
                tracing::info!(socket = %path.display(), "serving");
                eprintln!("mindcastle: serving nbd+unix:///{}?socket={}", cfg.export, path.display());
                loop {
                    tokio::select! {
                        a = l.accept() => match a {
                            Ok((s, _)) => spawn_conn(s, &v2, &info, &limit),
                            Err(e) => tracing::warn!(error = %e, "accept failed"),
                        },
                        _ = int.recv() => break,
                        _ = term.recv() => break,
                    }
                }
                let _ = std::fs::remove_file(path);
            }
            Listen::Tcp(addr) => {
                let l = TcpListener::bind(addr).await.map_err(|e| Error::io(format!("binding {addr}"), e))?;
                let local = l.local_addr().map_err(|e| Error::io("local address", e))?;
                if !local.ip().is_loopback() {
                    tracing::warn!(%local, "listening on a non-loopback address: anyone who can reach it can read and write this disk");
                }
                eprintln!("mindcastle: serving nbd://{local}/{}", cfg.export);
                loop {
                    tokio::select! {
                        a = l.accept() => match a {
                            Ok((s, _)) => {
                                let _ = s.set_nodelay(true);
                                spawn_conn(s, &v2, &info, &limit)
                            }
                            Err(e) => tracing::warn!(error = %e, "accept failed"),
                        },
                        _ = int.recv() => break,
                        _ = term.recv() => break,
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

fn spawn_conn<S>(s: S, vol: &Arc<Volume>, info: &Arc<ExportInfo>, limit: &Arc<Semaphore>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        tracing::warn!("too many connections; refusing one");
        return;
    };
    let (vol, info) = (vol.clone(), info.clone());
    tokio::spawn(async move {
        handle(s, vol, info).await;
        drop(permit);
    });
}
