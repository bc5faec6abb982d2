//! [`Condition`]: wait for a notification while releasing a [`Lock`] (Python's
//! `multiprocessing.Condition`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::{Lock, LockError, LockGuard};
use super::segment::{Segment, SegmentWire};
use crate::handle::{FdSink, FdSource, Handle};
use crate::notify::SAFETY_RECHECK;
use crate::shm::header::Kind;
use crate::sys::{self, pidfd};
use crate::{Error, Result};

// State layout: a ticket counter, then waiter slots of 16 bytes:
// word u32 (pid << 2 | phase, 0 when free) | unused u32 | ticket u64.
// The pid shares the word with the phase so that a slot is never seen taken without the pid
// of the process that took it: a dead taker's slot can always be reclaimed.
const TICKETS: usize = 0;
const SLOTS: usize = 8;
/// Most waiters one condition holds at once.
pub const MAX_WAITERS: usize = 128;
const STATE: usize = SLOTS + 16 * MAX_WAITERS;

const FREE: u32 = 0;
// Phases of a taken slot.
const CLAIMED: u32 = 1;
const WAITING: u32 = 2;
const NOTIFIED: u32 = 3;

fn phase(word: u32) -> u32 {
    word & 3
}

fn pid_of(word: u32) -> u32 {
    word >> 2
}

fn slot_word(pid: u32, phase: u32) -> u32 {
    pid << 2 | phase
}

/// Whether the process that took a slot (`word`) is gone. Never true for our own slots.
fn taker_died(word: u32) -> bool {
    let pid = pid_of(word);
    pid != sys::getpid() && pidfd::has_ended(pid)
}

const LIVENESS_CHECK: Duration = Duration::from_millis(100);

/// A condition variable over a [`Lock`], across tasks, threads and processes (Python's
/// `multiprocessing.Condition`).
///
/// [`wait`](Self::wait) takes the lock's guard, releases the lock, sleeps until notified, and
/// returns a new guard once the lock is re-acquired. [`notify(n)`](Self::notify) wakes exactly
/// `n` of the tasks waiting at that moment (the longest-waiting first), [`notify_all`](Self::notify_all)
/// all of them. A notification is never stored for a later waiter, a waiter whose timeout
/// passed no longer counts, and a waiter whose process died is skipped.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::{Condition, Lock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let lock = Lock::new()?;
/// let cond = Condition::new(&lock)?;
/// let waiter = tokio::spawn({
///     let (lock, cond) = (lock.clone(), cond.clone());
///     async move {
///         let guard = lock.lock().await?;
///         let (_guard, notified) = cond.wait_timeout(guard, std::time::Duration::from_secs(30)).await?;
///         Ok::<_, tokio_multiprocessing::Error>(notified)
///     }
/// });
/// while cond.n_waiting() == 0 {
///     tokio::task::yield_now().await;
/// }
/// let _guard = lock.lock().await?;
/// cond.notify(1)?;
/// drop(_guard);
/// assert!(waiter.await.unwrap()?);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Condition {
    lock: Lock,
    seg: Arc<Segment>,
}

/// A claimed waiter slot; freed on drop, passing on a notification it received but did not use.
struct Slot<'a> {
    cond: &'a Condition,
    index: usize,
    done: bool,
}

impl Slot<'_> {
    fn state(&self) -> &AtomicU32 {
        self.cond.seg.u32(SLOTS + 16 * self.index)
    }

    /// Frees the slot; `true` if it had been notified.
    fn release(&mut self) -> bool {
        self.done = true;
        let was = self.state().swap(FREE, Ordering::AcqRel);
        phase(was) == NOTIFIED
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if !self.done && self.release() {
            // A cancelled waiter was chosen: hand the wake-up to the next waiter.
            self.cond.mark(1);
        }
    }
}

impl Condition {
    /// A condition over `lock`.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the segment cannot be made.
    pub fn new(lock: &Lock) -> Result<Self> {
        Ok(Condition {
            lock: lock.clone(),
            seg: Arc::new(Segment::create(Kind::Condition, STATE, |_| Ok(()))?),
        })
    }

