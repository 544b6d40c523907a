//! Group commit: many writers, one `fsync`.
//!
//! Every write is acknowledged only after it is on disk. Flushing once per write caps a store at
//! one write per `fsync`, however many writers wait. Here a writer takes a ticket *after* its
//! write is in sled's log; the first writer to find no flush running becomes the leader, notes
//! the newest ticket, and flushes once for every write up to it, while later writers queue for
//! the next round. Nothing is ever acknowledged before a flush that started after it was written
//! has succeeded: a failed flush advances nothing, and the writers it would have covered each
//! try again (one at a time, as leaders), so each gets its own error or its own success.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// Tickets handed out: one per write whose data is in the log.
    issued: u64,
    /// Every ticket up to this one is on disk.
    flushed: u64,
    /// A leader is flushing now.
    flushing: bool,
}

/// Coordinates the flushes of one store.
#[derive(Debug, Default)]
pub(crate) struct GroupFlush {
    state: Mutex<State>,
    done: Condvar,
}

impl GroupFlush {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns once everything written before the call is durable, calling `flush` (which must
    /// make every write completed before it started durable) as the leader when needed.
    pub(crate) fn wait_durable<E>(&self, flush: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.lock();
        state.issued += 1;
        let ticket = state.issued;
        loop {
            if state.flushed >= ticket {
                return Ok(());
            }
            if !state.flushing {
                state.flushing = true;
                let target = state.issued;
                drop(state);
                let result = flush();
                state = self.lock();
                state.flushing = false;
                if result.is_ok() {
                    state.flushed = state.flushed.max(target);
                }
                self.done.notify_all();
                return result;
            }
            state = self.done.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// How many flushes have covered how many tickets, for tests.
    #[cfg(test)]
    fn flushed(&self) -> u64 {
        self.lock().flushed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier};

    #[test]
    fn one_writer_flushes_once_per_write() {
        let group = GroupFlush::default();
        let calls = AtomicUsize::new(0);
        for _ in 0..3 {
            group
                .wait_durable(|| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), ()>(())
                })
                .expect("flushed");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(group.flushed(), 3);
    }

    #[test]
    fn concurrent_writers_share_flushes_and_none_returns_before_its_write_is_flushed() {
        // The "disk": `written` counts writes in the log, `durable` what the last flush covered.
        let group = Arc::new(GroupFlush::default());
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicUsize::new(0));
        let writers = 16;
        let rounds = 50;
        let start = Arc::new(Barrier::new(writers));
        let threads: Vec<_> = (0..writers)
            .map(|_| {
                let (group, written, durable, flushes, start) = (
                    Arc::clone(&group),
                    Arc::clone(&written),
                    Arc::clone(&durable),
                    Arc::clone(&flushes),
                    Arc::clone(&start),
                );
                std::thread::spawn(move || {
                    start.wait();
                    for _ in 0..rounds {
                        let mine = written.fetch_add(1, Ordering::SeqCst) + 1;
                        group
                            .wait_durable(|| {
                                let upto = written.load(Ordering::SeqCst);
                                // A slow fsync, so writers pile up behind it.
                                std::thread::yield_now();
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                durable.fetch_max(upto, Ordering::SeqCst);
                                flushes.fetch_add(1, Ordering::SeqCst);
                                Ok::<(), ()>(())
                            })
                            .expect("flushed");
                        // Acknowledged: whatever I wrote must be covered by a finished flush.
                        assert!(durable.load(Ordering::SeqCst) >= mine);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("writer");
        }
        let total = (writers * rounds) as u64;
        assert_eq!(group.flushed(), total);
        let flushes = flushes.load(Ordering::SeqCst);
        assert!(
            flushes < writers * rounds,
            "writers waiting together share a flush ({flushes} flushes for {total} writes)"
        );
    }

    #[test]
    fn a_failed_flush_acknowledges_nothing_and_the_next_writer_retries() {
        let group = GroupFlush::default();
        let failing = group.wait_durable(|| Err("disk full"));
        assert_eq!(failing, Err("disk full"));
        assert_eq!(group.flushed(), 0);
        // The next write's flush covers the earlier one too once it succeeds.
        group.wait_durable(|| Ok::<(), &str>(())).expect("flushed");
        assert_eq!(group.flushed(), 2);
    }
}
