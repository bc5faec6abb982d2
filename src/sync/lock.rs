//! [`Lock`]: a mutual-exclusion lock owned by a process, robust against owner death.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::segment::{Segment, SegmentWire};
use crate::handle::{FdSink, FdSource, Handle, serde_via_handle};
use crate::notify::SAFETY_RECHECK;
use crate::shm::header::Kind;
use crate::sys::{self, pidfd};
use crate::{Error, Result};

// State layout (after the wait channel).
const OWNER: usize = 0; // u64: 0 = free, else the owner's token (see `my_token`)
const CONSISTENCY: usize = 24; // u32: CONSISTENT, INCONSISTENT or NOT_RECOVERABLE
const STATE: usize = 32;

const CONSISTENT: u32 = 0;
const INCONSISTENT: u32 = 1;
const NOT_RECOVERABLE: u32 = 2;

/// How often a waiter checks whether a lock's owner in another process is still alive.
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

thread_local! {
    /// Owner tokens this thread saw alive, and when.
    static RECENTLY_ALIVE: std::cell::RefCell<std::collections::HashMap<u64, Instant>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Pauses a locker spends checking before it starts yielding (one pause is about 30 ns).
const SPINS: usize = 64;
/// Times a locker yields its CPU, checking in between, before it parks.
const YIELDS: usize = 8;

/// This process's owner token: `pid << 32 | start`, where `start` is the low 32 bits of the
/// process's start time (0 if unknown). The start time tells a recycled pid from the owner that
/// died, with nothing written besides the lock word itself. One token per process: only a guard
/// releases, and a guard exists only while its process holds the lock.
fn my_token() -> u64 {
    // pid << 32 | start of the process that computed it; a forked child (another pid)
    // recomputes.
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let pid = sys::getpid();
    let cached = CACHED.load(Ordering::Relaxed);
    if (cached >> 32) as u32 == pid {
        return cached;
    }
    let start = pidfd::start_time(pid).map_or(0, |(t, _)| t as u32);
    let token = u64::from(pid) << 32 | u64::from(start);
    CACHED.store(token, Ordering::Relaxed);
    token
}

/// Why [`Lock::lock`] did not simply hand out the lock.
pub enum LockError {
    /// The previous owner's process died while holding the lock. The lock is now yours: the
    /// guard holds it. The data it protects may be half-updated; repair it, then call
    /// [`LockGuard::mark_consistent`]. Dropping the guard without doing so makes the lock
    /// unusable for everyone ([`LockError::NotRecoverable`]), as with pthread's `EOWNERDEAD`.
    OwnerDied(LockGuard),
    /// A previous owner died and its successor gave up on repairing the state.
    NotRecoverable,
    /// `try_lock` found the lock held.
    WouldBlock,
    /// The timeout passed first.
    Timeout,
}

impl LockError {
    /// The guard of an [`OwnerDied`](Self::OwnerDied), if this is one.
    pub fn into_guard(self) -> Option<LockGuard> {
        match self {
            LockError::OwnerDied(guard) => Some(guard),
            _ => None,
        }
    }
}

impl fmt::Debug for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockError::OwnerDied(_) => "OwnerDied(..)",
            LockError::NotRecoverable => "NotRecoverable",
            LockError::WouldBlock => "WouldBlock",
            LockError::Timeout => "Timeout",
        })
    }
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockError::OwnerDied(_) => "the previous owner died while holding the lock",
            LockError::NotRecoverable => "the lock is not recoverable after its owner died",
            LockError::WouldBlock => "the lock is held",
            LockError::Timeout => "timed out waiting for the lock",
        })
    }
}

impl std::error::Error for LockError {}

impl From<LockError> for Error {
    fn from(e: LockError) -> Error {
        match e {
            LockError::OwnerDied(_) => Error::OwnerDied,
            LockError::NotRecoverable => Error::Broken,
            LockError::WouldBlock => Error::Empty,
            LockError::Timeout => Error::Timeout,
        }
    }
}

/// A lock between tasks, threads and processes (Python's `multiprocessing.Lock`), owned by the
/// process that holds it and robust against that process dying.
///
/// Unlike Python's `Lock`, which any process may release, only the guard releases it, and the
/// guard may move freely between the threads of its process (a tokio task's guard survives
/// `.await`). If the owning process dies, the next locker — including one already waiting, in
/// any process — gets [`LockError::OwnerDied`] with the lock, within about 100 ms. A slow or
/// stopped owner is never treated as dead: death means the process is gone or a zombie, checked
/// by pid and process start time, so a recycled pid is not mistaken for the owner.
///
/// # Memory ordering
///
/// Acquiring is an acquire operation and releasing a release operation: everything the previous
/// owner wrote under the lock, in any process, is visible to the next one.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::Lock;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.lock().await?;
///     assert!(lock.try_lock().is_err());
/// }
/// assert!(lock.try_lock().is_ok());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Lock {
    seg: Arc<Segment>,
}

