//! An ordered list of stores, the local data folder first: reads try each in turn and
//! take the first good answer; writes, syncs and deletes go to the first only, so a
//! published copy further down the list never changes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::ChunkStore;
use crate::error::{Error, ErrorKind, Result};
use crate::format::chunk_id::ChunkId;

/// Stores tried in order.
pub struct FallbackStore {
    stores: Vec<Arc<dyn ChunkStore>>,
    /// Chunks no store could give that were already warned about: a reader retries
    /// and a disk reads a chunk many times, and one warning per chunk says it.
    warned: Mutex<HashSet<ChunkId>>,
}

/// Chunks remembered as warned about before the set starts over.
const WARNED_AT_MOST: usize = 4096;

impl FallbackStore {
    /// `stores[0]` takes every write; the rest are read when it lacks a chunk or fails.
    pub fn new(stores: Vec<Arc<dyn ChunkStore>>) -> Result<Self> {
        if stores.is_empty() {
            return Err(Error::internal("a fallback list needs at least one store"));
        }
        Ok(Self {
            stores,
            warned: Mutex::default(),
        })
    }

    /// True the first time `id` could not be had (or once the set started over).
    fn first_failure(&self, id: &ChunkId) -> bool {
        let Ok(mut warned) = self.warned.lock() else {
            return true;
        };
        if warned.len() >= WARNED_AT_MOST {
            warned.clear();
        }
        warned.insert(*id)
    }

    fn first(&self) -> Result<&Arc<dyn ChunkStore>> {
        self.stores
            .first()
            .ok_or_else(|| Error::internal("empty fallback list"))
    }

    /// Tries `f` on each store in order; the error, when all fail, names every answer.
    fn first_good<T>(
        &self,
        id: &ChunkId,
        mut f: impl FnMut(&dyn ChunkStore) -> Result<T>,
    ) -> Result<T> {
        self.first_good_of(id, |_, s| f(s))
    }

    /// [`FallbackStore::first_good`] where `answer(i, store)` gives store `i`'s
    /// answer, which a `get_many` may already have had: each store is asked once.
    fn first_good_of<T>(
        &self,
        id: &ChunkId,
        mut answer: impl FnMut(usize, &dyn ChunkStore) -> Result<T>,
    ) -> Result<T> {
        if let [only] = self.stores.as_slice() {
            // Nothing to choose between: its own error says it all (the fallback
            // around this one names the source).
            return answer(0, only.as_ref());
        }
        let mut answers = Vec::new();
        let mut kind = ErrorKind::NotFound;
        for (i, s) in self.stores.iter().enumerate() {
            match answer(i, s.as_ref()) {
                Ok(v) => {
                    if i > 0 {
                        tracing::debug!(chunk = %id, source = %s.describe(), "read from a fallback");
                    }
                    return Ok(v);
                }
                Err(e) => {
                    // The most telling kind wins: corrupt over I/O over not found.
                    kind = match (kind, e.kind()) {
                        (_, ErrorKind::Corrupt) | (ErrorKind::Corrupt, _) => ErrorKind::Corrupt,
                        (ErrorKind::NotFound, k) => k,
                        (k, _) => k,
                    };
                    // Each store's errors name it (its path or URL).
                    answers.push(e.to_string());
                }
            }
        }
        if self.stores.len() > 1 && self.first_failure(id) {
            tracing::warn!(chunk = %id, answers = %answers.join("; "), "no source could give the chunk");
        }
        Err(Error::new(
            kind,
            format!("chunk {id}: {}", answers.join("; ")),
        ))
    }
}

