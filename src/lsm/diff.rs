//! Which blocks differ between two disk states, from the index alone: each state's
//! levels are merged into its newest entry per block, and the two ordered streams are
//! joined. Two entries are the same when both read as zeros (a hole, a zero marker) or
//! both point at a record with the same tag (sealing is deterministic under one key, so
//! equal tags mean equal blocks); no data chunk is read.

use crate::error::Result;
use crate::lsm::ctx::Ctx;
use crate::lsm::entry::Loc;
use crate::lsm::merge::{Merge, Source};
use crate::lsm::tree::Tree;

/// `tree`'s levels under `newest`, merged from block `from` on.
fn merged<'a>(
    ctx: &'a Ctx,
    tree: &'a Tree,
    newest: Vec<(u64, Loc)>,
    from: u64,
) -> Result<Merge<'a>> {
    let newest: Vec<(u64, Loc)> = newest.into_iter().filter(|e| e.0 >= from).collect();
    let mut sources = vec![Source::Vec(newest.into_iter())];
    for run in tree.runs() {
        sources.push(Source::Run(run.seek(ctx, from)?));
    }
    Merge::new(sources)
}

/// The blocks at or past `from` whose newest entry (`pending`, sorted, over `tree`'s
/// levels) is a record, in increasing order: what a shrink drops. Reads only the index
/// nodes that cover `from` onwards.
pub fn data_blocks_from(
    ctx: &Ctx,
    tree: &Tree,
    pending: Vec<(u64, Loc)>,
    from: u64,
) -> Result<Vec<u64>> {
    let mut m = merged(ctx, tree, pending, from)?;
    let mut out = Vec::new();
    while let Some((lba, loc)) = m.next_entry()? {
        if matches!(loc, Loc::Data(_)) {
            out.push(lba);
        }
    }
    Ok(out)
}

fn same(a: &Loc, b: &Loc) -> bool {
    match (a, b) {
        (Loc::Zero, Loc::Zero) => true,
        (Loc::Data(x), Loc::Data(y)) => x.tag == y.tag,
        _ => false,
    }
}

/// Calls `changed` with each block (in increasing order) whose contents differ between
/// the states `a` and `b`; `b_pending` (sorted) are entries newer than `b`'s levels
/// (the head's memtable).
pub fn changed_blocks(
    ctx: &Ctx,
    a: &Tree,
    b: &Tree,
    b_pending: Vec<(u64, Loc)>,
    changed: &mut dyn FnMut(u64),
) -> Result<()> {
    let (mut ma, mut mb) = (
        merged(ctx, a, Vec::new(), 0)?,
        merged(ctx, b, b_pending, 0)?,
    );
    let (mut x, mut y) = (ma.next_entry()?, mb.next_entry()?);
    loop {
        match (x, y) {
            (None, None) => return Ok(()),
            (Some((la, ea)), Some((lb, eb))) if la == lb => {
                if !same(&ea, &eb) {
                    changed(la);
                }
                x = ma.next_entry()?;
                y = mb.next_entry()?;
            }
            (Some((la, ea)), other) if other.is_none_or(|(lb, _)| la < lb) => {
                if matches!(ea, Loc::Data(_)) {
                    changed(la);
                }
                x = ma.next_entry()?;
            }
            (_, Some((lb, eb))) => {
                if matches!(eb, Loc::Data(_)) {
                    changed(lb);
                }
                y = mb.next_entry()?;
            }
            (Some(_), None) => x = ma.next_entry()?,
        }
    }
}