/// Holds a [`Lock`]; dropping it unlocks.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[clippy::has_significant_drop]
pub struct LockGuard {
    lock: Lock,
    token: u64,
    inconsistent: bool,
}

/// What one try at the lock word found.
enum Claim {
    Acquired(u64),
    OwnerDied(u64),
    NotRecoverable,
    Busy { other_process: bool },
}

/// A hold on a [`Lock`] that borrows it instead of cloning the handle, for the crate's own short
/// critical sections (a queue's put or get), where bumping the handle's reference count costs
/// as much as the work. Dropping it unlocks, as dropping a [`LockGuard`] does.
pub(crate) struct Held<'a> {
    lock: &'a Lock,
    token: u64,
    inconsistent: bool,
}

/// Why [`Lock::try_hold`] gave no plain hold.
pub(crate) enum HoldError<'a> {
    /// As [`LockError::OwnerDied`].
    OwnerDied(Held<'a>),
    /// As [`LockError::NotRecoverable`].
    NotRecoverable,
}

impl Held<'_> {
    /// Releases the lock. Returns after a `SeqCst` fence that follows everything this process
    /// wrote before, so a caller may then use [`WaitChannel::notify_after_fence`] for the
    /// state it changed under the lock.
    ///
    /// [`WaitChannel::notify_after_fence`]: crate::notify::WaitChannel::notify_after_fence
    pub(crate) fn release_fenced(self) {
        drop(self); // `Lock::release` ends with its channel's `notify`, which fences first
    }

    /// As [`LockGuard::mark_consistent`].
    pub(crate) fn mark_consistent(&mut self) {
        if self.inconsistent {
            self.lock.set_consistent();
            self.inconsistent = false;
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.lock.release(self.token, self.inconsistent);
    }
}

enum Attempt {
    Acquired(LockGuard),
    Failed(LockError),
    Busy { other_process: bool },
}

impl Lock {
    /// A new, unlocked lock.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the segment or its doorbell cannot be made.
    pub fn new() -> Result<Self> {
        Ok(Lock {
            seg: Arc::new(Segment::create(Kind::Lock, STATE, |_| Ok(()))?),
        })
    }

    /// Whether `other` is a handle to the same lock.
    pub(crate) fn same_as(&self, other: &Lock) -> bool {
        self.seg.same_as(&other.seg)
    }

    /// Whether a guard in this process holds the lock.
    pub(crate) fn held_by_this_process(&self) -> bool {
        (self.seg.u64(OWNER).load(Ordering::Acquire) >> 32) as u32 == sys::getpid()
    }

    /// Whether somebody holds the lock right now.
    pub fn is_locked(&self) -> bool {
        self.seg.u64(OWNER).load(Ordering::Acquire) != 0
    }

