//! A store that fails on purpose, for tests: the Nth operation fails, the Nth sync fails
//! (and every sync after it, as a real store's would), the Nth put leaves a torn copy
//! under the chunk's name and fails, the Nth read returns a flipped byte, every operation
//! waits a while, and [`FaultStore::crash`] drops what was put but never synced, as a
//! power cut would. A plan can be drawn from a seed so a failing test replays.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};

use super::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;

/// Which faults to inject (operation numbers count from 1 over every call).
#[derive(Clone, Debug, Default)]
pub struct FaultPlan {
    /// This operation (any kind) fails with an I/O error.
    pub fail_op: Option<u64>,
    /// This sync fails; every later one fails too.
    pub fail_sync: Option<u64>,
    /// This put leaves a truncated copy under the name and fails.
    pub tear_put: Option<u64>,
    /// This read (get or get_range) returns one byte flipped.
    pub flip_read: Option<u64>,
    /// Every operation sleeps this long first.
    pub delay: Option<Duration>,
}

impl FaultPlan {
    /// A plan drawn from `seed`: one or two faults somewhere in the first `ops`
    /// operations of their kind.
    pub fn from_seed(seed: u64, ops: u64) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let ops = ops.max(1);
        let mut plan = Self::default();
        for _ in 0..rng.gen_range(1..=2) {
            let n = rng.gen_range(1..=ops);
            match rng.gen_range(0..4) {
                0 => plan.fail_op = Some(n),
                1 => plan.fail_sync = Some(rng.gen_range(1..=ops / 8 + 1)),
                2 => plan.tear_put = Some(rng.gen_range(1..=ops / 4 + 1)),
                _ => plan.flip_read = Some(n),
            }
        }
        plan
    }
}

/// Counts of what happened, for assertions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Faults injected.
    pub injected: u64,
    /// Syncs that succeeded.
    pub syncs: u64,
}

#[derive(Default)]
struct Faults {
    plan: FaultPlan,
    puts: u64,
    syncs: u64,
    reads: u64,
    sync_failed: bool,
    /// Ids put since the last good sync that the inner store did not hold before.
    unsynced: HashSet<ChunkId>,
    /// Torn copies that shadow the inner store's bytes until a good put of that id.
    torn: HashMap<ChunkId, Vec<u8>>,
    counts: FaultCounts,
}

/// Injects faults in front of `inner`.
pub struct FaultStore {
    inner: Arc<dyn ChunkStore>,
    ops: AtomicU64,
    state: Mutex<Faults>,
}

fn injected(what: &str) -> Error {
    Error::io(
        format!("injected fault: {what}"),
        std::io::Error::from_raw_os_error(libc::EIO),
    )
}

impl FaultStore {
    /// Wraps `inner` with `plan`.
    pub fn new(inner: Arc<dyn ChunkStore>, plan: FaultPlan) -> Self {
        Self {
            inner,
            ops: AtomicU64::new(0),
            state: Mutex::new(Faults {
                plan,
                ..Faults::default()
            }),
        }
    }

    fn faults(&self) -> Result<std::sync::MutexGuard<'_, Faults>> {
        self.state
            .lock()
            .map_err(|_| Error::internal("fault store lock poisoned"))
    }

    /// Counts so far.
    pub fn counts(&self) -> FaultCounts {
        self.faults().map(|f| f.counts).unwrap_or_default()
    }

    /// Stops injecting (the plan becomes empty).
    pub fn heal(&self) {
        if let Ok(mut f) = self.faults() {
            f.plan = FaultPlan::default();
        }
    }

    /// A power cut: every chunk put since the last good sync is gone, and the
    /// store is healed and usable again (as after a reboot).
    pub fn crash(&self) -> Result<()> {
        let mut f = self.faults()?;
        for id in std::mem::take(&mut f.unsynced) {
            self.inner.delete(&id)?;
        }
        f.torn.clear();
        f.sync_failed = false;
        f.plan = FaultPlan::default();
        Ok(())
    }

    /// Counts one operation; fails it when the plan says so.
    fn op(&self, f: &mut Faults) -> Result<()> {
        if let Some(d) = f.plan.delay {
            std::thread::sleep(d);
        }
        let n = self.ops.fetch_add(1, Ordering::Relaxed) + 1;
        if f.plan.fail_op == Some(n) {
            f.counts.injected += 1;
            return Err(injected(&format!("operation {n}")));
        }
        Ok(())
    }

    fn read(&self, id: &ChunkId, fetch: impl FnOnce() -> Result<Vec<u8>>) -> Result<Vec<u8>> {
        let flip = {
            let mut f = self.faults()?;
            self.op(&mut f)?;
            f.reads += 1;
            if let Some(t) = f.torn.get(id) {
                return Ok(t.clone());
            }
            let flip = f.plan.flip_read == Some(f.reads);
            if flip {
                f.counts.injected += 1;
            }
            flip
        };
        let mut bytes = fetch()?;
        if flip {
            let mid = bytes.len() / 2;
            if let Some(b) = bytes.get_mut(mid) {
                *b ^= 0x40;
            }
        }
        Ok(bytes)
    }
}

