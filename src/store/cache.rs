//! A bounded folder of chunks fetched from slower stores (`cache=DIR`, `cachesize=`).
//!
//! Chunks are content-addressed, so one cache folder can serve every disk on a host and
//! survives restarts. It keeps whole chunks (`HEX64.lvl`, fetched for read-ahead, large
//! reads and `get`) and parts of chunks ([`super::partial`]: the byte ranges small reads
//! asked for, so a scattered reader fetches the records it reads, not every chunk they
//! sit in). A small read that misses in a chunk of which ranges are held is a reader
//! back in that chunk (going forward through it, or nearby): it fetches the whole chunk. Nothing is fsynced: every use
//! checks what it gets (a whole chunk against its name here, a range by the record or
//! node tags the reader checks), and a copy that fails is dropped and fetched again.
//! The least recently used chunks go once the folder is over its size. Recency survives
//! restarts through the files' modification times (touched on the first hit of each
//! chunk in a process). Several processes may share one folder: each lists it again
//! after adding a sixteenth of the bound, so the bound holds for all of them together;
//! a file another process evicted is a miss, and temporary files of a live process are
//! left alone (`LocalStore::open`).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use lru::LruCache;

use super::local::LocalStore;
use super::partial::{self, Ranges};
use super::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::sha512_lanes::sha512_each;

/// Default bound of a cache folder when `cachesize=` is not given.
pub const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

/// The folder is listed again each time this process has added 1/RESCAN_SHARE of the
/// bound (see `Index::added_since_scan`).
const RESCAN_SHARE: u64 = 16;

/// A read at least this long fetches the whole chunk: it is a bulk reader's.
const WHOLE_READ: usize = 256 << 10;

struct Index {
    /// Every chunk held, whole or in part, with the bytes it takes.
    lru: LruCache<ChunkId, u64>,
    bytes: u64,
    /// Bytes this process added since the folder was last listed: other processes
    /// sharing the folder add theirs unseen, so past a share of the bound it is listed
    /// again and the bound applies to everything in it.
    added_since_scan: u64,
    touched: HashSet<ChunkId>,
    /// The chunks held in part, with their ranges.
    partial: HashMap<ChunkId, Ranges>,
}

/// What `folder` holds, least recently modified first. Partial files whose header does
/// not parse are dropped when a minute old (younger ones may be another process's,
/// between writing a range and its header).
fn scan(folder: &LocalStore) -> Result<Index> {
    let dir = folder.dir();
    let mut found: Vec<(SystemTime, ChunkId, u64)> = Vec::new();
    for id in folder.list()? {
        if let Ok(m) = std::fs::metadata(folder.path_of(&id)) {
            found.push((m.modified().unwrap_or(SystemTime::UNIX_EPOCH), id, m.len()));
        }
    }
    let whole: HashSet<ChunkId> = found.iter().map(|(_, id, _)| *id).collect();
    let mut partial = HashMap::new();
    for id in partial::list(dir) {
        let ranges = partial::load(dir, &id);
        let modified = std::fs::metadata(partial::path(dir, &id))
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        match ranges {
            Some(r) if !whole.contains(&id) && !r.is_empty() => {
                found.push((modified, id, r.bytes()));
                partial.insert(id, r);
            }
            _ if whole.contains(&id)
                || modified.elapsed().unwrap_or_default() > Duration::from_secs(60) =>
            {
                partial::remove(dir, &id)
            }
            _ => {}
        }
    }
    found.sort();
    let mut index = Index {
        lru: LruCache::unbounded(),
        bytes: 0,
        added_since_scan: 0,
        touched: HashSet::new(),
        partial,
    };
    for (_, id, len) in found {
        index.lru.put(id, len);
        index.bytes += len;
    }
    Ok(index)
}

/// What the cache holds of a chunk, for one read.
enum Held {
    Whole,
    /// The read's range is present.
    Covered,
    /// Not present; `again` when other ranges of the chunk are (a reader back in a
    /// chunk it read before).
    Missing {
        again: bool,
    },
}

/// A cache folder in front of `inner`.
pub struct CacheStore {
    folder: LocalStore,
    inner: Arc<dyn ChunkStore>,
    max_bytes: u64,
    index: Mutex<Index>,
    /// Downloads under way (whole chunks and ranges): a reader of bytes that one of
    /// them is fetching waits for its answer instead of fetching them again.
    flights: Flights,
    /// Serializes writes to one partial chunk (each rewrites its header); striped by
    /// chunk id, so writes to different chunks rarely wait for each other.
    partial_writes: [Mutex<()>; WRITE_STRIPES],
}

/// Locks for writes of partial chunks.
const WRITE_STRIPES: usize = 64;

/// A finished download: the bytes, or the error's kind and text (errors do not clone).
type Answer = std::result::Result<Arc<Vec<u8>>, (ErrorKind, String)>;

