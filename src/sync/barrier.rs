//! [`Barrier`]: a meeting point for a fixed number of parties (Python's
//! `multiprocessing.Barrier`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::segment::{Segment, SegmentWire};
use crate::handle::{FdSink, FdSource, Handle, serde_via_handle};
use crate::notify::CHANNEL_SIZE;
use crate::shm::header::Kind;
use crate::sys::code_address::{self, Action};
use crate::sys::{self, pidfd};
use crate::{Error, Result};

// State layout (after the wait channel).
const WORD: usize = 0; // u64: generation << 32 | arrived << 1 | broken
const PARTIES: usize = 8; // u32, fixed at creation
const RESETS: usize = 12; // u32, bumped by every reset
const SLOTS: usize = 16; // parties × u64: generation << 32 | pid of each arrived party

/// Most parties a barrier can have.
pub const MAX_PARTIES: usize = 1024;
const LIVENESS_CHECK: Duration = Duration::from_millis(100);

fn state_size(parties: usize) -> usize {
    SLOTS + 8 * parties
}

fn generation(word: u64) -> u32 {
    (word >> 32) as u32
}

fn arrived(word: u64) -> usize {
    ((word >> 1) & 0xffff) as usize
}

fn broken(word: u64) -> bool {
    word & 1 == 1
}

/// A reusable barrier for `parties` tasks, threads or processes (Python's
/// `multiprocessing.Barrier`).
///
/// [`wait`](Self::wait) returns once all parties have called it, each with a different index
/// in `0..parties` (arrival order; the last to arrive gets `parties - 1` and can act as the
/// round's leader). Then the barrier is ready for the next round.
///
/// The barrier *breaks* — every waiter, now and later, gets [`Error::Broken`] until
/// [`reset`](Self::reset) — when someone calls [`abort`](Self::abort), when a waiter's timeout
/// passes, when a waiting future is dropped (cancelled), when the action panics, or when a
/// process dies while waiting at it. (A party that dies *before* arriving cannot be told from a
/// slow one; give waits a timeout if that can happen.)
///
/// A barrier made with [`with_action`](Self::with_action) runs its action once per round, in
/// the party that arrives last, before any party is released (Python's `action`).
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::Barrier;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let barrier = Barrier::new(2)?;
/// let other = tokio::spawn({
///     let barrier = barrier.clone();
///     async move { barrier.wait().await }
/// });
/// let mine = barrier.wait().await?;
/// let theirs = other.await.unwrap()?;
/// assert_eq!(mine + theirs, 1); // indices 0 and 1
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Barrier {
    seg: Arc<Segment>,
    parties: usize,
    action: Option<Action>,
}

/// Breaks the round a waiting future is in if the future is dropped before the round ends, so
/// the other parties learn that one of them left (the round can no longer complete as counted).
struct BreakIfCancelled<'a> {
    barrier: &'a Barrier,
    round: u32,
    armed: bool,
}

impl Drop for BreakIfCancelled<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let word = self.barrier.seg.u64(WORD);
        let broke = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
            (generation(w) == self.round && !broken(w)).then_some(w | 1)
        });
        if broke.is_ok() {
            self.barrier.seg.channel.notify();
        }
    }
}

