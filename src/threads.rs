//! Scoped helper threads that cannot take the process down. A thread that cannot be
//! made (the process or user is at its thread limit, or out of memory for a stack)
//! leaves its share of the work to the calling thread, and a helper that panics
//! becomes an error: `std::thread::scope`'s own `spawn` panics in the first case and
//! the scope re-panics in the second, which on the checkpoint or connection threads
//! would leave writers waiting forever.

use std::thread::{Scope, ScopedJoinHandle};

use crate::error::{Error, Result};

/// `f` on a new thread of scope `s`, or `None` if no thread could be made (the
/// caller then does the work itself).
pub fn spawn<'scope, T: Send + 'scope>(
    s: &'scope Scope<'scope, '_>,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Option<ScopedJoinHandle<'scope, T>> {
    spawn_with(s, std::thread::Builder::new(), f)
}

/// [`spawn`] of a thread named `name` (seen in profiles and `top -H`).
pub fn spawn_named<'scope, T: Send + 'scope>(
    s: &'scope Scope<'scope, '_>,
    name: &str,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Option<ScopedJoinHandle<'scope, T>> {
    spawn_with(s, std::thread::Builder::new().name(name.into()), f)
}

fn spawn_with<'scope, T: Send + 'scope>(
    s: &'scope Scope<'scope, '_>,
    builder: std::thread::Builder,
    f: impl FnOnce() -> T + Send + 'scope,
) -> Option<ScopedJoinHandle<'scope, T>> {
    if refused() {
        return None;
    }
    match builder.spawn_scoped(s, f) {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::warn!("no helper thread could be made ({e}); the work runs on the caller");
            None
        }
    }
}

/// What the thread of `h` returned; a panic in it is an error naming `what`.
pub fn join<T>(h: ScopedJoinHandle<'_, Result<T>>, what: &str) -> Result<T> {
    h.join()
        .unwrap_or_else(|_| Err(Error::internal(format!("a {what} thread panicked"))))
}

/// `f(k, group)` of each group `k` of `per` items of `items`, in order: the first
/// group on the calling thread, each other on a thread of its own (or on the caller
/// after the first, if its thread cannot be made). Every group finishes before the
/// first error (in group order) is returned.
pub fn in_groups<T: Sync, R: Send>(
    items: &[T],
    per: usize,
    what: &str,
    f: impl Fn(usize, &[T]) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let f = &f;
    let mut groups = items.chunks(per.max(1)).enumerate();
    let Some((_, first)) = groups.next() else {
        return Ok(Vec::new());
    };
    let results: Vec<Result<R>> = std::thread::scope(|s| {
        let others: Vec<_> = groups
            .map(|(k, g)| (k, g, spawn(s, move || f(k, g))))
            .collect();
        let mut results = vec![f(0, first)];
        results.extend(others.into_iter().map(|(k, g, h)| match h {
            Some(h) => join(h, what),
            None => f(k, g),
        }));
        results
    });
    results.into_iter().collect()
}

/// Runs `worker` on the calling thread and on up to `helpers` more threads at once,
/// for workers that take jobs from a shared queue until it is empty: the queue is
/// emptied even when no helper can be made. Helpers are named `mindcastle-{what}`; a
/// helper's panic is an error naming `what`, returned once every worker has stopped.
pub fn alongside(helpers: usize, what: &str, worker: impl Fn() + Sync) -> Result<()> {
    let worker = &worker;
    let name = format!("mindcastle-{what}");
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..helpers)
            .map_while(|_| {
                spawn_named(s, &name, move || {
                    worker();
                    Ok(())
                })
            })
            .collect();
        worker();
        // Every helper joined before the first error: one left unjoined having
        // panicked would make the scope panic.
        let joined: Vec<Result<()>> = handles.into_iter().map(|h| join(h, what)).collect();
        joined.into_iter().collect()
    })
}

#[cfg(test)]
thread_local! {
    /// Set by tests: this thread's helpers are refused, as at a thread limit.
    static REFUSE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn refused() -> bool {
    REFUSE.with(|r| r.get())
}

#[cfg(not(test))]
fn refused() -> bool {
    false
}

/// Runs `f` as if no thread could be made from this thread (tests of the fallbacks).
#[cfg(test)]
pub fn with_no_threads<R>(f: impl FnOnce() -> R) -> R {
    REFUSE.with(|r| r.set(true));
    let out = f();
    REFUSE.with(|r| r.set(false));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn sums(items: &[u64]) -> Result<Vec<(usize, u64)>> {
        in_groups(items, 7, "test", |k, g| Ok((k, g.iter().sum())))
    }

    #[test]
    fn groups_keep_their_order_with_threads_and_without() {
        let items: Vec<u64> = (0..50).collect();
        let want: Vec<(usize, u64)> = items
            .chunks(7)
            .enumerate()
            .map(|(k, g)| (k, g.iter().sum()))
            .collect();
        assert_eq!(sums(&items).unwrap(), want);
        assert_eq!(with_no_threads(|| sums(&items)).unwrap(), want);
        assert!(sums(&[]).unwrap().is_empty());
    }

    #[test]
    fn a_failed_or_panicking_group_is_an_error_after_every_group_ran() {
        let ran = AtomicUsize::new(0);
        let e = in_groups(&[0u8; 40], 10, "test", |k, _| {
            ran.fetch_add(1, Ordering::SeqCst);
            match k {
                1 => Err(Error::invalid("group one")),
                2 => panic!("group two"),
                _ => Ok(()),
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("group one"), "{e}");
        assert_eq!(ran.into_inner(), 4);
        let e = in_groups(&[0u8; 40], 10, "hashing", |k, _| {
            if k == 3 {
                panic!("group three");
            }
            Ok(())
        })
        .unwrap_err();
        assert!(e.to_string().contains("hashing thread panicked"), "{e}");
    }

    #[test]
    fn workers_alongside_empty_the_queue_even_with_no_helper() {
        for refuse in [false, true] {
            let next = AtomicUsize::new(0);
            let done = AtomicUsize::new(0);
            let work = || {
                while next.fetch_add(1, Ordering::SeqCst) < 1000 {
                    done.fetch_add(1, Ordering::SeqCst);
                }
            };
            let r = if refuse {
                with_no_threads(|| alongside(3, "test", work))
            } else {
                alongside(3, "test", work)
            };
            r.unwrap();
            assert_eq!(done.into_inner(), 1000, "refused: {refuse}");
        }
        let caller = std::thread::current().id();
        let e = alongside(2, "fetch", || {
            if std::thread::current().id() != caller {
                panic!("a helper");
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("fetch thread panicked"), "{e}");
    }
}