impl ChunkStore for FallbackStore {
    /// Each store answers together for the chunks the stores before it could not
    /// give (so a store that checks hashes checks them in lanes), and each chunk's
    /// answer is then taken as `get` takes it, every store asked once.
    fn get_many(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>>> {
        // answers[k][i]: store i's answer for ids[k], where it was asked.
        let mut answers: Vec<Vec<Option<Result<Vec<u8>>>>> =
            ids.iter().map(|_| Vec::new()).collect();
        let mut open: Vec<usize> = (0..ids.len()).collect();
        for s in &self.stores {
            if open.is_empty() {
                break;
            }
            let ask: Vec<ChunkId> = open.iter().filter_map(|&k| ids.get(k).copied()).collect();
            let mut got = s.get_many(&ask).into_iter();
            let mut still = Vec::new();
            for k in open {
                let answer = got.next().unwrap_or_else(|| {
                    Err(Error::internal("a store answered fewer chunks than asked"))
                });
                if answer.is_err() {
                    still.push(k);
                }
                if let Some(a) = answers.get_mut(k) {
                    a.push(Some(answer));
                }
            }
            open = still;
        }
        ids.iter()
            .zip(answers)
            .map(|(id, mut mine)| {
                self.first_good_of(id, |i, s| match mine.get_mut(i).and_then(Option::take) {
                    Some(a) => a,
                    None => s.get(id),
                })
            })
            .collect()
    }

    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        self.first_good(id, |s| s.get(id))
    }
    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.first_good(id, |s| s.get_range(id, offset, len))
    }
    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.first_good(id, |s| s.read_verified(id, offset, len, &mut *accept))
    }
    fn warm_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<()> {
        self.first_good(id, |s| s.warm_range(id, offset, len))
    }
    fn warm_whole(&self, id: &ChunkId) -> Result<()> {
        self.first_good(id, |s| s.warm_whole(id))
    }
    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        self.first()?.put(bytes)
    }
    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        self.first()?.put_hashed(id, bytes)
    }
    fn sync(&self) -> Result<()> {
        self.first()?.sync()
    }
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        for s in &self.stores {
            if s.contains(id)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
    fn size(&self, id: &ChunkId) -> Result<u64> {
        self.first_good(id, |s| s.size(id))
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.first()?.delete(id)
    }
    /// Only the first store's chunks are this disk's to free.
    fn owns(&self, id: &ChunkId) -> bool {
        self.first().is_ok_and(|s| s.owns(id))
    }
    /// The chunks of the first store (the ones this disk may delete).
    fn list(&self) -> Result<Vec<ChunkId>> {
        self.first()?.list()
    }
    /// Every answer is some store's answer.
    fn checks_names(&self) -> bool {
        self.stores.iter().all(|s| s.checks_names())
    }
    fn describe(&self) -> String {
        self.stores
            .iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join(" > ")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::recording::RecordingStore;
    use crate::store::verify::VerifyStore;

    /// Chunks got together: each from the first store that gives it whole, each store
    /// asked once for what the stores before it could not give, and a chunk nobody
    /// has answered with every store's answer.
    #[test]
    fn chunks_got_together_come_from_the_first_store_that_gives_each_whole() {
        let (a, b, c) = (
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryStore::default()),
        );
        let only_a = a.put(b"in a only").unwrap();
        let damaged_in_b = b.put(b"damaged in b, whole in c").unwrap();
        b.overwrite(&damaged_in_b, b"something else".to_vec())
            .unwrap();
        c.put(b"damaged in b, whole in c").unwrap();
        let only_c = c.put(b"in c only").unwrap();
        let nowhere = ChunkId::of(b"nowhere");
        let rec: Vec<Arc<RecordingStore>> = [a, b, c]
            .into_iter()
            .map(|m| {
                Arc::new(RecordingStore::new(Arc::new(VerifyStore::new(
                    m as Arc<dyn ChunkStore>,
                ))))
            })
            .collect();
        let f = FallbackStore::new(
            rec.iter()
                .map(|r| r.clone() as Arc<dyn ChunkStore>)
                .collect(),
        )
        .unwrap();
        assert!(f.checks_names());
        let ids = [only_a, damaged_in_b, nowhere, only_c];
        let got = f.get_many(&ids);
        assert_eq!(got[0].as_ref().unwrap(), b"in a only");
        assert_eq!(got[1].as_ref().unwrap(), b"damaged in b, whole in c");
        let e = got[2].as_ref().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(got[3].as_ref().unwrap(), b"in c only");
        // a: all four; b: the three a lacked; c: the three b could not give.
        let asked: Vec<u64> = rec.iter().map(|r| r.gets()).collect();
        assert_eq!(asked, [4, 3, 3]);
        // No store has it whole: the damaged copy's refusal is the most telling answer.
        let ba = FallbackStore::new(vec![
            rec[1].clone() as Arc<dyn ChunkStore>,
            rec[0].clone() as Arc<dyn ChunkStore>,
        ])
        .unwrap();
        let e = ba.get_many(&[damaged_in_b]).pop().unwrap().unwrap_err();
        assert!(e.to_string().contains("do not match its name"), "{e}");
        assert_eq!(e.kind(), ErrorKind::Corrupt, "{e}");
    }
}