    /// One try at the lock word.
    fn claim(&self) -> Claim {
        if self.seg.u32(CONSISTENCY).load(Ordering::Acquire) == NOT_RECOVERABLE {
            return Claim::NotRecoverable;
        }
        let owner = self.seg.u64(OWNER);
        let token = my_token();
        match owner.compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => Claim::Acquired(token),
            Err(current) if self.is_dead(current) => {
                // Exactly one of the waiters that noticed the death wins this exchange.
                match owner.compare_exchange(current, token, Ordering::Acquire, Ordering::Relaxed) {
                    Ok(_) => {
                        self.seg
                            .u32(CONSISTENCY)
                            .store(INCONSISTENT, Ordering::Release);
                        Claim::OwnerDied(token)
                    }
                    Err(_) => Claim::Busy {
                        other_process: true,
                    },
                }
            }
            Err(current) => Claim::Busy {
                other_process: (current >> 32) as u32 != sys::getpid(),
            },
        }
    }

    fn attempt(&self) -> Attempt {
        match self.claim() {
            Claim::Acquired(token) => Attempt::Acquired(self.owned(token, false)),
            Claim::OwnerDied(token) => {
                Attempt::Failed(LockError::OwnerDied(self.owned(token, true)))
            }
            Claim::NotRecoverable => Attempt::Failed(LockError::NotRecoverable),
            Claim::Busy { other_process } => Attempt::Busy { other_process },
        }
    }

    /// Takes the lock if it is free right now (one compare-and-swap, the uncontended case);
    /// `None` when it is not, or not simply free (see [`try_hold`](Self::try_hold)).
    #[inline]
    pub(crate) fn try_hold_free(&self) -> Option<Held<'_>> {
        if self.seg.u32(CONSISTENCY).load(Ordering::Acquire) == NOT_RECOVERABLE {
            return None;
        }
        let token = my_token();
        self.seg
            .u64(OWNER)
            .compare_exchange(0, token, Ordering::Acquire, Ordering::Relaxed)
            .ok()?;
        Some(Held {
            lock: self,
            token,
            inconsistent: false,
        })
    }

    /// Takes the lock if it is free (or its owner died) right now, as a [`Held`] that borrows
    /// it; `None` when it is busy.
    pub(crate) fn try_hold(&self) -> Option<Result<Held<'_>, HoldError<'_>>> {
        let held = |token, inconsistent| Held {
            lock: self,
            token,
            inconsistent,
        };
        match self.claim() {
            Claim::Acquired(token) => Some(Ok(held(token, false))),
            Claim::OwnerDied(token) => Some(Err(HoldError::OwnerDied(held(token, true)))),
            Claim::NotRecoverable => Some(Err(HoldError::NotRecoverable)),
            Claim::Busy { .. } => None,
        }
    }

    fn owned(&self, token: u64, inconsistent: bool) -> LockGuard {
        LockGuard {
            lock: self.clone(),
            token,
            inconsistent,
        }
    }

    /// Whether the process behind `token` is gone (or a zombie, or its pid now belongs to a
    /// process started at another time). Never true for a process that is merely slow or
    /// stopped.
    fn is_dead(&self, token: u64) -> bool {
        let pid = (token >> 32) as u32;
        if pid == sys::getpid() {
            return false;
        }
        // Reading /proc costs a few system calls; under contention every failed attempt would
        // pay them. A token seen alive is trusted for LIVENESS_CHECK, which bounds how late a
        // death is noticed.
        let now = Instant::now();
        let fresh = RECENTLY_ALIVE.with(|seen| {
            seen.borrow()
                .get(&token)
                .is_some_and(|at| now.duration_since(*at) < LIVENESS_CHECK)
        });
        if fresh {
            return false;
        }
        let dead = match pidfd::start_time(pid) {
            None | Some((_, true)) => true,
            Some((start, false)) => token as u32 != 0 && start as u32 != token as u32,
        };
        RECENTLY_ALIVE.with(|seen| {
            let mut seen = seen.borrow_mut();
            if seen.len() > 64 {
                seen.retain(|_, at| now.duration_since(*at) < LIVENESS_CHECK);
            }
            if dead {
                seen.remove(&token);
            } else {
                seen.insert(token, now);
            }
        });
        dead
    }

    fn step(&self) -> (Option<Result<LockGuard, LockError>>, Duration) {
        match self.attempt() {
            Attempt::Acquired(guard) => (Some(Ok(guard)), SAFETY_RECHECK),
            Attempt::Failed(e) => (Some(Err(e)), SAFETY_RECHECK),
            Attempt::Busy { other_process } => (
                None,
                if other_process {
                    LIVENESS_CHECK
                } else {
                    SAFETY_RECHECK
                },
            ),
        }
    }

    /// Takes the lock if nobody holds it, without waiting.
    ///
    /// # Errors
    ///
    /// [`LockError::WouldBlock`] when it is held; [`LockError::OwnerDied`] (with the lock) when
    /// its holder died; [`LockError::NotRecoverable`].
    pub fn try_lock(&self) -> Result<LockGuard, LockError> {
        self.step().0.unwrap_or(Err(LockError::WouldBlock))
    }

    /// Tries for a short while without sleeping: most critical sections are shorter than a
    /// futex round trip, so a brief spin saves two system calls and a context switch. Bounded:
    /// [`SPINS`] pauses (about 2 µs), then [`YIELDS`] yields of the CPU, so that a holder
    /// waiting for a CPU (fewer free CPUs than busy processes) gets to run and release.
    fn spin(&self) -> (Option<Result<LockGuard, LockError>>, Duration) {
        let mut last = self.step();
        for attempt in 0..SPINS + YIELDS {
            if last.0.is_some() {
                break;
            }
            if attempt < SPINS {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            if !self.is_locked() {
                last = self.step();
            }
        }
        last
    }

    async fn lock_until(&self, deadline: Option<Instant>) -> Result<LockGuard, LockError> {
        // The recheck interval depends on who holds the lock, so wait in slices.
        loop {
            let (done, recheck) = self.spin();
            if let Some(result) = done {
                return result;
            }
            let slice_end = Instant::now() + recheck;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            let got = self
                .seg
                .channel
                .wait(|| self.step().0, Some(until), recheck)
                .await;
            if let Some(result) = got {
                return result;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return self.step().0.unwrap_or(Err(LockError::Timeout));
            }
        }
    }

    /// Waits for the lock and takes it.
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] (with the lock) when its holder died;
    /// [`LockError::NotRecoverable`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped `lock` future holds nothing and leaves no trace (it loses only its
    /// chance; there is no queue position to lose).
    pub async fn lock(&self) -> Result<LockGuard, LockError> {
        // A free lock is taken without building the waiting future, which is boxed so the
        // future callers hold stays small.
        if let (Some(result), _) = self.step() {
            return result;
        }
        Box::pin(self.lock_until(None)).await
    }

    /// [`lock`](Self::lock) with a deadline.
    ///
    /// # Errors
    ///
    /// [`LockError::Timeout`], or as [`lock`](Self::lock).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`lock`](Self::lock).
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard, LockError> {
        self.lock_until(Some(Instant::now() + timeout)).await
    }

    fn lock_blocking_until(&self, deadline: Option<Instant>) -> Result<LockGuard, LockError> {
        loop {
            let (done, recheck) = self.spin();
            if let Some(result) = done {
                return result;
            }
            let slice_end = Instant::now() + recheck;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            if let Some(result) =
                self.seg
                    .channel
                    .wait_blocking(|| self.step().0, Some(until), recheck)
            {
                return result;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return self.step().0.unwrap_or(Err(LockError::Timeout));
            }
        }
    }

    /// [`lock`](Self::lock) for threads (not on a runtime worker: it blocks the thread).
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock).
    pub fn lock_blocking(&self) -> Result<LockGuard, LockError> {
        self.lock_blocking_until(None)
    }

    /// [`lock_timeout`](Self::lock_timeout) for threads.
    ///
    /// # Errors
    ///
    /// As [`lock_timeout`](Self::lock_timeout).
    pub fn lock_timeout_blocking(&self, timeout: Duration) -> Result<LockGuard, LockError> {
        self.lock_blocking_until(Some(Instant::now() + timeout))
    }

    /// Waiters counted in on this lock's channel (blocking, async).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn waiters(&self) -> (u32, u32) {
        self.seg.channel.waiters()
    }
}

