//! One way to run a list of independent jobs (chunk copies, fetches) on a few threads:
//! items are taken in order, and the first failure stops every worker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// Runs `f` on every item of `items` with at most `workers` threads, taking items in
/// order; returns the first error, once every worker has stopped.
pub(super) fn run<T: Sync>(
    items: &[T],
    workers: usize,
    f: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let next = AtomicUsize::new(0);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let helpers = workers.min(items.len()).saturating_sub(1);
    crate::threads::alongside(helpers, "worker", || {
        while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
            if let Err(e) = f(item) {
                if let Ok(mut slot) = failed.lock() {
                    slot.get_or_insert(e);
                }
                next.store(items.len(), Ordering::Relaxed);
                return;
            }
        }
    })?;
    match failed
        .into_inner()
        .map_err(|_| Error::internal("a worker lock was poisoned"))?
    {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn every_item_runs_once_and_the_first_failure_stops_the_rest() {
        let items: Vec<u64> = (0..1000).collect();
        let sum = AtomicU64::new(0);
        run(&items, 8, |i| {
            sum.fetch_add(*i, Ordering::Relaxed);
            Ok(())
        })
        .unwrap();
        assert_eq!(sum.into_inner(), 999 * 1000 / 2);
        // As at a thread limit: every item on the caller.
        let sum = AtomicU64::new(0);
        crate::threads::with_no_threads(|| {
            run(&items, 8, |i| {
                sum.fetch_add(*i, Ordering::Relaxed);
                Ok(())
            })
        })
        .unwrap();
        assert_eq!(sum.into_inner(), 999 * 1000 / 2);
        let ran = AtomicU64::new(0);
        let e = run(&items, 4, |i| {
            ran.fetch_add(1, Ordering::Relaxed);
            if *i == 10 {
                Err(Error::invalid("ten"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("ten"));
        assert!(ran.into_inner() < 1000, "workers went on after the failure");
    }
}