    /// The lock this condition uses.
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    fn slot_state(&self, i: usize) -> &AtomicU32 {
        self.seg.u32(SLOTS + 16 * i)
    }

    /// How many waiters are waiting now (slots of waiters whose process died are freed first).
    pub fn n_waiting(&self) -> usize {
        self.reclaim_dead();
        (0..MAX_WAITERS)
            .filter(|&i| phase(self.slot_state(i).load(Ordering::Acquire)) == WAITING)
            .count()
    }

    /// Frees the slots of waiters whose process died, in any phase (parked, or notified and
    /// killed before re-taking the lock). A notification such a waiter had received is passed
    /// on to the next waiter, as a cancelled waiter does.
    fn reclaim_dead(&self) {
        let mut passed_on = 0;
        for i in 0..MAX_WAITERS {
            let word = self.slot_state(i).load(Ordering::Acquire);
            if word != FREE
                && taker_died(word)
                && self
                    .slot_state(i)
                    .compare_exchange(word, FREE, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                && phase(word) == NOTIFIED
            {
                passed_on += 1;
            }
        }
        if passed_on > 0 {
            self.mark(passed_on);
        }
    }

    fn try_claim(&self) -> Option<Slot<'_>> {
        let me = sys::getpid();
        let index = (0..MAX_WAITERS).find(|&i| {
            self.slot_state(i)
                .compare_exchange(
                    FREE,
                    slot_word(me, CLAIMED),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        })?;
        let ticket = self.seg.u64(TICKETS).fetch_add(1, Ordering::Relaxed);
        self.seg
            .u64(SLOTS + 16 * index + 8)
            .store(ticket, Ordering::Relaxed);
        self.slot_state(index)
            .store(slot_word(me, WAITING), Ordering::Release);
        Some(Slot {
            cond: self,
            index,
            done: false,
        })
    }

    fn claim(&self) -> Result<Slot<'_>> {
        if let Some(slot) = self.try_claim() {
            return Ok(slot);
        }
        self.reclaim_dead();
        self.try_claim().ok_or_else(|| {
            Error::InvalidArgument(format!("more than {MAX_WAITERS} waiters on one condition"))
        })
    }

