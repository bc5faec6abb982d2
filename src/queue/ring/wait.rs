//! Waiting for room or items: a bounded spin (pauses, then yields) before parking on a wait
//! channel.

use std::time::{Duration, Instant};

use super::{HEAD, RECORD_HEADER, Ring, TAIL};
use crate::notify::{SAFETY_RECHECK, spin_until};

/// A queue waiter's spin before it parks ([`spin_until`] for [`SPIN_FOR`]): a getter that
/// finds the queue empty usually sees the next item within a microsecond or two.
fn spin(ready: impl Fn() -> Option<()>) -> bool {
    spin_until(SPIN_FOR, ready).is_some()
}

/// How long a queue waiter keeps checking (pausing, then yielding) before it parks.
const SPIN_FOR: Duration = Duration::from_micros(20);

impl Ring {
    /// How much room a putter that found the ring full waits for while it spins: a few records'
    /// worth more than it needs, so it and the getters take turns in bursts instead of pulling
    /// the `head` line back and forth once per record. (Parking waits only for what it needs.)
    fn roomy(&self, len: usize) -> usize {
        len.max(self.limits.capacity / 64)
            .min(self.limits.capacity - RECORD_HEADER)
    }

    /// Whether something is queued, by count (a LIFO or priority ring may hold taken records
    /// between `head` and `tail` for a moment; FIFO counts and positions agree).
    fn has_items(&self) -> bool {
        self.mark(TAIL).items != self.mark(HEAD).items
    }

    /// Waits (without the lock) until a record of `len` bytes may fit, the queue closes, or the
    /// deadline passes. `false` on timeout.
    pub(crate) async fn wait_room(&self, len: usize, deadline: Option<Instant>) -> bool {
        let ready = || (self.is_closed() || self.has_room(len)).then_some(());
        if ready().is_some() {
            return retry_after_yield(deadline).await;
        }
        if spin(|| (self.is_closed() || self.has_room(self.roomy(len))).then_some(())) {
            return true;
        }
        self.not_full
            .wait(ready, deadline, SAFETY_RECHECK)
            .await
            .is_some()
    }

    pub(crate) fn wait_room_blocking(&self, len: usize, deadline: Option<Instant>) -> bool {
        let ready = || (self.is_closed() || self.has_room(len)).then_some(());
        if ready().is_some() {
            return retry_after_yield_blocking(deadline);
        }
        if spin(|| (self.is_closed() || self.has_room(self.roomy(len))).then_some(())) {
            return true;
        }
        self.not_full
            .wait_blocking(ready, deadline, SAFETY_RECHECK)
            .is_some()
    }

    /// Waits until something may be queued or the queue closes. `false` on timeout.
    pub(crate) async fn wait_items(&self, deadline: Option<Instant>) -> bool {
        let ready = || (self.is_closed() || self.has_items()).then_some(());
        if ready().is_some() {
            return retry_after_yield(deadline).await;
        }
        if spin(ready) {
            return true;
        }
        self.seg
            .channel
            .wait(ready, deadline, SAFETY_RECHECK)
            .await
            .is_some()
    }

    /// Checks for items (or a close) for up to `limit`, pausing then yielding as a waiter's
    /// spin does, without parking: for a process that has nothing else to do but wait for
    /// this queue (an idle pool worker), where a longer spin keeps back-to-back jobs off the
    /// wake-up path and takes no thread from anyone. `true` once something is there.
    pub(crate) fn spin_for_items(&self, limit: Duration) -> bool {
        let ready = || (self.is_closed() || self.has_items()).then_some(());
        ready().is_some() || spin_until(limit, ready).is_some()
    }

    /// [`wait_items`](Self::wait_items) without the spin: for a task that also waits for other
    /// things in the same `select!` and must not hold its thread while it spins.
    pub(crate) async fn wait_items_parked(&self) {
        let ready = || (self.is_closed() || self.has_items()).then_some(());
        let _ = self.seg.channel.wait(ready, None, SAFETY_RECHECK).await;
    }

    pub(crate) fn wait_items_blocking(&self, deadline: Option<Instant>) -> bool {
        let ready = || (self.is_closed() || self.has_items()).then_some(());
        if ready().is_some() {
            return retry_after_yield_blocking(deadline);
        }
        if spin(ready) {
            return true;
        }
        self.seg
            .channel
            .wait_blocking(ready, deadline, SAFETY_RECHECK)
            .is_some()
    }
}

/// The caller's attempt just failed although the ring looks ready (another process won the
/// race, or a damaged ring's words disagree): give the CPU a turn before it tries again, so a
/// retry loop is never a busy loop, and honour the deadline. `false` once it passed.
async fn retry_after_yield(deadline: Option<Instant>) -> bool {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return false;
    }
    tokio::task::yield_now().await;
    true
}

fn retry_after_yield_blocking(deadline: Option<Instant>) -> bool {
    if deadline.is_some_and(|d| Instant::now() >= d) {
        return false;
    }
    std::thread::yield_now();
    true
}
