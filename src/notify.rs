//! The one wait/wake protocol every synchronization primitive uses.
//!
//! Shared memory is the only source of truth; kernel objects are doorbells. A *wait channel* is
//! 32-bit words in a segment — `seq` (bumped on every change that can satisfy a waiter),
//! `sync_waiters` and `async_waiters` (and a time stamp) — plus one eventfd shared by every
//! process holding the primitive (reliability-design.md §2).
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
//! - a waiter killed while counted in stays counted until a notifier finds the count stale and
//!   moves it to a new epoch; live waiters count themselves in again (see [`WaitChannel`]).
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

/// How often, at most, a notifier that rings for async waiters also forgets their count, so
/// that the dead stop costing anything (see [`WaitChannel`]).
const ASYNC_RECOUNT_MS: u32 = 100;

/// How long the synchronization primitives' waiters (event, semaphore, condition, barrier)
/// check before they park: see [`WaitChannel::check_before_parking`].
pub(crate) const CHECK_BEFORE_PARKING: Duration = Duration::from_micros(20);

/// The bounded spin a waiter does before it parks: `attempt` until it gives `Some`, first with
/// backing-off pauses (1, 2, 4 … 32 apart, about 2 µs in all, so a waiter does not keep pulling
/// the other side's cache line away from it), then yielding the CPU between attempts until
/// `limit` has passed, so that on a machine with fewer free CPUs than busy processes the other
/// side gets to run instead of watching us spin. A peer that answers within `limit` costs no
/// futex or reactor wake-up (tens of µs on a small VM). Never a busy loop: it ends.
pub(crate) fn spin_until<T>(limit: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    const PAUSES: u32 = 64;
    let (mut spent, mut gap) = (0, 1);
    while spent < PAUSES {
        if let Some(v) = attempt() {
            return Some(v);
        }
        for _ in 0..gap {
            std::hint::spin_loop();
        }
        spent += gap;
        gap = (gap * 2).min(32);
    }
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(v) = attempt() {
            return Some(v);
        }
        std::thread::yield_now();
    }
    attempt()
}

/// [`spin_until`] without the pauses: `attempt` until it gives `Some`, yielding the CPU between
/// attempts, until `limit` has passed. For hand-offs where both sides wait in turn (an event
/// set, waited for, set back): the scheduler tends to put two such processes on one CPU, where
/// a waiter that pauses keeps the CPU the other side needs to make the change it waits for
/// (measured on a 2-vCPU VM: 2.1 µs per hand-off with `spin_until`'s pauses, 1.0 µs yielding
/// at once; 0.2–0.3 µs either way on two CPUs).
pub(crate) fn yield_until<T>(limit: Duration, mut attempt: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = attempt() {
            return Some(v);
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::yield_now();
    }
}

/// The safety re-check period in force: [`SAFETY_RECHECK`], or, in the crate's own test
/// builds, what [`set_safety_recheck`] set (so a test can tell a wake-up from the safety timer
/// without depending on how fast the machine is).
fn safety_recheck() -> Duration {
    #[cfg(feature = "test-hooks")]
    {
        match SAFETY_RECHECK_OVERRIDE.load(Ordering::Relaxed) {
            0 => SAFETY_RECHECK,
            ms => Duration::from_millis(ms),
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    SAFETY_RECHECK
}

#[cfg(feature = "test-hooks")]
static SAFETY_RECHECK_OVERRIDE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Sets this process's safety re-check period (test builds only).
#[cfg(feature = "test-hooks")]
pub(crate) fn set_safety_recheck(period: Duration) {
    let ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX).max(1);
    SAFETY_RECHECK_OVERRIDE.store(ms, Ordering::Relaxed);
}

/// How long a waiter that asked for `recheck` sleeps at most without re-checking.
fn recheck_period(recheck: Duration) -> Duration {
    if recheck >= SAFETY_RECHECK {
        safety_recheck()
    } else {
        recheck
    }
}

/// A waiter-count word: `epoch << COUNT_BITS | count`. A notifier that finds the count stale
/// (waiters that were SIGKILLed never uncount themselves) moves to the next epoch with a count
/// of 0; every live waiter sees the new epoch before it sleeps again and counts itself back in,
/// and a waiter leaves only the epoch it joined.
mod waiters {
    pub(super) const COUNT_BITS: u32 = 20;
    pub(super) const COUNT_MASK: u32 = (1 << COUNT_BITS) - 1;

    pub(super) fn count(word: u32) -> u32 {
        word & COUNT_MASK
    }

    pub(super) fn epoch(word: u32) -> u32 {
        word >> COUNT_BITS
    }

    /// The next epoch, nobody counted.
    pub(super) fn recounted(word: u32) -> u32 {
        epoch(word).wrapping_add(1) << COUNT_BITS
    }
}

/// A wait channel: four words at `base` in a segment's mapping, and the doorbell.
///
/// Words: `seq` (bumped by every notify that finds a waiter), the blocking and the async
/// waiter counts (see [`waiters`]), and the time the async count was last forgotten.
///
/// Counts of waiters that died are forgotten: a `FUTEX_WAKE` that woke nobody while blocking
/// waiters are counted moves their count to a new epoch, and a ring for async waiters does so
/// at most every [`ASYNC_RECOUNT_MS`]. Either way the notifier then bumps `seq` and wakes (or
/// rings) once more, so that a live waiter that was about to sleep, uncounted, notices and
/// counts itself in again; the dead never do, so their count is gone after one such notify.
#[derive(Debug)]
pub(crate) struct WaitChannel {
    words: Words32<4>,
    doorbell: OwnedFd,
    registered: OnceLock<Option<AsyncDoorbell>>,
}

const SEQ: usize = 0;
const SYNC_WAITERS: usize = 1;
const ASYNC_WAITERS: usize = 2;
const ASYNC_RECOUNTED: usize = 3;

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

/// A waiter-count word seen through the handshake: `add` counts in (in the current epoch,
/// remembering which), `get` reads the count.
struct Membership<'a> {
    word: &'a AtomicU32,
    /// The epoch we are counted in; `None` when not counted (the count was full).
    epoch: std::cell::Cell<Option<u32>>,
}