impl LockGuard {
    /// Declares the state the lock protects repaired after [`LockError::OwnerDied`], so the
    /// lock stays usable once this guard is dropped.
    pub fn mark_consistent(&mut self) {
        if self.inconsistent {
            self.lock.set_consistent();
            self.inconsistent = false;
        }
    }

    /// The same hold, borrowing `lock` (which must be the lock this guard holds) instead of
    /// owning a handle.
    pub(crate) fn into_held(mut self, lock: &Lock) -> Held<'_> {
        debug_assert!(self.holds(lock));
        let held = Held {
            lock,
            token: self.token,
            inconsistent: self.inconsistent,
        };
        self.token = 0; // handed over: dropping this guard releases nothing
        held
    }

    /// The lock this guard holds.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Whether this guard holds `lock` (the same segment, whichever handle).
    pub(crate) fn holds(&self, lock: &Lock) -> bool {
        self.lock.same_as(lock)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Tokens are never 0 (the pid is in the high half); 0 marks a guard handed over.
        if self.token != 0 {
            self.lock.release(self.token, self.inconsistent);
        }
    }
}

impl Lock {
    /// Unlocks (as the holder of `token`), poisoning the lock first if the state was left
    /// inconsistent, and wakes a waiter. Always ends with a full fence (the notify's), which
    /// [`Held::release_fenced`] promises its callers.
    fn release(&self, token: u64, inconsistent: bool) {
        let seg = &self.seg;
        if inconsistent {
            seg.u32(CONSISTENCY)
                .store(NOT_RECOVERABLE, Ordering::Release);
        }
        let _ = seg
            .u64(OWNER)
            .compare_exchange(token, 0, Ordering::Release, Ordering::Relaxed);
        seg.channel.notify();
    }

    fn set_consistent(&self) {
        self.seg
            .u32(CONSISTENCY)
            .store(CONSISTENT, Ordering::Release);
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

impl Handle for Lock {
    type Wire = SegmentWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<SegmentWire> {
        self.seg.to_wire(fds)
    }

    fn from_wire(wire: SegmentWire, fds: &mut FdSource) -> Result<Self> {
        Ok(Lock {
            seg: Arc::new(Segment::from_wire(wire, fds, Kind::Lock, STATE)?),
        })
    }
}

serde_via_handle!(Lock);
