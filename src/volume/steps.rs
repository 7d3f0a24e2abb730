//! Whole-disk writers (`import`, `apply`) hand steps of up to [`STEP`] bytes to
//! [`WRITERS`] threads while they read the next: one writer at a time left a core
//! idle while it hashed and wrote its step's chunk (1.2-1.3 cores busy on 2).
//!
//! Steps must not overlap (their order of landing is not theirs of sending); a
//! caller that needs its writes durable flushes after [`Volume::write_steps`]
//! returns, which is after every step sent has been written. The first failed write
//! stops the rest: later steps are not written, and it is the error returned.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use super::Volume;
use crate::error::{Error, Result};

/// Bytes of one step at most (a buffer each).
pub const STEP: usize = 4 << 20;
/// Steps written at once, each by its own thread.
pub const WRITERS: usize = 3;

/// What a caller of [`Volume::write_steps`] sends its steps through.
pub struct Steps<'a> {
    free: &'a mpsc::Receiver<Vec<u8>>,
    jobs: mpsc::SyncSender<(u64, Vec<u8>, usize)>,
    failed: &'a Mutex<Option<Error>>,
    written: &'a AtomicU64,
}

impl Steps<'_> {
    /// A buffer of [`STEP`] bytes to fill, once one is free. An error when a write
    /// failed: stop, and [`Volume::write_steps`] returns that write's error.
    pub fn buffer(&self) -> Result<Vec<u8>> {
        let buf = self
            .free
            .recv()
            .map_err(|_| Error::internal("the step writers stopped"))?;
        if self.failed.lock().map_or(true, |f| f.is_some()) {
            return Err(Error::internal("a step's write failed"));
        }
        Ok(buf)
    }

    /// Hands `buf[..n]` (a buffer from [`Steps::buffer`]) to be written at `offset`.
    pub fn write(&self, offset: u64, buf: Vec<u8>, n: usize) -> Result<()> {
        if n > buf.len() {
            return Err(Error::internal("a step longer than its buffer"));
        }
        self.jobs
            .send((offset, buf, n))
            .map_err(|_| Error::internal("the step writers stopped"))
    }

    /// Bytes written so far (for progress).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

impl Volume {
    /// Runs `body`, whose steps ([`Steps::write`]) [`WRITERS`] threads write meanwhile;
    /// returns once every step sent is written, with the first failed write's error
    /// before `body`'s own.
    pub fn write_steps<T>(&self, body: impl FnOnce(&Steps<'_>) -> Result<T>) -> Result<T> {
        let writers = WRITERS.min(crate::cpus::available() + 1).max(1);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..writers + 1 {
            free_tx
                .send(vec![0u8; STEP])
                .map_err(|_| Error::internal("step buffers"))?;
        }
        let failed: Mutex<Option<Error>> = Mutex::new(None);
        let written = AtomicU64::new(0);
        let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>, usize)>(writers);
        let job_rx = Mutex::new(job_rx);
        let out = std::thread::scope(|s| -> Result<T> {
            let mut handles = Vec::with_capacity(writers);
            for _ in 0..writers {
                let (job_rx, free_tx, failed, written) =
                    (&job_rx, free_tx.clone(), &failed, &written);
                let spawned = crate::threads::spawn(s, move || loop {
                    let job = match job_rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    let Ok((at, buf, n)) = job else { return };
                    if failed.lock().is_ok_and(|f| f.is_none()) {
                        match self.write_at(at, buf.get(..n).unwrap_or_default()) {
                            Ok(()) => {
                                written.fetch_add(n as u64, Ordering::Relaxed);
                            }
                            Err(e) => {
                                if let Ok(mut f) = failed.lock() {
                                    f.get_or_insert(e);
                                }
                            }
                        }
                    }
                    // The caller may be waiting for a buffer: hand this one back even
                    // after a failure, so it wakes and sees it.
                    let _ = free_tx.send(buf);
                });
                match spawned {
                    Some(h) => handles.push(h),
                    None => break,
                }
            }
            // Only the writers hold senders now: were they all gone, a wait for a
            // buffer ends instead of hanging.
            drop(free_tx);
            if handles.is_empty() {
                return Err(Error::internal(
                    "no step writer thread could be made (is the process at its thread limit?)",
                ));
            }
            // The jobs' sender goes when `body` returns, which ends the writers once
            // they have taken every step sent.
            let steps = Steps {
                free: &free_rx,
                jobs: job_tx,
                failed: &failed,
                written: &written,
            };
            let out = body(&steps);
            // Closing the jobs' channel ends the writers once every step sent is taken.
            drop(steps);
            for h in handles {
                if h.join().is_err() {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert(Error::internal("a step writer thread panicked"));
                    }
                }
            }
            out
        });
        if let Some(e) = failed
            .into_inner()
            .map_err(|_| Error::internal("a step writer's lock was poisoned"))?
        {
            return Err(e);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Steps sent in any order land at their offsets; `written` counts them all.
    #[test]
    fn steps_sent_out_of_order_land_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::create(&dir.path().join("d.swap"), 16 << 20).unwrap();
        // Disjoint (steps must not overlap: which of two lands last is not said).
        let pieces: Vec<(u64, usize, u8)> = vec![
            (12 << 20, STEP, 1),
            (100, 5000, 2),
            (1 << 20, 3 * 4096, 3),
            ((2 << 20) + 7, 1, 4),
            ((7 << 20) + 5, STEP - 4096 + 17, 5),
        ];
        for (k, a) in pieces.iter().enumerate() {
            for b in &pieces[k + 1..] {
                assert!(
                    a.0 + a.1 as u64 <= b.0 || b.0 + b.1 as u64 <= a.0,
                    "overlap"
                );
            }
        }
        let total = vol
            .write_steps(|w| {
                for &(off, n, byte) in &pieces {
                    let mut buf = w.buffer()?;
                    buf[..n].fill(byte);
                    w.write(off, buf, n)?;
                }
                Ok(pieces.iter().map(|p| p.1 as u64).sum::<u64>())
            })
            .unwrap();
        let mut model = vec![0u8; 16 << 20];
        for &(off, n, byte) in &pieces {
            model[off as usize..off as usize + n].fill(byte);
        }
        let mut back = vec![0u8; 16 << 20];
        vol.read_at(0, &mut back).unwrap();
        assert!(back == model, "a step landed elsewhere");
        assert_eq!(total, 5000 + STEP as u64 * 2 + 3 * 4096 + 1 - 4096 + 17);
        // With no writer thread to be had, a clear error instead of a wait forever.
        let e = crate::threads::with_no_threads(|| vol.write_steps(|w| w.buffer().map(drop)))
            .unwrap_err();
        assert!(e.to_string().contains("thread limit"), "{e}");
    }

    /// The first failed write is the error returned (not the caller's "stop"), and the
    /// caller is told to stop at its next buffer.
    #[test]
    fn the_first_failed_write_stops_the_caller_and_is_its_error() {
        let dir = tempfile::tempdir().unwrap();
        let vol = Volume::create(&dir.path().join("d.swap"), 8 << 20).unwrap();
        let mut asked = 0;
        let e = vol
            .write_steps(|w| {
                // Past the end of the disk: the write fails.
                let buf = w.buffer()?;
                w.write(8 << 20, buf, 4096)?;
                for i in 0..100u64 {
                    asked += 1;
                    let buf = w.buffer()?;
                    w.write((i % 2) * STEP as u64, buf, STEP)?;
                }
                Ok(())
            })
            .unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(asked < 100, "the caller was never told to stop");
    }
}