/// Downloads under way: per chunk, `(start, end, flight)`; a whole chunk is
/// `(0, u64::MAX)`.
#[derive(Default)]
struct Flights(Mutex<FlightTable>);

type FlightTable = HashMap<ChunkId, Vec<(u64, u64, Arc<Flight>)>>;

/// A download to wait for, or to make.
struct Joined {
    flight: Arc<Flight>,
    /// Where its bytes start in the chunk.
    start: u64,
    /// This reader makes the download (and must [`Flights::land`] it).
    leader: bool,
}

impl Flights {
    fn table(&self) -> Result<std::sync::MutexGuard<'_, FlightTable>> {
        self.0
            .lock()
            .map_err(|_| Error::internal("cache download table poisoned"))
    }

    /// Whether a download of `id` under way covers `start..end`.
    fn covering(&self, id: &ChunkId, start: u64, end: u64) -> Result<bool> {
        Ok(self
            .table()?
            .get(id)
            .is_some_and(|l| l.iter().any(|(s, e, _)| *s <= start && end <= *e)))
    }

    /// Joins a download of `id` that covers `start..end`, or starts one.
    fn join(&self, id: &ChunkId, start: u64, end: u64) -> Result<Joined> {
        let mut table = self.table()?;
        let list = table.entry(*id).or_default();
        Ok(
            match list.iter().find(|(s, e, _)| *s <= start && end <= *e) {
                Some((s, _, f)) => Joined {
                    flight: f.clone(),
                    start: *s,
                    leader: false,
                },
                None => {
                    let f = Arc::new(Flight::default());
                    list.push((start, end, f.clone()));
                    Joined {
                        flight: f,
                        start,
                        leader: true,
                    }
                }
            },
        )
    }

    /// Gives a leader's answer to its waiters and takes the download off the table.
    fn land(&self, id: &ChunkId, flight: &Arc<Flight>, answer: Answer) {
        flight.finish(answer);
        if let Ok(mut table) = self.table() {
            if let Some(list) = table.get_mut(id) {
                list.retain(|(_, _, f)| !Arc::ptr_eq(f, flight));
                if list.is_empty() {
                    table.remove(id);
                }
            }
        }
    }
}

/// `len` bytes at `offset` of `bytes`, if they are there.
fn slice(bytes: &[u8], offset: u64, len: usize) -> Option<&[u8]> {
    let at = usize::try_from(offset).ok()?;
    bytes.get(at..at.checked_add(len)?)
}

/// A download's outcome as its waiters get it.
fn answer_of(result: &Result<Arc<Vec<u8>>>) -> Answer {
    match result {
        Ok(b) => Ok(b.clone()),
        Err(e) => Err((e.kind(), e.to_string())),
    }
}

/// One download that several readers wait for.
#[derive(Default)]
struct Flight {
    answer: Mutex<Option<Answer>>,
    ready: Condvar,
}

impl Flight {
    /// Waits for the download's answer.
    fn wait(&self) -> Result<Arc<Vec<u8>>> {
        let poisoned = || Error::internal("cache download lock poisoned");
        let mut answer = self.answer.lock().map_err(|_| poisoned())?;
        while answer.is_none() {
            answer = self.ready.wait(answer).map_err(|_| poisoned())?;
        }
        match answer.as_ref() {
            Some(Ok(b)) => Ok(b.clone()),
            Some(Err((kind, msg))) => Err(Error::new(*kind, msg.clone())),
            None => Err(Error::internal("download finished without an answer")),
        }
    }

    /// Gives the answer to everyone waiting.
    fn finish(&self, answer: Answer) {
        if let Ok(mut a) = self.answer.lock() {
            *a = Some(answer);
        }
        self.ready.notify_all();
    }
}

impl CacheStore {
    /// Uses `dir` (created if needed) as a cache of at most `max_bytes` in front of
    /// `inner`, which must check whole chunks against their names (a `VerifyStore`).
    pub fn open(dir: &Path, max_bytes: u64, inner: Arc<dyn ChunkStore>) -> Result<Self> {
        let folder = LocalStore::open(dir)?;
        let index = scan(&folder)?;
        let cache = Self {
            folder,
            inner,
            max_bytes,
            index: Mutex::new(index),
            flights: Flights::default(),
            partial_writes: std::array::from_fn(|_| Mutex::new(())),
        };
        cache.evict()?;
        Ok(cache)
    }