impl Barrier {
    /// A barrier for `parties` parties.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for 0 or more than [`MAX_PARTIES`] parties; [`Error::Io`] when
    /// the segment cannot be made.
    pub fn new(parties: usize) -> Result<Self> {
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::InvalidArgument(format!(
                "a barrier needs 1 to {MAX_PARTIES} parties, not {parties}"
            )));
        }
        let seg = Segment::create(Kind::Barrier, state_size(parties), |shm| {
            shm.atomic_u32(CHANNEL_SIZE + PARTIES)?
                .store(parties as u32, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Barrier {
            seg: Arc::new(seg),
            parties,
            action: None,
        })
    }

    /// A barrier for `parties` parties that runs `action` once per round, in the party that
    /// arrives last, before any party is released (Python's `Barrier(parties, action)`). If the
    /// action panics, the barrier breaks and the panic continues in that party.
    ///
    /// The action travels with the barrier to children started with
    /// [`Process::spawn`](crate::Process::spawn) (they run the same executable); a barrier with
    /// an action cannot be received in a message from a peer ([`Error::Corrupt`]), since a
    /// function cannot be trusted from anyone but the parent.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// use tokio_multiprocessing::Barrier;
    ///
    /// fn round_done() {
    ///     println!("everybody arrived");
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> tokio_multiprocessing::Result<()> {
    /// let barrier = Barrier::with_action(1, round_done)?;
    /// barrier.wait().await?; // prints once
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_action(parties: usize, action: fn()) -> Result<Self> {
        Ok(Barrier {
            action: Some(action),
            ..Barrier::new(parties)?
        })
    }

    /// The number of parties.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// How many parties are waiting in the current round.
    pub fn n_waiting(&self) -> usize {
        arrived(self.seg.u64(WORD).load(Ordering::Acquire))
    }

    /// Whether the barrier is broken.
    pub fn is_broken(&self) -> bool {
        broken(self.seg.u64(WORD).load(Ordering::Acquire))
    }

    /// Breaks the barrier: every waiter, now and until [`reset`](Self::reset), gets
    /// [`Error::Broken`].
    pub fn abort(&self) {
        self.seg.u64(WORD).fetch_or(1, Ordering::AcqRel);
        self.seg.channel.notify();
    }

    /// Returns the barrier to its empty, unbroken state. Parties waiting in the current round
    /// get [`Error::Broken`].
    pub fn reset(&self) {
        self.seg.u32(RESETS).fetch_add(1, Ordering::Release);
        let word = self.seg.u64(WORD);
        let _ = word.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |w| {
            Some(u64::from(generation(w).wrapping_add(1)) << 32)
        });
        self.seg.channel.notify();
    }

    /// Arrives; `Ok(index)` for a party that completes the round at once, or the round's
    /// generation and our index to wait for.
    fn arrive(&self) -> Result<std::result::Result<usize, (u32, usize)>> {
        let word = self.seg.u64(WORD);
        let mut w = word.load(Ordering::Acquire);
        loop {
            if broken(w) {
                return Err(Error::Broken);
            }
            let (round, index) = (generation(w), arrived(w));
            if index >= self.parties {
                return Err(Error::Corrupt(
                    "barrier holds more parties than it has".into(),
                ));
            }
            let last = index + 1 == self.parties;
            let next = if last && self.action.is_none() {
                u64::from(round.wrapping_add(1)) << 32
            } else {
                // With an action, the last party counts itself in and releases the round only
                // once the action has run.
                (u64::from(round) << 32) | ((index as u64 + 1) << 1)
            };
            match word.compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) if last && self.action.is_none() => {
                    self.seg.channel.notify();
                    return Ok(Ok(index));
                }
                Ok(_) => {
                    let slot = (u64::from(round) << 32) | u64::from(sys::getpid());
                    self.seg
                        .u64(SLOTS + 8 * index)
                        .store(slot, Ordering::Release);
                    if let (true, Some(action)) = (last, self.action) {
                        self.run_action(action, round);
                        return Ok(Ok(index));
                    }
                    return Ok(Err((round, index)));
                }
                Err(now) => w = now,
            }
        }
    }

    /// The last party's duty with an action: run it, then release the round; a panicking action
    /// breaks the barrier and the panic goes on.
    fn run_action(&self, action: Action, round: u32) {
        let ran = std::panic::catch_unwind(action);
        let word = self.seg.u64(WORD);
        match ran {
            Ok(()) => {
                // Release, unless an abort or a reset came meanwhile (they win).
                let _ = word.fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                    (generation(w) == round && !broken(w))
                        .then(|| u64::from(round.wrapping_add(1)) << 32)
                });
                self.seg.channel.notify();
            }
            Err(panic) => {
                self.abort();
                std::panic::resume_unwind(panic);
            }
        }
    }

    /// [`outcome`](Self::outcome) for a waiter: the waiting parties' liveness (a system call
    /// each) is checked at most every [`LIVENESS_CHECK`], so not while the waiter checks before
    /// parking, and at each re-check once parked.
    fn outcome_checked_now_and_then(
        &self,
        round: u32,
        resets: u32,
    ) -> impl FnMut() -> Option<Result<()>> + '_ {
        let mut last_check = Instant::now();
        move || {
            let check = last_check.elapsed() >= LIVENESS_CHECK;
            if check {
                last_check = Instant::now();
            }
            self.outcome(round, resets, check)
        }
    }

    /// Whether the round `round` ended: `Some(Ok)` completed, `Some(Err(Broken))` broken or reset.
    fn outcome(&self, round: u32, resets: u32, check_parties: bool) -> Option<Result<()>> {
        if self.seg.u32(RESETS).load(Ordering::Acquire) != resets {
            return Some(Err(Error::Broken));
        }
        let w = self.seg.u64(WORD).load(Ordering::Acquire);
        if generation(w) != round {
            return Some(Ok(()));
        }
        if broken(w) {
            return Some(Err(Error::Broken));
        }
        if check_parties && self.a_waiting_party_died(round, arrived(w)) {
            self.abort();
            return Some(Err(Error::Broken));
        }
        None
    }

    fn a_waiting_party_died(&self, round: u32, arrived: usize) -> bool {
        (0..arrived.min(self.parties)).any(|i| {
            let slot = self.seg.u64(SLOTS + 8 * i).load(Ordering::Acquire);
            let pid = slot as u32;
            (slot >> 32) as u32 == round
                && pid != 0
                && pid != sys::getpid()
                && pidfd::has_ended(pid)
        })
    }

    async fn wait_until(&self, deadline: Option<Instant>) -> Result<usize> {
        let resets = self.seg.u32(RESETS).load(Ordering::Acquire);
        let (round, index) = match self.arrive()? {
            Ok(index) => return Ok(index),
            Err(waiting) => waiting,
        };
        let mut cancelled = BreakIfCancelled {
            barrier: self,
            round,
            armed: true,
        };
        let result = self
            .seg
            .channel
            .wait_after_check(
                self.outcome_checked_now_and_then(round, resets),
                deadline,
                LIVENESS_CHECK,
            )
            .await;
        cancelled.armed = false;
        self.finish(result, index)
    }

    fn finish(&self, result: Option<Result<()>>, index: usize) -> Result<usize> {
        match result {
            Some(Ok(())) => Ok(index),
            Some(Err(e)) => Err(e),
            None => {
                // Our timeout passed first: that breaks the barrier for everyone (as in Python).
                self.abort();
                Err(Error::Timeout)
            }
        }
    }

    /// Waits until all parties have arrived; returns this party's index (arrival order).
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] when the barrier is or becomes broken or is reset while waiting.
    ///
    /// # Cancel safety
    ///
    /// A party counts as arrived from the first poll on. Dropping the future before the round
    /// ends breaks the barrier, as a timeout does in Python: the others get [`Error::Broken`]
    /// instead of completing a round that one of its parties left. (An arrival cannot be taken
    /// back without giving two parties the same index.) Dropping it before the first poll, or
    /// after the round ended, leaves no trace.
    pub async fn wait(&self) -> Result<usize> {
        self.wait_until(None).await
    }

    /// [`wait`](Self::wait) with a deadline; a timeout breaks the barrier for everyone.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] for the party whose timeout passed ([`Error::Broken`] for the others),
    /// or as [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<usize> {
        self.wait_until(Some(Instant::now() + timeout)).await
    }

    /// [`wait`](Self::wait) for threads (not on a runtime worker).
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_blocking(&self) -> Result<usize> {
        self.wait_blocking_until(None)
    }

    /// [`wait_timeout`](Self::wait_timeout) for threads (not on a runtime worker).
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_timeout_blocking(&self, timeout: Duration) -> Result<usize> {
        self.wait_blocking_until(Some(Instant::now() + timeout))
    }

    fn wait_blocking_until(&self, deadline: Option<Instant>) -> Result<usize> {
        let resets = self.seg.u32(RESETS).load(Ordering::Acquire);
        let (round, index) = match self.arrive()? {
            Ok(index) => return Ok(index),
            Err(waiting) => waiting,
        };
        let result = self.seg.channel.wait_blocking_after_check(
            self.outcome_checked_now_and_then(round, resets),
            deadline,
            LIVENESS_CHECK,
        );
        self.finish(result, index)
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

/// The plain-data part of a [`Barrier`] in a message.
///
/// Opaque: it only travels inside the crate's own messages (see [`Handle`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct BarrierWire {
    seg: SegmentWire,
    /// The action, as an offset in the executable (accepted from the parent only).
    action: Option<i64>,
}

impl Handle for Barrier {
    type Wire = BarrierWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<BarrierWire> {
        Ok(BarrierWire {
            seg: self.seg.to_wire(fds)?,
            action: self.action.map(code_address::action_offset),
        })
    }

    fn from_wire(wire: BarrierWire, fds: &mut FdSource) -> Result<Self> {
        let action = wire
            .action
            .map(|offset| fds.parent_action(offset))
            .transpose()?;
        let seg = Segment::from_wire(wire.seg, fds, Kind::Barrier, state_size(0))?;
        let parties = seg.u32(PARTIES).load(Ordering::Relaxed) as usize;
        if parties == 0 || parties > MAX_PARTIES {
            return Err(Error::Corrupt(format!("barrier claims {parties} parties")));
        }
        // Re-validate with the real size now that the party count is known.
        let seg_size_ok = seg.fits(state_size(parties));
        if !seg_size_ok {
            return Err(Error::Corrupt(
                "barrier segment too small for its parties".into(),
            ));
        }
        Ok(Barrier {
            seg: Arc::new(seg),
            parties,
            action,
        })
    }
}

serde_via_handle!(Barrier);
