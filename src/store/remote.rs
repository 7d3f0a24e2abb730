//! Chunks behind a URL, through the `object_store` crate: `http(s)://` (GET with Range;
//! PUT for WebDAV servers), `s3://bucket/prefix`, `gs://bucket/prefix`,
//! `az://container/prefix`, `file:///path`. Credentials and endpoints come from each
//! service's usual environment variables (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`,
//! `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_NAME`, …); an `http://` S3 endpoint
//! is allowed. Retries with backoff and timeouts are the crate's (each request gives up
//! after `MINDCASTLE_REMOTE_TIMEOUT`, default 30 s).
//!
//! Uploads are create-only where the service has a conditional create (S3's
//! `If-None-Match: *`, GCS's generation match, Azure's `If-None-Match`): an object that
//! exists is never rewritten, so a reader fetching it meanwhile sees whole bytes; since
//! a name is its content's hash, "already exists" is success. Plain HTTP (WebDAV) has
//! no such mode and gets a plain PUT.
//!
//! The trait is synchronous and callers may sit on a tokio thread of their own (the NBD
//! server's blocking pool), so requests run on this store's own runtime and the caller
//! waits on a plain channel, never `block_on`.

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

use super::refs::Listed;
use super::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;

/// A store at a URL.
pub struct RemoteStore {
    rt: tokio::runtime::Runtime,
    store: Arc<dyn ObjectStore>,
    prefix: ObjPath,
    url: String,
    /// Requests made and body bytes fetched, logged when the store closes.
    requests: std::sync::atomic::AtomicU64,
    fetched: std::sync::atomic::AtomicU64,
    /// Set once the service said it has no create-only put.
    no_create: std::sync::atomic::AtomicBool,
    /// The data folder whose `fetched.json` gets this run's counts at close.
    fetch_log: Option<std::path::PathBuf>,
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let (n, b) = (self.requests.load(Relaxed), self.fetched.load(Relaxed));
        if n > 0 {
            tracing::info!(url = %self.url, requests = n, bytes = b, "remote store: requests made, bytes fetched");
            if let Some(dir) = &self.fetch_log {
                if let Err(e) = super::fetch_log::add(dir, &self.url, n, b) {
                    tracing::warn!(error = %e, "fetch counters not recorded");
                }
            }
        }
    }
}

/// An error of the store at `url`, named by it (a fallback list does not name its
/// sources again), in one line: a server's HTML or XML error page is left out.
fn remote_err(url: &str, what: &str, e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => {
            Error::new(ErrorKind::NotFound, format!("{url}: {what}: not found"))
        }
        e => Error::new(
            ErrorKind::Unavailable,
            format!("{url}: {what}: {}", brief(&e.to_string())),
        ),
    }
}

/// The first line of `msg`, without a response body it quotes (`: <html>…`,
/// `: <?xml…`), at most 400 characters.
fn brief(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or("");
    let line = line.find(": <").map_or(line, |at| &line[..at]);
    match line.char_indices().nth(400) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line.to_string(),
    }
}

impl RemoteStore {
    /// Opens the store at `url` (nothing is fetched yet).
    pub fn open(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::invalid(format!("'{url}' is not a URL: {e}")))?;
        let mut opts: Vec<(String, String)> = std::env::vars().collect();
        let timeout = std::env::var("MINDCASTLE_REMOTE_TIMEOUT").unwrap_or_else(|_| "30s".into());
        opts.push(("timeout".into(), timeout));
        if matches!(parsed.scheme(), "http" | "https") {
            opts.push(("allow_http".into(), "true".into()));
        }
        let endpoint_http = std::env::var("AWS_ENDPOINT_URL")
            .or_else(|_| std::env::var("AWS_ENDPOINT"))
            .is_ok_and(|e| e.starts_with("http://"));
        if parsed.scheme() == "s3" && endpoint_http {
            opts.push(("aws_allow_http".into(), "true".into()));
        }
        // An emulator (or any server) at an http:// base URL for gs://.
        if parsed.scheme() == "gs"
            && std::env::var("GOOGLE_BASE_URL").is_ok_and(|u| u.starts_with("http://"))
        {
            opts.push(("google_allow_http".into(), "true".into()));
        }
        let (store, prefix) = object_store::parse_url_opts(&parsed, opts)
            .map_err(|e| Error::invalid(format!("{url}: {e}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mindcastle-remote")
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the remote store's runtime", e))?;
        Ok(Self {
            rt,
            store: Arc::from(store),
            prefix,
            url: url.trim_end_matches('/').to_string(),
            requests: Default::default(),
            fetched: Default::default(),
            no_create: Default::default(),
            fetch_log: None,
        })
    }

    /// Adds this store's counts to `dir`'s `fetched.json` when it closes.
    pub fn with_fetch_log(mut self, dir: &std::path::Path) -> Self {
        self.fetch_log = Some(dir.to_path_buf());
        self
    }

    fn path_of(&self, id: &ChunkId) -> ObjPath {
        self.prefix.clone().join(id.file_name())
    }

    /// Runs `fut` on this store's runtime and waits for it on this thread.
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> Result<T> {
        self.requests
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::internal("a remote request ended without an answer"))
    }