    fn index(&self) -> Result<std::sync::MutexGuard<'_, Index>> {
        self.index
            .lock()
            .map_err(|_| Error::internal("cache index lock poisoned"))
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.index().map(|i| i.bytes).unwrap_or(0)
    }

    fn evict(&self) -> Result<()> {
        let mut ix = self.index()?;
        if ix.added_since_scan > self.max_bytes / RESCAN_SHARE {
            let touched = std::mem::take(&mut ix.touched);
            *ix = scan(&self.folder)?;
            ix.touched = touched;
        }
        while ix.bytes > self.max_bytes {
            let Some((id, len)) = ix.lru.pop_lru() else {
                break;
            };
            ix.bytes = ix.bytes.saturating_sub(len);
            ix.touched.remove(&id);
            if ix.partial.remove(&id).is_some() {
                partial::remove(self.folder.dir(), &id);
            } else {
                self.folder.delete(&id)?;
            }
        }
        Ok(())
    }

    /// Marks a hit; false when the chunk is not held whole.
    fn hit(&self, id: &ChunkId) -> Result<bool> {
        Ok(matches!(self.held(id, None)?, Held::Whole))
    }

    /// What is held of `id` for a read of `range` (`None`: the whole chunk); marks the
    /// chunk recently used when something is.
    fn held(&self, id: &ChunkId, range: Option<(u64, u64)>) -> Result<Held> {
        let mut ix = self.index()?;
        if ix.lru.get(id).is_none() {
            return Ok(Held::Missing { again: false });
        }
        let (held, file) = match (ix.partial.get(id), range) {
            (None, _) => (Held::Whole, self.folder.path_of(id)),
            (Some(r), Some((start, end))) if r.covers(start, end) => {
                (Held::Covered, partial::path(self.folder.dir(), id))
            }
            (Some(_), _) => return Ok(Held::Missing { again: true }),
        };
        if ix.touched.insert(*id) {
            if let Ok(f) = std::fs::File::options().write(true).open(file) {
                let _ = f.set_modified(SystemTime::now());
            }
        }
        Ok(held)
    }

    /// Drops what is held of `id` from the index and the folder.
    fn forget(&self, id: &ChunkId) {
        if let Ok(mut ix) = self.index() {
            if let Some(len) = ix.lru.pop(id) {
                ix.bytes = ix.bytes.saturating_sub(len);
            }
            ix.touched.remove(id);
            if ix.partial.remove(id).is_some() {
                partial::remove(self.folder.dir(), id);
            } else {
                let _ = self.folder.delete(id);
            }
        }
    }

    /// Fetches from behind (once, however many readers want it at the same time),
    /// keeps a copy, returns the bytes.
    fn fill(&self, id: &ChunkId) -> Result<Arc<Vec<u8>>> {
        let j = self.flights.join(id, 0, u64::MAX)?;
        if !j.leader {
            return j.flight.wait();
        }
        let result = self.fetch_and_keep(id).map(Arc::new);
        self.flights.land(id, &j.flight, answer_of(&result));
        result
    }

    /// The store behind checks what it returns (`VerifyStore` under each fallback, see
    /// `store::stack`), so the bytes are hashed once, there.
    fn fetch_and_keep(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let bytes = self.inner.get(id)?;
        let len = bytes.len() as u64;
        if len <= self.max_bytes {
            let kept = self.folder.keep(id, &bytes);
            match kept {
                Ok(_) => {
                    let mut ix = self.index()?;
                    let old = ix.lru.put(*id, len).unwrap_or(0);
                    ix.bytes = ix.bytes.saturating_sub(old) + len;
                    ix.added_since_scan += len;
                    ix.touched.insert(*id);
                    if ix.partial.remove(id).is_some() {
                        partial::remove(self.folder.dir(), id);
                    }
                    drop(ix);
                    self.evict()?;
                }
                Err(e) => {
                    tracing::warn!(chunk = %id, error = %e, "could not keep a chunk in the cache")
                }
            }
        }
        Ok(bytes)
    }
}

impl CacheStore {
    fn holds_whole(&self, id: &ChunkId) -> Result<bool> {
        let ix = self.index()?;
        Ok(ix.lru.contains(id) && !ix.partial.contains_key(id))
    }

    /// Bytes held in part (ranges of chunks), included in [`Self::bytes`].
    pub fn partial_bytes(&self) -> u64 {
        self.index()
            .map(|ix| ix.partial.values().map(Ranges::bytes).sum())
            .unwrap_or(0)
    }

    /// Fetches `len` bytes at `offset` from behind (or waits for a download under way
    /// that covers them, of a range or the whole chunk), hands them to `accept`, and
    /// keeps them once accepted.
    fn fill_range(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let j = self
            .flights
            .join(id, offset, offset.saturating_add(len as u64))?;
        if !j.leader {
            // Another reader's download: take our part of it; if it failed or our
            // check refuses it, fetch it ourselves (every source is tried again).
            if let Ok(bytes) = j.flight.wait() {
                if let Some(part) = slice(&bytes, offset - j.start, len) {
                    if accept(part).is_ok() {
                        return Ok(());
                    }
                }
            }
            return self.fetch_range(id, offset, len, accept).map(|_| ());
        }
        let result = self.fetch_range(id, offset, len, accept);
        self.flights.land(id, &j.flight, answer_of(&result));
        result.map(|_| ())
    }

