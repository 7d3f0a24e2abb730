//! Checks what a store returns before anyone uses it: a whole chunk must hash to its
//! id, and a range read must be exactly as long as asked. Range bytes are authenticated
//! one layer up, by the AEAD tag of the record or index node they hold (the store does
//! not know those tags). Writes pass through.

use std::sync::Arc;

use super::ChunkStore;
use crate::error::{Error, Result};
use crate::format::chunk_id::ChunkId;
use crate::format::sha512_lanes::sha512_each;

/// Whether each answer of a bulk read is a whole chunk: read, and its bytes hash to the
/// id asked (all hashed together, in SHA-512 lanes).
pub(crate) fn whole_answers(ids: &[ChunkId], got: &[Result<Vec<u8>>]) -> Vec<bool> {
    let read: Vec<&[u8]> = got
        .iter()
        .map(|r| r.as_ref().map_or(&[][..], Vec::as_slice))
        .collect();
    sha512_each(&read)
        .iter()
        .zip(ids)
        .zip(got)
        .map(|((d, id), r)| r.is_ok() && ChunkId::from_digest(d) == *id)
        .collect()
}

/// Turns each answer of a bulk read whose bytes do not hash to its id into the error
/// `mismatch` makes; errors stay as they are.
pub(crate) fn refuse_mismatches(
    ids: &[ChunkId],
    got: &mut [Result<Vec<u8>>],
    mismatch: impl Fn(&ChunkId) -> Error,
) {
    let whole = whole_answers(ids, got);
    for ((r, id), ok) in got.iter_mut().zip(ids).zip(whole) {
        if r.is_ok() && !ok {
            *r = Err(mismatch(id));
        }
    }
}

/// A store whose answers are checked.
pub struct VerifyStore {
    inner: Arc<dyn ChunkStore>,
}

impl VerifyStore {
    /// Checks everything `inner` returns.
    pub fn new(inner: Arc<dyn ChunkStore>) -> Self {
        Self { inner }
    }
}

impl VerifyStore {
    fn mismatch(&self, id: &ChunkId) -> Error {
        Error::corrupt(format!(
            "chunk {id} from {}: contents do not match its name",
            self.inner.describe()
        ))
    }
}

impl ChunkStore for VerifyStore {
    fn get(&self, id: &ChunkId) -> Result<Vec<u8>> {
        let bytes = self.inner.get(id)?;
        if ChunkId::of(&bytes) != *id {
            return Err(self.mismatch(id));
        }
        Ok(bytes)
    }

    fn get_many(&self, ids: &[ChunkId]) -> Vec<Result<Vec<u8>>> {
        let mut got = self.inner.get_many(ids);
        refuse_mismatches(ids, &mut got, |id| self.mismatch(id));
        got
    }

    fn get_range(&self, id: &ChunkId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let bytes = self.inner.get_range(id, offset, len)?;
        if bytes.len() != len {
            return Err(Error::corrupt(format!(
                "chunk {id} from {}: asked for {len} bytes at {offset}, got {}",
                self.inner.describe(),
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    fn read_verified(
        &self,
        id: &ChunkId,
        offset: u64,
        len: usize,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        // The reader's check knows the bytes, not where they came from: name it.
        self.inner.read_verified(id, offset, len, &mut |b| {
            accept(b).map_err(|e| e.context(format!("chunk {id} from {}", self.inner.describe())))
        })
    }
    fn put(&self, bytes: &[u8]) -> Result<ChunkId> {
        self.inner.put(bytes)
    }
    fn put_hashed(&self, id: ChunkId, bytes: &[u8]) -> Result<ChunkId> {
        self.inner.put_hashed(id, bytes)
    }
    fn sync(&self) -> Result<()> {
        self.inner.sync()
    }
    fn contains(&self, id: &ChunkId) -> Result<bool> {
        self.inner.contains(id)
    }
    /// Returns no bytes, so there is nothing to check.
    fn warm_whole(&self, id: &ChunkId) -> Result<()> {
        self.inner.warm_whole(id)
    }
    fn size(&self, id: &ChunkId) -> Result<u64> {
        self.inner.size(id)
    }
    fn owns(&self, id: &ChunkId) -> bool {
        self.inner.owns(id)
    }
    fn delete(&self, id: &ChunkId) -> Result<()> {
        self.inner.delete(id)
    }
    fn list(&self) -> Result<Vec<ChunkId>> {
        self.inner.list()
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn checks_names(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn chunks_got_together_are_each_checked_against_their_name() {
        let mem = Arc::new(MemoryStore::default());
        let ids: Vec<ChunkId> = (0..11u8)
            .map(|i| mem.put(&vec![i; 1000 + 300 * usize::from(i)]).unwrap())
            .collect();
        for bad in [2usize, 7] {
            mem.overwrite(&ids[bad], vec![0xee; 500]).unwrap();
        }
        let missing = ChunkId::of(b"never stored");
        let mut asked = ids.clone();
        asked.push(missing);
        let v = VerifyStore::new(mem);
        let got = v.get_many(&asked);
        assert_eq!(got.len(), asked.len());
        for (i, r) in got.iter().enumerate() {
            match i {
                2 | 7 => {
                    let e = r.as_ref().unwrap_err();
                    assert!(e.to_string().contains("do not match its name"), "{e}");
                }
                11 => assert!(r.is_err(), "a missing chunk is an error"),
                _ => assert_eq!(r.as_ref().unwrap(), &vec![i as u8; 1000 + 300 * i]),
            }
        }
    }
}