impl ChunkStore for FaultStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.read(id, || self.inner.get(id))
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let torn = self.faults()?.torn.get(id).cloned();
        match torn {
            Some(t) => {
                self.faults().map(|mut f| self.op(&mut f))??;
                let start = usize::try_from(offset).unwrap_or(usize::MAX);
                Ok(t.get(start..)
                    .unwrap_or_default()
                    .iter()
                    .take(len)
                    .copied()
                    .collect())
            }
            None => self.read(id, || self.inner.get_range(id, offset, len)),
        }
    }

    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        let id = ChunkId::of(bytes);
        let mut f = self.faults()?;
        self.op(&mut f)?;
        f.puts += 1;
        if f.plan.tear_put == Some(f.puts) {
            f.counts.injected += 1;
            f.torn.insert(
                id,
                bytes.get(..bytes.len() / 2).unwrap_or_default().to_vec(),
            );
            return Err(injected(&format!("torn put of chunk {id}")));
        }
        let existed = self.inner.contains(&id)? && !f.torn.contains_key(&id);
        self.inner.put(bytes)?;
        f.torn.remove(&id);
        if !existed {
            f.unsynced.insert(id);
        }
        Ok(id)
    }

    fn sync(&self) -> Result<()> {
        let mut f = self.faults()?;
        self.op(&mut f)?;
        f.syncs += 1;
        if f.plan.fail_sync == Some(f.syncs) {
            f.counts.injected += 1;
            f.sync_failed = true;
        }
        if f.sync_failed {
            return Err(Error::new(ErrorKind::Io, "injected fault: sync failed"));
        }
        self.inner.sync()?;
        f.unsynced.clear();
        f.counts.syncs += 1;
        Ok(())
    }

    fn contains(&self, id: &ChunkId) -> Result<bool> {
        let mut f = self.faults()?;
        self.op(&mut f)?;
        Ok(f.torn.contains_key(id) || self.inner.contains(id)?)
    }

    fn size(&self, id: &ChunkId) -> Result<u64> {
        let mut f = self.faults()?;
        self.op(&mut f)?;
        match f.torn.get(id) {
            Some(t) => Ok(t.len() as u64),
            None => self.inner.size(id),
        }
    }

    fn delete(&self, id: &ChunkId) -> Result<()> {
        let mut f = self.faults()?;
        self.op(&mut f)?;
        f.torn.remove(id);
        f.unsynced.remove(id);
        self.inner.delete(id)
    }

    fn owns(&self, id: &ChunkId) -> bool {
        self.inner.owns(id)
    }

    fn list(&self) -> Result<Vec<ChunkId>> {
        let mut f = self.faults()?;
        self.op(&mut f)?;
        let mut ids = self.inner.list()?;
        ids.extend(
            f.torn
                .keys()
                .filter(|k| !ids.contains(k))
                .copied()
                .collect::<Vec<_>>(),
        );
        Ok(ids)
    }

    fn describe(&self) -> String {
        format!("fault({})", self.inner.describe())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::verify::VerifyStore;

    #[test]
    fn each_fault_happens_once_where_planned() {
        let mem = Arc::new(MemoryStore::default());
        let plan = FaultPlan {
            tear_put: Some(1),
            flip_read: Some(1),
            fail_sync: Some(2),
            ..FaultPlan::default()
        };
        let s = FaultStore::new(mem.clone(), plan);
        assert!(s.put(b"aaaa").is_err());
        let v = VerifyStore::new(Arc::new(FaultStore::new(mem.clone(), FaultPlan::default())));
        assert!(v.get(&ChunkId::of(b"aaaa")).is_err(), "nothing was stored");
        let id = s.put(b"aaaa").unwrap();
        s.sync().unwrap();
        // The one read that flips is caught by the verify layer; the next is good.
        let s = Arc::new(s);
        let v = VerifyStore::new(s.clone());
        assert!(v.get(&id).is_err());
        assert_eq!(v.get(&id).unwrap(), b"aaaa");
        s.put(b"bbbb").unwrap();
        assert!(s.sync().is_err());
        assert!(s.sync().is_err(), "a failed sync must stay failed");
        s.crash().unwrap();
        assert!(!mem.contains(&ChunkId::of(b"bbbb")).unwrap());
        assert!(mem.contains(&id).unwrap());
    }
}