    /// One range from behind: accepted, then kept.
    fn fetch_range(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<Arc<Vec<u8>>> {
        let mut got = None;
        self.inner.read_verified(id, offset, len, &mut |b| {
            accept(b)?;
            got = Some(b.to_vec());
            Ok(())
        })?;
        let bytes = Arc::new(got.ok_or_else(|| Error::internal("an accepted range kept nothing"))?);
        if let Err(e) = self.keep_range(id, offset, &bytes) {
            tracing::warn!(chunk = %id, error = %e, "could not keep a range in the cache");
        }
        Ok(bytes)
    }

    fn keep_range(&self, id: &ChunkId, offset: u64, bytes: &[u8]) -> Result<()> {
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return Ok(());
        }
        let stripe = usize::from(id.0[0]) % WRITE_STRIPES;
        let writing = self.partial_writes[stripe]
            .lock()
            .map_err(|_| Error::internal("cache write lock poisoned"))?;
        if self.holds_whole(id)? {
            return Ok(()); // the whole chunk arrived meanwhile
        }
        let mut ranges = self.index()?.partial.get(id).cloned().unwrap_or_default();
        ranges.insert(offset, offset + len);
        partial::write(self.folder.dir(), id, offset, bytes, &ranges)?;
        let mut ix = self.index()?;
        let held = ranges.bytes();
        ix.partial.insert(*id, ranges);
        let old = ix.lru.put(*id, held).unwrap_or(0);
        ix.bytes = ix.bytes.saturating_sub(old) + held;
        ix.added_since_scan += len;
        ix.touched.insert(*id);
        drop(ix);
        drop(writing);
        self.evict()
    }
}

