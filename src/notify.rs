//! The one wait/wake protocol every synchronization primitive uses.
//!
//! Shared memory is the only source of truth; kernel objects are doorbells. A *wait channel* is
//! three 32-bit words in a segment — `seq` (bumped on every change that can satisfy a waiter),
//! `sync_waiters` and `async_waiters` — plus one eventfd shared by every process holding the
//! primitive (reliability-design.md §2).
//!
//! - **notify**: change the state, `fence(SeqCst)`, then bump `seq` and `FUTEX_WAKE` only if a
//!   blocking waiter is counted, and ring the eventfd only if an async waiter is counted. Nobody
//!   waiting costs no system call and no write to a shared word.
//! - **blocking wait**: count ourselves in, `fence(SeqCst)`, read `seq`, check the state, and
//!   `FUTEX_WAIT` on `seq` (shared key) with a bounded timeout; re-check on every wake.
//! - **async wait**: count ourselves in, `fence(SeqCst)`, check, await the eventfd's readiness
//!   through tokio, clear it, re-check. Nobody ever reads the eventfd (a read in one process
//!   would make another process miss its wake-up). A drop guard uncounts a cancelled waiter.
//! - every wait also re-checks on a safety timer, because a notifier can die between its state
//!   change and its ring.
//!
//! The fences pair up as in Dekker's algorithm: either the notifier sees the waiter's count (and
//! wakes it), or the waiter sees the notifier's state change (and does not sleep).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use crate::shm::SharedMemory;
use crate::shm::header::HEADER_SIZE;
use crate::sys::eventfd::{self, AsyncDoorbell};
use crate::sys::futex;
use crate::sys::mapping::Words32;

/// Bytes a wait channel occupies in its segment.
pub(crate) const CHANNEL_SIZE: usize = 16;

/// Longest a waiter sleeps without re-checking the state.
pub(crate) const SAFETY_RECHECK: Duration = Duration::from_secs(1);

/// A wait channel: three words at `base` in a segment's mapping, and the doorbell.
#[derive(Debug)]
pub(crate) struct WaitChannel {
    /// `seq`, `sync_waiters`, `async_waiters`.
    words: Words32<3>,
    doorbell: OwnedFd,
    registered: OnceLock<Option<AsyncDoorbell>>,
}

/// The two halves of the handshake, written once over any counter and fence so the same code
/// runs on shared memory and under the loom model checker.
pub(crate) mod handshake {
    /// A 32-bit counter word. `add` is a release operation and `get` an acquire one, so a
    /// waiter that reads a new `seq` also sees the state change made before it; the fences
    /// order the counters against the state checks.
    pub(crate) trait Counter {
        fn add(&self);
        fn get(&self) -> u32;
    }

    /// Waiter side, before checking the state: count in, then a full fence.
    pub(crate) fn announce(waiters: &impl Counter, fence: impl Fn()) {
        waiters.add();
        fence();
    }

    /// Notifier side, after changing the state: a full fence, then — only if a waiter is
    /// counted — bump `seq` and wake. With nobody waiting this touches no shared word at all:
    /// a waiter that counted itself in after our fence reads the new state instead of sleeping,
    /// and one that counted in before it is seen here.
    pub(crate) fn after_change(
        seq: &impl Counter,
        waiters: &impl Counter,
        fence: impl Fn(),
        wake: impl FnOnce(),
    ) {
        fence();
        if waiters.get() > 0 {
            seq.add();
            wake();
        }
    }
}

impl handshake::Counter for AtomicU32 {
    fn add(&self) {
        self.fetch_add(1, Ordering::AcqRel);
    }
    fn get(&self) -> u32 {
        self.load(Ordering::Acquire)
    }
}

fn full_fence() {
    fence(Ordering::SeqCst);
}

/// Counts a waiter in for as long as it lives.
struct Counted<'a>(&'a AtomicU32);

impl<'a> Counted<'a> {
    fn new(counter: &'a AtomicU32) -> Self {
        handshake::announce(counter, full_fence);
        Counted(counter)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        // Never below zero, even if a hostile peer zeroed the word meanwhile.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
    }
}

impl WaitChannel {
    /// A channel over the words at data offset `base` of `shm` (checked to be in range) and
    /// `doorbell`.
    pub(crate) fn new(shm: &SharedMemory, base: usize, doorbell: OwnedFd) -> crate::Result<Self> {
        Ok(WaitChannel {
            words: Words32::new(shm.mapping(), HEADER_SIZE + base)?,
            doorbell,
            registered: OnceLock::new(),
        })
    }

