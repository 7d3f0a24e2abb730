//! K-way merge of sorted sources, newest first: for each block only the entry from the
//! newest source that has it survives.

use crate::error::Result;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::Loc;
use crate::lsm::run::{Cursor, Run};

/// One sorted input.
pub enum Source<'a> {
    /// Entries already in memory.
    Vec(std::vec::IntoIter<(u64, Loc)>),
    /// A stored run.
    Run(Cursor<'a>),
}

impl Source<'_> {
    /// A source over a whole run.
    pub fn run<'a>(ctx: &'a Ctx, run: &'a Run) -> Result<Source<'a>> {
        Ok(Source::Run(run.seek(ctx, 0)?))
    }
    fn next(&mut self) -> Result<Option<(u64, Loc)>> {
        match self {
            Source::Vec(it) => Ok(it.next()),
            Source::Run(c) => c.next_entry(),
        }
    }
}

/// Merges sources given newest first.
pub struct Merge<'a> {
    sources: Vec<Source<'a>>,
    heads: Vec<Option<(u64, Loc)>>,
}

impl<'a> Merge<'a> {
    /// Starts a merge.
    pub fn new(mut sources: Vec<Source<'a>>) -> Result<Self> {
        let mut heads = Vec::with_capacity(sources.len());
        for s in &mut sources {
            heads.push(s.next()?);
        }
        Ok(Self { sources, heads })
    }

    /// The next surviving entry.
    pub fn next_entry(&mut self) -> Result<Option<(u64, Loc)>> {
        let Some(min) = self.heads.iter().flatten().map(|h| h.0).min() else {
            return Ok(None);
        };
        let mut winner = None;
        for (head, src) in self.heads.iter_mut().zip(self.sources.iter_mut()) {
            if let Some((lba, loc)) = *head {
                if lba == min {
                    if winner.is_none() {
                        winner = Some((lba, loc));
                    }
                    *head = src.next()?;
                }
            }
        }
        Ok(winner)
    }
}