impl ChunkStore for CacheStore {
    /// A bulk read (`pull`, `fsck`, `push`'s copies): chunks held whole come from the
    /// cache, checked together in SHA-512 lanes; the rest from the store behind,
    /// together too, and not kept: a pull puts them in the data folder (a cached copy
    /// would be a second one), and a check of the whole disk would otherwise push the
    /// readers' working set out of the cache.
    fn get_many(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>>> {
        let mut got: Vec<Option<Result<Vec<u8>>>> = ids.iter().map(|_| None).collect();
        let mut kept: Vec<(usize, Vec<u8>)> = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            match self.hit(id) {
                Ok(true) => {
                    if let Ok(b) = self.folder.get(id) {
                        kept.push((i, b));
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    if let Some(slot) = got.get_mut(i) {
                        *slot = Some(Err(e));
                    }
                }
            }
        }
        let msgs: Vec<&[u8]> = kept.iter().map(|(_, b)| b.as_slice()).collect();
        let digests = sha512_each(&msgs);
        for ((i, bytes), d) in kept.into_iter().zip(digests) {
            let (Some(id), Some(slot)) = (ids.get(i), got.get_mut(i)) else {
                continue;
            };
            if ChunkId::from_digest(&d) == *id {
                *slot = Some(Ok(bytes));
            } else {
                // A damaged kept copy: dropped, and the chunk taken from behind.
                self.forget(id);
                let _ = self.folder.delete(id);
            }
        }
        let behind: Vec<usize> = (0..ids.len())
            .filter(|&i| got.get(i).is_some_and(Option::is_none))
            .collect();
        let asked: Vec<ChunkId> = behind.iter().filter_map(|&i| ids.get(i).copied()).collect();
        let mut answers = self.inner.get_many(&asked).into_iter();
        for i in behind {
            let a = answers.next().unwrap_or_else(|| {
                Err(Error::internal("a store answered fewer chunks than asked"))
            });
            if let Some(slot) = got.get_mut(i) {
                *slot = Some(a);
            }
        }
        got.into_iter()
            .map(|g| g.unwrap_or_else(|| Err(Error::internal("a chunk got no answer"))))
            .collect()
    }

    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        if self.hit(id)? {
            match self.folder.get(id) {
                Ok(b) if ChunkId::of(&b) == *id => return Ok(b),
                _ => {
                    self.forget(id);
                    let _ = self.folder.delete(id);
                }
            }
        }
        // Copied only when other readers still hold the download.
        self.fill(id)
            .map(|b| Arc::try_unwrap(b).unwrap_or_else(|b| b.to_vec()))
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        if self.hit(id)? {
            match self.folder.get_range(id, offset, len) {
                Ok(b) => return Ok(b),
                Err(_) => self.forget(id),
            }
        }
        let whole = self.fill(id)?;
        slice(&whole, offset, len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "chunk {id}: {len} bytes at {offset} lie past its end ({} bytes)",
                    whole.len()
                ))
            })
    }

    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let end = offset.saturating_add(len as u64);
        let again = match self.held(id, Some((offset, end)))? {
            Held::Whole => match self
                .folder
                .get_range(id, offset, len)
                .and_then(|b| accept(&b))
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    // A damaged cached copy is a miss: fetch it again from behind.
                    tracing::warn!(chunk = %id, error = %e, "cached chunk refused; fetching it again");
                    self.forget(id);
                    false
                }
            },
            Held::Covered => {
                match partial::read(self.folder.dir(), id, offset, len).and_then(|b| accept(&b)) {
                    Ok(()) => return Ok(()),
                    Err(e) => {
                        tracing::warn!(chunk = %id, error = %e, "cached range refused; fetching it again");
                        self.forget(id);
                        false
                    }
                }
            }
            Held::Missing { again } => again,
        };
        // A download under way that covers this read (of a range or the whole chunk) is
        // joined. Otherwise a read back in a chunk read before (going forward through
        // it, or nearby) or a bulk read fetches the whole chunk: its reader will likely
        // want more of it, and one download costs fewer round trips than many ranges.
        if !self.flights.covering(id, offset, end)? && (again || len >= WHOLE_READ) {
            let whole = self.fill(id)?;
            let part = slice(&whole, offset, len)
                .ok_or_else(|| Error::corrupt(format!("chunk {id}: range past its end")))?;
            return accept(part);
        }
        self.fill_range(id, offset, len, accept)
    }

    /// Fetches exactly the range, into the cache: for prefetching a trace, whose reads
    /// are known in advance and were merged into ranges by the caller.
    fn warm_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<()> {
        match self.held(id, Some((offset, offset.saturating_add(len as u64))))? {
            Held::Whole | Held::Covered => Ok(()),
            Held::Missing { .. } => self.fill_range(id, offset, len, &mut |_| Ok(())),
        }
    }

    /// A chunk held whole is only marked recently used; a `get` hashes it when read.
    fn warm_whole(&self, id: &ChunkId) -> Result<()> {
        if self.hit(id)? {
            return Ok(());
        }
        self.fill(id).map(|_| ())
    }

    fn put(&self, _bytes: &[u8]) -> Result<ChunkId> {
        Err(Error::internal("the cache takes no writes"))
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        Ok(self.holds_whole(id)? || self.inner.contains(id)?)
    }
    fn size(&self, id: &ChunkId) -> Result<u64> {
        {
            let ix = self.index()?;
            if let (Some(len), false) = (ix.lru.peek(id), ix.partial.contains_key(id)) {
                return Ok(*len);
            }
        }
        self.inner.size(id)
    }
    fn delete(&self, _id: &ChunkId) -> Result<()> {
        Err(Error::internal("the cache deletes nothing on request"))
    }
    fn list(&self) -> Result<Vec<ChunkId>> {
        self.inner.list()
    }
    /// A kept copy is hashed when read (`get`); a fetched one by the store behind.
    fn checks_names(&self) -> bool {
        self.inner.checks_names()
    }
    fn describe(&self) -> String {
        format!(
            "cache {} > {}",
            self.folder.describe(),
            self.inner.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn stays_under_its_size_and_keeps_the_recent() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let ids: Vec<ChunkId> = (0..10u8).map(|i| mem.put(&[i; 1000]).unwrap()).collect();
        let c = CacheStore::open(dir.path(), 3500, mem.clone()).unwrap();
        for id in &ids {
            assert_eq!(c.get_range(id, 10, 5).unwrap().len(), 5);
        }
        assert!(c.bytes() <= 3500);
        let on_disk = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(on_disk, 3);
        // The newest are kept: served with the store behind emptied.
        for id in &ids {
            mem.delete(id).unwrap();
        }
        assert_eq!(c.get(&ids[9]).unwrap(), vec![9u8; 1000]);
        assert!(c.get(&ids[0]).is_err());
        // Reopened smaller, it keeps what fits.
        drop(c);
        let c = CacheStore::open(dir.path(), 2000, mem).unwrap();
        assert_eq!(c.bytes(), 2000);
        assert_eq!(c.get(&ids[9]).unwrap(), vec![9u8; 1000]);
    }

    #[test]
    fn two_users_of_one_folder_keep_it_under_its_bound_together() {
        // Two disks (two processes: each its own CacheStore and index) on one cache.
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let ids: Vec<ChunkId> = (0..16u8).map(|i| mem.put(&[i; 1000]).unwrap()).collect();
        let a = CacheStore::open(dir.path(), 5000, mem.clone()).unwrap();
        let b = CacheStore::open(dir.path(), 5000, mem.clone()).unwrap();
        let folder_bytes = || -> u64 {
            std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum()
        };
        for (i, id) in ids.iter().enumerate() {
            let user = if i % 2 == 0 { &a } else { &b };
            assert_eq!(user.get(id).unwrap(), vec![i as u8; 1000]);
            assert!(
                folder_bytes() <= 5000,
                "after chunk {i}: {} bytes",
                folder_bytes()
            );
        }
        // Each still reads every chunk right, whatever the other evicted.
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(a.get(id).unwrap(), vec![i as u8; 1000]);
            assert_eq!(b.get_range(id, 10, 5).unwrap(), vec![i as u8; 5]);
        }
        assert!(folder_bytes() <= 5000);
    }

    #[test]
    fn concurrent_readers_of_one_chunk_share_one_download() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let id = mem.put(&[7u8; 100_000]).unwrap();
        // A slow store behind, so the readers overlap.
        let counting = slow_counting(mem);
        let c = CacheStore::open(dir.path(), 1 << 20, counting.clone()).unwrap();
        let gets = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    assert_eq!(c.get_range(&id, 10, 5).unwrap(), vec![7u8; 5]);
                    gets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        assert_eq!(gets.into_inner(), 6);
        assert_eq!(
            counting.gets(),
            1,
            "the chunk was downloaded more than once"
        );
    }

    #[test]
    fn a_bad_cached_copy_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let id = mem.put(b"good bytes").unwrap();
        let c = CacheStore::open(dir.path(), 1 << 20, mem.clone()).unwrap();
        c.get(&id).unwrap();
        std::fs::write(dir.path().join(id.file_name()), b"bad bytes!").unwrap();
        assert_eq!(c.get(&id).unwrap(), b"good bytes");
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// Reads `len` bytes at `off` through `read_verified`, checking them against `want`.
    fn read(c: &CacheStore, id: &ChunkId, want: &[u8], off: usize, len: usize) -> Result<()> {
        c.read_verified(id, off as u64, len, &mut |b| {
            if b == &want[off..off + len] {
                Ok(())
            } else {
                Err(Error::corrupt("bytes differ"))
            }
        })
    }

    /// `mem` answering after 200 ms, behind a counting store.
    fn slow_counting(mem: Arc<MemoryStore>) -> Arc<crate::store::recording::RecordingStore> {
        use crate::store::fault::{FaultPlan, FaultStore};
        let slow = Arc::new(FaultStore::new(
            mem,
            FaultPlan {
                delay: Some(std::time::Duration::from_millis(200)),
                ..FaultPlan::default()
            },
        ));
        Arc::new(crate::store::recording::RecordingStore::new(slow))
    }

    /// Two 1 MiB chunks behind a counting store.
    fn two_chunks() -> (
        Arc<crate::store::recording::RecordingStore>,
        [(ChunkId, Vec<u8>); 2],
    ) {
        let mem = Arc::new(MemoryStore::default());
        let data = pattern(1 << 20);
        let other: Vec<u8> = data.iter().map(|b| b ^ 1).collect();
        let (id, id2) = (mem.put(&data).unwrap(), mem.put(&other).unwrap());
        let counting = Arc::new(crate::store::recording::RecordingStore::new(mem));
        (counting, [(id, data), (id2, other)])
    }

    #[test]
    fn small_reads_fetch_and_keep_only_their_range() {
        let dir = tempfile::tempdir().unwrap();
        let (counting, [(id, data), (id2, other)]) = two_chunks();
        let c = CacheStore::open(dir.path(), 8 << 20, counting.clone()).unwrap();
        read(&c, &id, &data, 4096, 8192).unwrap();
        assert_eq!(counting.ranges(), (1, 8192));
        assert_eq!((c.partial_bytes(), c.bytes()), (8192, 8192));
        // Inside what is held: no request.
        read(&c, &id, &data, 4096, 8192).unwrap();
        read(&c, &id, &data, 5000, 100).unwrap();
        assert_eq!(counting.ranges(), (1, 8192));
        assert_eq!(counting.gets(), 0);
        // Another chunk: another range.
        read(&c, &id2, &other, 500_000, 4096).unwrap();
        assert_eq!(counting.ranges(), (2, 8192 + 4096));
        // Held in part, the chunk is not "contained" and its size is asked behind.
        assert!(!c.holds_whole(&id).unwrap());
        assert_eq!(c.size(&id).unwrap(), 1 << 20);
        // Reopened: the ranges are still there.
        drop(c);
        let c = CacheStore::open(dir.path(), 8 << 20, counting.clone()).unwrap();
        read(&c, &id, &data, 4096, 8192).unwrap();
        read(&c, &id2, &other, 500_000, 4096).unwrap();
        assert_eq!(counting.ranges().0, 2);
        assert_eq!(c.partial_bytes(), 8192 + 4096);
        // A read missing in a chunk held in part: the whole chunk comes, and replaces
        // the parts.
        read(&c, &id, &data, 600_000, 4096).unwrap();
        assert_eq!(counting.gets(), 1);
        assert_eq!(c.partial_bytes(), 4096);
        assert_eq!(c.bytes(), (1 << 20) + 4096);
        assert_eq!(crate::store::partial::list(dir.path()), vec![id2]);
        read(&c, &id, &data, 900_000, 100).unwrap();
        assert_eq!((counting.gets(), counting.ranges().0), (1, 2));
    }

    #[test]
    fn a_bad_cached_range_is_fetched_again_and_large_reads_take_the_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let (counting, [(id, data), (id2, other)]) = two_chunks();
        let c = CacheStore::open(dir.path(), 8 << 20, counting.clone()).unwrap();
        read(&c, &id, &data, 0, 4096).unwrap();
        // Flip the held bytes: the reader refuses them, the range is fetched again.
        use std::os::unix::fs::FileExt;
        std::fs::File::options()
            .write(true)
            .open(crate::store::partial::path(dir.path(), &id))
            .unwrap()
            .write_all_at(&[0u8; 4096], 4096)
            .unwrap();
        read(&c, &id, &data, 0, 4096).unwrap();
        assert_eq!(counting.ranges().0, 2);
        read(&c, &id, &data, 0, 4096).unwrap();
        assert_eq!(counting.ranges().0, 2, "the good copy was not kept");
        // A bulk read fetches the whole chunk, even the first in it.
        read(&c, &id2, &other, 100_000, WHOLE_READ).unwrap();
        assert_eq!(counting.gets(), 1);
    }

    /// A bulk read takes held chunks from the cache and the rest from behind without
    /// keeping them (a pull puts them in the data folder); a damaged held copy is
    /// dropped and its chunk taken from behind.
    #[test]
    fn chunks_got_together_come_from_the_cache_or_from_behind_unkept() {
        let dir = tempfile::tempdir().unwrap();
        let (counting, [(id, data), (id2, other)]) = two_chunks();
        let c = CacheStore::open(dir.path(), 8 << 20, counting.clone()).unwrap();
        assert_eq!(c.get(&id).unwrap(), data);
        assert_eq!(counting.gets(), 1);
        let nowhere = ChunkId::of(b"nowhere");
        let got = c.get_many(&[id2, id, nowhere]);
        assert_eq!(got[0].as_ref().unwrap(), &other);
        assert_eq!(got[1].as_ref().unwrap(), &data);
        assert_eq!(got[2].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
        assert_eq!(
            counting.gets(),
            3,
            "the held chunk was fetched, or a chunk twice"
        );
        assert_eq!(
            c.bytes(),
            data.len() as u64,
            "a bulk read kept what it fetched"
        );
        assert!(!dir.path().join(id2.file_name()).exists());
        std::fs::write(dir.path().join(id.file_name()), vec![7u8; data.len()]).unwrap();
        let got = c.get_many(&[id]);
        assert_eq!(got[0].as_ref().unwrap(), &data);
        assert_eq!(counting.gets(), 4);
        assert_eq!(c.bytes(), 0, "the damaged copy is still counted as held");
        assert!(!dir.path().join(id.file_name()).exists());
    }

    /// Warming a chunk the cache holds whole asks nothing of the store behind and does
    /// not read the kept copy (a prefetch on a warm cache costs no reads and no
    /// hashing); a damaged kept copy is found by the next `get`, which fetches it again.
    #[test]
    fn warming_a_held_chunk_reads_nothing_and_the_next_get_still_checks_it() {
        let dir = tempfile::tempdir().unwrap();
        let (counting, [(id, data), (id2, _)]) = two_chunks();
        let c = CacheStore::open(dir.path(), 8 << 20, counting.clone()).unwrap();
        c.warm_whole(&id).unwrap();
        assert_eq!(counting.gets(), 1);
        assert_eq!(c.bytes(), data.len() as u64);
        let kept = dir.path().join(id.file_name());
        std::fs::write(&kept, vec![0u8; data.len()]).unwrap();
        c.warm_whole(&id).unwrap();
        assert_eq!(counting.gets(), 1, "warming a held chunk fetched it again");
        assert_eq!(c.get(&id).unwrap(), data);
        assert_eq!(counting.gets(), 2, "the damaged copy was not fetched again");
        assert_eq!(std::fs::read(&kept).unwrap(), data);
        // A chunk nobody has: the store behind's answer.
        let e = c.warm_whole(&ChunkId::of(b"nowhere")).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::NotFound, "{e}");
        c.warm_whole(&id2).unwrap();
        assert_eq!(counting.gets(), 4);
    }

    #[test]
    fn warmed_ranges_are_kept_and_evicted_like_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let datas: Vec<Vec<u8>> = (0..4u8)
            .map(|i| pattern(100_000).into_iter().map(|b| b ^ i).collect())
            .collect();
        let ids: Vec<ChunkId> = datas.iter().map(|d| mem.put(d).unwrap()).collect();
        let counting = Arc::new(crate::store::recording::RecordingStore::new(mem));
        let c = CacheStore::open(dir.path(), 25_000, counting.clone()).unwrap();
        for id in &ids {
            c.warm_range(id, 1000, 10_000).unwrap();
        }
        assert_eq!(counting.ranges().0, 4);
        // Two ranges fit in 25,000 bytes: the two most recent stay.
        assert_eq!(c.bytes(), 20_000);
        assert_eq!(crate::store::partial::list(dir.path()).len(), 2);
        read(&c, &ids[3], &datas[3], 2000, 5000).unwrap();
        read(&c, &ids[2], &datas[2], 1000, 10_000).unwrap();
        assert_eq!(counting.ranges().0, 4);
        read(&c, &ids[0], &datas[0], 1000, 100).unwrap();
        assert_eq!(counting.ranges().0, 5);
    }

    /// A cache in front of one 1 MiB chunk that takes 200 ms to fetch, counted.
    fn slow_cache() -> (
        tempfile::TempDir,
        CacheStore,
        Arc<crate::store::recording::RecordingStore>,
        ChunkId,
        Vec<u8>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mem = Arc::new(MemoryStore::default());
        let data = pattern(1 << 20);
        let id = mem.put(&data).unwrap();
        let counting = slow_counting(mem);
        let c = CacheStore::open(dir.path(), 8 << 20, counting.clone()).unwrap();
        (dir, c, counting, id, data)
    }

    #[test]
    fn concurrent_readers_of_one_range_share_one_download() {
        let (_dir, c, counting, id, data) = slow_cache();
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| read(&c, &id, &data, 64 << 10, 16 << 10).unwrap());
            }
        });
        assert_eq!(
            counting.ranges().0,
            1,
            "the range was downloaded more than once"
        );
    }

    #[test]
    fn small_readers_join_a_whole_chunk_download_under_way() {
        let (_dir, c, counting, id, data) = slow_cache();
        std::thread::scope(|s| {
            s.spawn(|| assert!(c.get(&id).unwrap() == data));
            std::thread::sleep(std::time::Duration::from_millis(50));
            for i in 0..4 {
                let c = &c;
                let data = &data;
                s.spawn(move || read(c, &id, data, i * (200 << 10), 4096).unwrap());
            }
        });
        assert_eq!(counting.gets(), 1, "the whole chunk was downloaded twice");
        assert_eq!(counting.ranges().0, 0, "a reader fetched its own range");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Read(usize, usize, usize),
        Warm(usize, usize, usize),
        Get(usize),
        Damage(usize, usize),
        Reopen(bool),
    }

    fn op() -> impl proptest::strategy::Strategy<Value = Op> {
        use proptest::prelude::*;
        prop_oneof![
            4 => (0..3usize, 0..300_000usize, 1..300_000usize).prop_map(|(c, o, l)| Op::Read(c, o, l)),
            2 => (0..3usize, 0..300_000usize, 1..100_000usize).prop_map(|(c, o, l)| Op::Warm(c, o, l)),
            1 => (0..3usize).prop_map(Op::Get),
            1 => (0..3usize, 0..300_000usize).prop_map(|(c, o)| Op::Damage(c, o)),
            1 => any::<bool>().prop_map(Op::Reopen),
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]
        /// Whatever mix of reads, warmed ranges, whole gets, damaged cached bytes and
        /// reopenings (at two sizes) happens, every answer is the chunk's true bytes and
        /// the cache stays within its size.
        #[test]
        fn answers_are_always_the_true_bytes(ops in proptest::collection::vec(op(), 1..40)) {
            use std::os::unix::fs::FileExt;
            let dir = tempfile::tempdir().unwrap();
            let mem = Arc::new(MemoryStore::default());
            let chunks: Vec<(ChunkId, Vec<u8>)> = (0..3u8)
                .map(|i| {
                    let d: Vec<u8> = pattern(300_000).into_iter().map(|b| b ^ i).collect();
                    (mem.put(&d).unwrap(), d)
                })
                .collect();
            let sizes = [200_000u64, 4 << 20];
            let mut max = sizes[1];
            let mut c = CacheStore::open(dir.path(), max, mem.clone()).unwrap();
            for op in ops {
                match op {
                    Op::Read(i, off, len) => {
                        let (id, data) = &chunks[i];
                        let len = len.min(data.len() - off);
                        read(&c, id, data, off, len).unwrap();
                    }
                    Op::Warm(i, off, len) => {
                        let (id, data) = &chunks[i];
                        c.warm_range(id, off as u64, len.min(data.len() - off)).unwrap();
                    }
                    Op::Get(i) => {
                        let (id, data) = &chunks[i];
                        proptest::prop_assert_eq!(&c.get(id).unwrap(), data);
                    }
                    Op::Damage(i, off) => {
                        // Flip a byte of whatever the cache holds of the chunk.
                        let id = &chunks[i].0;
                        for (path, at) in [
                            (dir.path().join(id.file_name()), off as u64),
                            (crate::store::partial::path(dir.path(), id), 4096 + off as u64),
                        ] {
                            if let Ok(f) = std::fs::File::options().read(true).write(true).open(&path) {
                                let mut b = [0u8; 1];
                                if f.read_exact_at(&mut b, at).is_ok() {
                                    f.write_all_at(&[b[0] ^ 0xff], at).unwrap();
                                }
                            }
                        }
                    }
                    Op::Reopen(small) => {
                        drop(c);
                        max = sizes[usize::from(!small)];
                        c = CacheStore::open(dir.path(), max, mem.clone()).unwrap();
                    }
                }
                proptest::prop_assert!(c.bytes() <= max, "{} bytes held, {max} allowed", c.bytes());
            }
        }
    }
}