    /// Marks up to `n` waiting slots notified, oldest ticket first, skipping dead waiters.
    /// Returns how many were marked.
    fn mark(&self, n: usize) -> usize {
        let mut marked = 0;
        while marked < n {
            let oldest = (0..MAX_WAITERS)
                .map(|i| (i, self.slot_state(i).load(Ordering::Acquire)))
                .filter(|&(_, word)| phase(word) == WAITING)
                .min_by_key(|&(i, _)| self.seg.u64(SLOTS + 16 * i + 8).load(Ordering::Relaxed));
            let Some((i, word)) = oldest else { break };
            let dead = taker_died(word);
            let to = if dead {
                FREE
            } else {
                slot_word(pid_of(word), NOTIFIED)
            };
            if self
                .slot_state(i)
                .compare_exchange(word, to, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
                && !dead
            {
                marked += 1;
            }
        }
        if marked > 0 {
            self.seg.channel.notify();
        }
        marked
    }

    fn check_held(&self) -> Result<()> {
        if self.lock.held_by_this_process() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(
                "notify needs the condition's lock held (Python: RuntimeError)".into(),
            ))
        }
    }

    /// Wakes up to `n` of the current waiters (Python's `notify(n)`); returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when this process does not hold the condition's lock.
    pub fn notify(&self, n: usize) -> Result<usize> {
        self.check_held()?;
        Ok(self.mark(n))
    }

    /// Wakes every current waiter (Python's `notify_all`); returns how many.
    ///
    /// # Errors
    ///
    /// As [`notify`](Self::notify).
    pub fn notify_all(&self) -> Result<usize> {
        self.check_held()?;
        Ok(self.mark(MAX_WAITERS))
    }

    async fn wait_until(
        &self,
        guard: LockGuard,
        deadline: Option<Instant>,
    ) -> Result<(LockGuard, bool)> {
        if !guard.holds(&self.lock) {
            return Err(Error::InvalidArgument(
                "that guard holds another lock than this condition's".into(),
            ));
        }
        let mut slot = self.claim()?;
        drop(guard);
        let index = slot.index;
        let _ = self
            .seg
            .channel
            .wait_after_check(
                || {
                    (phase(self.slot_state(index).load(Ordering::Acquire)) == NOTIFIED)
                        .then_some(())
                },
                deadline,
                SAFETY_RECHECK.min(LIVENESS_CHECK * 10),
            )
            .await;
        let guard = relock(self.lock.lock().await)?;
        let notified = slot.release();
        Ok((guard, notified))
    }

    /// Releases the lock, waits for a notification, re-takes the lock (Python's `wait()`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `guard` is not a guard of this condition's lock or more
    /// than [`MAX_WAITERS`] wait; [`Error::OwnerDied`] when the lock's holder died while we
    /// waited (the lock is marked consistent and released: lock it and check the shared state);
    /// [`Error::Broken`] when the lock is not recoverable. The lock is not held after an error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future gives up the slot; a notification it had already received is passed
    /// on to the next waiter. The lock is not held after a cancelled wait.
    pub async fn wait(&self, guard: LockGuard) -> Result<LockGuard> {
        Ok(self.wait_until(guard, None).await?.0)
    }

    /// [`wait`](Self::wait) with a deadline; the `bool` says whether it was notified (Python's
    /// `wait(timeout)` return value). The lock is re-taken either way.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_timeout(
        &self,
        guard: LockGuard,
        timeout: Duration,
    ) -> Result<(LockGuard, bool)> {
        self.wait_until(guard, Some(Instant::now() + timeout)).await
    }

    /// Waits until `predicate` holds, checking it with the lock held (Python's `wait_for`).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_for(
        &self,
        mut guard: LockGuard,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<LockGuard> {
        while !predicate() {
            guard = self.wait(guard).await?;
        }
        Ok(guard)
    }

    /// [`wait_for`](Self::wait_for) with a deadline (Python's `wait_for(predicate, timeout)`):
    /// returns the guard and the predicate's last value, `false` when the timeout passed first.
    /// The lock is held on return either way.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_for_timeout(
        &self,
        mut guard: LockGuard,
        timeout: Duration,
        mut predicate: impl FnMut() -> bool,
    ) -> Result<(LockGuard, bool)> {
        let deadline = Instant::now() + timeout;
        loop {
            if predicate() {
                return Ok((guard, true));
            }
            if Instant::now() >= deadline {
                return Ok((guard, false));
            }
            guard = self.wait_until(guard, Some(deadline)).await?.0;
        }
    }
}

/// Re-taking the lock after a wait. If its owner died meanwhile, the lock is marked consistent
/// and released again and the waiter gets [`Error::OwnerDied`]: it should lock and check the
/// shared state itself, but the lock stays usable for everyone.
fn relock(result: std::result::Result<LockGuard, LockError>) -> Result<LockGuard> {
    match result {
        Ok(guard) => Ok(guard),
        Err(LockError::OwnerDied(mut guard)) => {
            guard.mark_consistent();
            Err(Error::OwnerDied)
        }
        Err(e) => Err(e.into()),
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("n_waiting", &self.n_waiting())
            .finish()
    }
}

/// The condition's own segment, as a handle; the lock travels beside it.
struct ConditionSegment(Arc<Segment>);

impl Handle for ConditionSegment {
    type Wire = SegmentWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<SegmentWire> {
        self.0.to_wire(fds)
    }

    fn from_wire(wire: SegmentWire, fds: &mut FdSource) -> Result<Self> {
        Ok(ConditionSegment(Arc::new(Segment::from_wire(
            wire,
            fds,
            Kind::Condition,
            STATE,
        )?)))
    }
}

impl Serialize for ConditionSegment {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        crate::handle::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for ConditionSegment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::handle::deserialize(d)
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        (&self.lock, ConditionSegment(self.seg.clone())).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let (lock, seg): (Lock, ConditionSegment) = Deserialize::deserialize(d)?;
        Ok(Condition { lock, seg: seg.0 })
    }
}