    /// The doorbell, for sending the channel to another process.
    pub(crate) fn doorbell(&self) -> std::os::fd::BorrowedFd<'_> {
        self.doorbell.as_fd()
    }

    #[inline]
    fn word(&self, index: usize) -> &AtomicU32 {
        self.words.get(index)
    }

    fn seq(&self) -> &AtomicU32 {
        self.word(0)
    }

    /// How many waiters are counted in (blocking, async), for tests.
    pub(crate) fn waiters(&self) -> (u32, u32) {
        (
            self.word(1).load(Ordering::Relaxed),
            self.word(2).load(Ordering::Relaxed),
        )
    }

    /// Wakes every waiter, in every process, after a state change.
    #[inline]
    pub(crate) fn notify(&self) {
        self.notify_with(full_fence);
    }

    /// [`notify`](Self::notify) for a caller that has executed a `SeqCst` fence since its state
    /// change (releasing a lock ends with one): the handshake needs *a* full fence between the
    /// change and the reading of the waiter counts, and a second one would only cost time.
    #[inline]
    pub(crate) fn notify_after_fence(&self) {
        self.notify_with(|| {});
    }

    #[inline]
    fn notify_with(&self, fence: impl Fn()) {
        handshake::after_change(self.seq(), self.word(1), fence, || {
            futex::wake(self.seq(), u32::MAX);
        });
        // `seq` moved once above; the async side only needs its own count checked.
        if handshake::Counter::get(self.word(2)) > 0 {
            eventfd::ring(self.doorbell.as_fd());
        }
    }

    fn bell(&self) -> Option<&AsyncDoorbell> {
        self.registered
            .get_or_init(|| AsyncDoorbell::register(self.doorbell.as_fd()).ok())
            .as_ref()
    }

    /// Waits until `ready` returns `Some`, at most until `deadline`; re-checks at least every
    /// `recheck`. `None` when the deadline passed first.
    ///
    /// Cancel-safe: dropping the future only uncounts the waiter; notifications are broadcast,
    /// so there is no wake-up to pass on.
    pub(crate) async fn wait<T>(
        &self,
        mut ready: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        recheck: Duration,
    ) -> Option<T> {
        if let Some(v) = ready() {
            return Some(v);
        }
        let _counted = Counted::new(self.word(2));
        let bell = self.bell();
        loop {
            if let Some(v) = ready() {
                return Some(v);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return None;
            }
            let mut until = now + recheck.min(SAFETY_RECHECK);
            if let Some(d) = deadline {
                until = until.min(d);
            }
            let sleep = tokio::time::sleep_until(until.into());
            tokio::pin!(sleep);
            match bell {
                Some(bell) => {
                    tokio::select! {
                        rung = bell.rung() => {
                            // A doorbell whose reactor is gone (the handle outlived the runtime
                            // it was first awaited in) fails at once: fall back to the timer
                            // rather than spin.
                            if rung.is_err() {
                                sleep.await;
                            }
                        }
                        _ = &mut sleep => {}
                    }
                }
                // No reactor registration (out of fds): fall back to the safety timer.
                None => sleep.await,
            }
        }
    }

    /// [`wait`](Self::wait) for threads: sleeps on the futex.
    pub(crate) fn wait_blocking<T>(
        &self,
        mut ready: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        recheck: Duration,
    ) -> Option<T> {
        if let Some(v) = ready() {
            return Some(v);
        }
        let _counted = Counted::new(self.word(1));
        loop {
            let seen = self.seq().load(Ordering::Acquire);
            if let Some(v) = ready() {
                return Some(v);
            }
            let now = Instant::now();
            let mut timeout = recheck.min(SAFETY_RECHECK);
            if let Some(d) = deadline {
                if d <= now {
                    return None;
                }
                timeout = timeout.min(d - now);
            }
            futex::wait(self.seq(), seen, Some(timeout));
        }
    }
}

/// Loom models of the handshake (run with `RUSTFLAGS="--cfg tokio_multiprocessing_loom"
/// cargo test --release --lib loom`): threads stand in for processes, a mutex and condvar for
/// the futex. With the fences no interleaving loses the wake-up; without them loom finds one
/// (experiment L1 of reliability-design.md).
#[cfg(all(test, tokio_multiprocessing_loom))]
mod loom_tests {
    use super::handshake::{self, Counter};
    use loom::sync::atomic::{AtomicU32, Ordering, fence};
    use loom::sync::{Arc, Condvar, Mutex};

    struct Word(AtomicU32);

    impl Counter for Word {
        fn add(&self) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
        fn get(&self) -> u32 {
            self.0.load(Ordering::Acquire)
        }
    }

    struct Shared {
        state: AtomicU32,
        seq: Word,
        waiters: Word,
        futex: Mutex<()>,
        woken: Condvar,
    }

    fn model(fenced: bool) {
        loom::model(move || {
            let fence_fn = move || {
                if fenced {
                    fence(Ordering::SeqCst);
                }
            };
            let s = Arc::new(Shared {
                state: AtomicU32::new(0),
                seq: Word(AtomicU32::new(0)),
                waiters: Word(AtomicU32::new(0)),
                futex: Mutex::new(()),
                woken: Condvar::new(),
            });
            let notifier = {
                let s = s.clone();
                loom::thread::spawn(move || {
                    s.state.store(1, Ordering::Relaxed);
                    handshake::after_change(&s.seq, &s.waiters, fence_fn, || {
                        let _g = s.futex.lock().unwrap();
                        s.woken.notify_all();
                    });
                })
            };
            // The waiter: announce, read seq, check, then FUTEX_WAIT(seq == seen).
            handshake::announce(&s.waiters, fence_fn);
            let seen = s.seq.get();
            if s.state.load(Ordering::Relaxed) == 0 {
                let mut g = s.futex.lock().unwrap();
                while s.seq.get() == seen {
                    g = s.woken.wait(g).unwrap();
                }
            }
            notifier.join().unwrap();
        });
    }

    #[test]
    fn loom_no_lost_wakeup_with_fences() {
        model(true);
    }

    #[test]
    fn loom_lost_wakeup_is_found_without_fences() {
        let found = std::panic::catch_unwind(|| model(false)).is_err();
        assert!(
            found,
            "loom should find the lost wake-up when the fences are missing"
        );
    }
}