impl handshake::Counter for Membership<'_> {
    fn add(&self) {
        let joined = self
            .word
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (waiters::count(w) < waiters::COUNT_MASK).then(|| w + 1)
            });
        self.epoch.set(joined.ok().map(waiters::epoch));
    }
    fn get(&self) -> u32 {
        waiters::count(self.word.load(Ordering::Acquire))
    }
}

fn full_fence() {
    fence(Ordering::SeqCst);
}

/// Counts a waiter in for as long as it lives.
struct Counted<'a>(Membership<'a>);

impl<'a> Counted<'a> {
    fn new(word: &'a AtomicU32) -> Self {
        let member = Membership {
            word,
            epoch: std::cell::Cell::new(None),
        };
        handshake::announce(&member, full_fence);
        Counted(member)
    }

    /// Before sleeping again: counts us back in if a notifier forgot the count since we joined
    /// (followed by a full fence, as any counting in). Call it *after* reading `seq` for a
    /// futex wait, so that a forgetting notifier's second bump makes that wait return at once.
    fn rejoin_if_forgotten(&self) {
        let now = waiters::epoch(self.0.word.load(Ordering::Acquire));
        if self.0.epoch.get() != Some(now) {
            handshake::announce(&self.0, full_fence);
        }
    }

    /// How long to sleep at most: a waiter the count had no room for is never woken by a
    /// notifier, so it polls.
    fn cap(&self, timeout: Duration) -> Duration {
        if self.0.epoch.get().is_some() {
            timeout
        } else {
            timeout.min(Duration::from_millis(10))
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let Some(joined) = self.0.epoch.get() else {
            return;
        };
        // Only from the epoch we joined: a forgotten count is not ours to lower any more.
        let _ = self
            .0
            .word
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (waiters::epoch(w) == joined && waiters::count(w) > 0).then(|| w - 1)
            });
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
        self.word(SEQ)
    }

    /// How many waiters are counted in (blocking, async); counts may include dead waiters until
    /// a notifier forgets them.
    pub(crate) fn waiters(&self) -> (u32, u32) {
        (
            waiters::count(self.word(SYNC_WAITERS).load(Ordering::Relaxed)),
            waiters::count(self.word(ASYNC_WAITERS).load(Ordering::Relaxed)),
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
        let sync = Membership {
            word: self.word(SYNC_WAITERS),
            epoch: std::cell::Cell::new(None),
        };
        handshake::after_change(self.seq(), &sync, fence, || {
            if futex::wake_all(self.seq()) == 0 {
                self.forget_sync_waiters();
            }
        });
        // `seq` moved once above; the async side only needs its own count checked.
        let async_waiters = self.word(ASYNC_WAITERS).load(Ordering::Acquire);
        if waiters::count(async_waiters) > 0 {
            eventfd::ring(self.doorbell.as_fd());
            self.maybe_forget_async_waiters(async_waiters);
        }
    }

    /// Blocking waiters are counted but none was asleep: forget the count (they may all be
    /// dead) unless it changed meanwhile, then bump and wake once more, so a live waiter that
    /// was about to sleep either sees `seq` move or is woken, and counts itself in again.
    #[cold]
    fn forget_sync_waiters(&self) {
        let word = self.word(SYNC_WAITERS);
        let seen = word.load(Ordering::Acquire);
        if waiters::count(seen) == 0
            || word
                .compare_exchange(
                    seen,
                    waiters::recounted(seen),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        self.seq().fetch_add(1, Ordering::AcqRel);
        futex::wake_all(self.seq());
    }

    /// After a ring for async waiters: at most every [`ASYNC_RECOUNT_MS`], forget their count
    /// and ring again. The ring just made wakes every parked one, and the second ring (after
    /// the count is forgotten) reaches any that cleared the first before noticing; each counts
    /// itself in again before it parks once more.
    #[inline]
    fn maybe_forget_async_waiters(&self, seen: u32) {
        let stamp = self.word(ASYNC_RECOUNTED);
        let last = stamp.load(Ordering::Relaxed);
        let now = crate::sys::monotonic_millis();
        if now.wrapping_sub(last) < ASYNC_RECOUNT_MS {
            return;
        }
        self.forget_async_waiters(seen, last, now);
    }

    #[cold]
    fn forget_async_waiters(&self, seen: u32, last: u32, now: u32) {
        // One notifier per period does it.
        if self
            .word(ASYNC_RECOUNTED)
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        if self
            .word(ASYNC_WAITERS)
            .compare_exchange(
                seen,
                waiters::recounted(seen),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_ok()
        {
            eventfd::ring(self.doorbell.as_fd());
        }
    }

    /// The bounded check a waiter makes before it parks: `ready` until it gives `Some`, for up
    /// to [`CHECK_BEFORE_PARKING`] (less when `deadline` comes sooner), yielding the CPU between
    /// attempts ([`yield_until`]). In a hand-off between processes — release, wait for the
    /// answer, release again — the answer usually comes within that time, and catching it here
    /// costs neither side a system call nor the waiter a wake-up through the reactor or a
    /// futex (tens of µs on a small VM once its CPU went idle).
    ///
    /// Skipped when a waiter is already counted in: that one parked, so the state has stayed
    /// unready for a while and is likely to stay so; many tasks waiting on one primitive (a
    /// shutdown event) then do not each hold their thread for the check.
    fn check_before_parking<T>(
        &self,
        mut ready: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
    ) -> Option<T> {
        if let Some(v) = ready() {
            return Some(v);
        }
        if self.waiters() != (0, 0) {
            return None;
        }
        let limit = deadline.map_or(CHECK_BEFORE_PARKING, |d| {
            CHECK_BEFORE_PARKING.min(d.saturating_duration_since(Instant::now()))
        });
        yield_until(limit, ready)
    }

    /// [`wait`](Self::wait) after [`check_before_parking`](Self::check_before_parking): the
    /// wait of the synchronization primitives. Holds the thread for the check (at most
    /// [`CHECK_BEFORE_PARKING`]); cancel-safe as `wait`.
    pub(crate) async fn wait_after_check<T>(
        &self,
        mut ready: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        recheck: Duration,
    ) -> Option<T> {
        match self.check_before_parking(&mut ready, deadline) {
            Some(v) => Some(v),
            None => self.wait(ready, deadline, recheck).await,
        }
    }

    /// [`wait_blocking`](Self::wait_blocking) after
    /// [`check_before_parking`](Self::check_before_parking).
    pub(crate) fn wait_blocking_after_check<T>(
        &self,
        mut ready: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        recheck: Duration,
    ) -> Option<T> {
        self.check_before_parking(&mut ready, deadline)
            .or_else(|| self.wait_blocking(ready, deadline, recheck))
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
        let counted = Counted::new(self.word(ASYNC_WAITERS));
        let bell = self.bell();
        let period = recheck_period(recheck);
        loop {
            // Before the check: a count forgotten after this is followed by a second ring,
            // which wakes the await below.
            counted.rejoin_if_forgotten();
            if let Some(v) = ready() {
                return Some(v);
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| d <= now) {
                return None;
            }
            let mut until = now + counted.cap(period);
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
        let counted = Counted::new(self.word(SYNC_WAITERS));
        let period = recheck_period(recheck);
        loop {
            let seen = self.seq().load(Ordering::Acquire);
            // After reading `seq`: a count forgotten after this is followed by a bump of `seq`
            // (our wait returns at once) or a wake (after we sleep).
            counted.rejoin_if_forgotten();
            if let Some(v) = ready() {
                return Some(v);
            }
            let now = Instant::now();
            let mut timeout = counted.cap(period);
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