    fn get_whole(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let (store, path) = (self.store.clone(), self.path_of(id));
        let r = self.run(async move {
            match store.get(&path).await {
                Ok(g) => g.bytes().await,
                Err(e) => Err(e),
            }
        })?;
        let b = r.map_err(|e| remote_err(&self.url, &format!("chunk {id}"), e))?;
        self.fetched
            .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(b.to_vec())
    }
}

impl ChunkStore for RemoteStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.get_whole(id)
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let (store, path) = (self.store.clone(), self.path_of(id));
        let range: Range<u64> = offset..offset + len as u64;
        let r = self.run(async move { store.get_range(&path, range).await })?;
        match r {
            Ok(b) => {
                self.fetched
                    .fetch_add(b.len() as u64, std::sync::atomic::Ordering::Relaxed);
                Ok(b.to_vec())
            }
            Err(e @ object_store::Error::NotFound { .. }) => {
                Err(remote_err(&self.url, &format!("chunk {id}"), e))
            }
            Err(e) => {
                // A server that ignores Range (200 with the whole file) or answers a
                // short range: take the whole chunk and keep the part asked for.
                tracing::debug!(chunk = %id, error = %e, "range read failed; fetching the whole chunk");
                let whole = self.get_whole(id)?;
                usize::try_from(offset)
                    .ok()
                    .and_then(|o| whole.get(o..o.checked_add(len)?))
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| {
                        Error::corrupt(format!("{}: chunk {id} is shorter than asked", self.url))
                    })
            }
        }
    }

    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        self.put_hashed(ChunkId::of(bytes), bytes)
    }

    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        debug_assert_eq!(id, ChunkId::of(bytes), "a chunk offered under another name");
        let (store, path) = (self.store.clone(), self.path_of(&id));
        let payload = PutPayload::from(bytes.to_vec());
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let mode = if self.no_create.load(relaxed) {
            PutMode::Overwrite
        } else {
            PutMode::Create
        };
        let (s2, p2, pl2) = (store.clone(), path.clone(), payload.clone());
        let first = self.run(async move {
            let opts = PutOptions {
                mode,
                ..Default::default()
            };
            s2.put_opts(&p2, pl2, opts).await
        })?;
        let result = match first {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
            Err(object_store::Error::NotImplemented { .. }) => {
                tracing::debug!(url = %self.url, "no create-only put here; plain puts");
                self.no_create.store(true, relaxed);
                self.run(async move { store.put(&path, payload).await })?
                    .map(|_| ())
            }
            Err(e) => Err(e),
        };
        result.map_err(|e| remote_err(&self.url, &format!("uploading chunk {id}"), e))?;
        Ok(id)
    }

    /// A put that returned is stored: nothing waits for a sync.
    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn contains(&self, id: &ChunkId) -> Result<bool> {
        match self.size(id) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// From a one-byte ranged GET rather than HEAD: the same round trip, and it works
    /// where HEAD does not (the GCS emulator answers HEAD with 501). Chunks are never
    /// empty, so the range is always satisfiable.
    fn size(&self, id: &ChunkId) -> Result<u64> {
        let (store, path) = (self.store.clone(), self.path_of(id));
        self.run(async move {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(0..1)),
                ..Default::default()
            };
            store.get_opts(&path, opts).await.map(|r| r.meta.size)
        })?
        .map_err(|e| remote_err(&self.url, &format!("chunk {id}"), e))
    }

    fn delete(&self, id: &ChunkId) -> Result<()> {
        let (store, path) = (self.store.clone(), self.path_of(id));
        match self.run(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote_err(&self.url, &format!("deleting chunk {id}"), e)),
        }
    }

    fn list(&self) -> Result<Vec<ChunkId>> {
        let (store, prefix) = (self.store.clone(), self.prefix.clone());
        let metas = self.run(async move {
            let mut out = Vec::new();
            let mut s = store.list(Some(&prefix));
            while let Some(m) = s.next().await {
                out.push(m);
            }
            out
        })?;
        let mut ids = Vec::new();
        for m in metas {
            let m = m.map_err(|e| remote_err(&self.url, "listing", e))?;
            if let Some(id) = m.location.filename().and_then(ChunkId::from_file_name) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

impl RemoteStore {
    /// The object `name` (`/`-separated) below this store's prefix.
    fn named(&self, name: &str) -> ObjPath {
        name.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.prefix.clone(), |p, part| p.join(part))
    }
}

impl super::refs::RefStore for RemoteStore {
    fn create(&self, name: &str, bytes: &[u8]) -> Result<bool> {
        let (store, path) = (self.store.clone(), self.named(name));
        let payload = PutPayload::from(bytes.to_vec());
        let r = self.run(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            store.put_opts(&path, payload, opts).await
        })?;
        match r {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => Err(Error::invalid(format!(
                "{}: this remote cannot create an object only if it is absent, so a ref \
                 cannot be moved there without risking a lost update; push refs to a \
                 folder, s3://, gs:// or az:// instead (chunks alone can still be pushed here)",
                self.url
            ))),
            Err(e) => Err(remote_err(&self.url, &format!("creating {name}"), e)),
        }
    }

    fn get(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let (store, path) = (self.store.clone(), self.named(name));
        let r = self.run(async move {
            match store.get(&path).await {
                Ok(g) => g.bytes().await,
                Err(e) => Err(e),
            }
        })?;
        match r {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote_err(&self.url, name, e)),
        }
    }

    fn put(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let (store, path) = (self.store.clone(), self.named(name));
        let payload = PutPayload::from(bytes.to_vec());
        self.run(async move { store.put(&path, payload).await })?
            .map(|_| ())
            .map_err(|e| remote_err(&self.url, &format!("writing {name}"), e))
    }

    fn delete(&self, name: &str) -> Result<()> {
        let (store, path) = (self.store.clone(), self.named(name));
        match self.run(async move { store.delete(&path).await })? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote_err(&self.url, &format!("deleting {name}"), e)),
        }
    }

    fn list_dir(&self, dir: &str) -> Result<Vec<String>> {
        let (store, path) = (self.store.clone(), self.named(dir));
        let r = self.run(async move { store.list_with_delimiter(Some(&path)).await })?;
        let listed = r.map_err(|e| remote_err(&self.url, &format!("listing {dir}"), e))?;
        Ok(listed
            .objects
            .iter()
            .filter_map(|m| m.location.filename().map(str::to_string))
            .collect())
    }

    fn list_meta(&self, dir: &str) -> Result<Vec<Listed>> {
        let (store, path) = (self.store.clone(), self.named(dir));
        let base = self.prefix.clone();
        let metas = self.run(async move {
            let mut out = Vec::new();
            let mut s = store.list(Some(&path));
            while let Some(m) = s.next().await {
                out.push(m);
            }
            out
        })?;
        let mut out = Vec::new();
        for m in metas {
            let m = m.map_err(|e| remote_err(&self.url, "listing", e))?;
            let Some(parts) = m.location.prefix_match(&base) else {
                continue;
            };
            let name = parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/");
            out.push(Listed {
                name,
                size: m.size,
                modified_ms: u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0),
            });
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::brief;

    #[test]
    fn error_pages_are_left_out_of_messages() {
        assert_eq!(
            brief("GET http://h/x - Server returned non-2xx status code: 503 Service Unavailable: <html>\n<head>"),
            "GET http://h/x - Server returned non-2xx status code: 503 Service Unavailable"
        );
        assert_eq!(brief("timed out"), "timed out");
        assert_eq!(brief(&"x".repeat(500)).chars().count(), 401);
    }
}
