//! [`Event`]: a flag processes wait on (Python's `multiprocessing.Event`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::segment::{Segment, SegmentWire};
use crate::Result;
use crate::handle::{FdSink, FdSource, Handle, serde_via_handle};
use crate::notify::SAFETY_RECHECK;
use crate::shm::header::Kind;

const FLAG: usize = 0;
const STATE: usize = 4;

/// A flag that tasks, threads and processes can wait for (Python's `multiprocessing.Event`).
///
/// `set` wakes every waiter in every process; `clear` resets it. Cheap to clone; send it to
/// another process as a spawn argument, inside a message or with [`pass`](crate::pass).
///
/// # Memory ordering
///
/// Everything a process wrote before `set` is visible to a waiter once its `wait` returns
/// (`set` is a release store, the waiter's check an acquire load).
///
/// # Wake-up latency
///
/// A waiter that finds the flag clear checks it for up to 20 µs, yielding its CPU between
/// checks, before it parks (unless another waiter is parked already). In a hand-off between
/// processes — set, wait for the answer, set again — the next `set` usually comes within that
/// time: the waiter notices it about 1 µs later (0.2–0.3 µs when the two processes run on
/// different CPUs), async or blocking, and neither side makes a system call. A parked
/// [`wait_blocking`](Self::wait_blocking) is woken through a futex, about 3–4 µs after `set`
/// on a 2-core VM once it has been idle a while (a raw futex: about 3 µs); a parked async
/// [`wait`](Self::wait) through tokio's reactor, about 5 µs (`cargo bench`, W5). An async
/// waiter that is the future a multi-threaded runtime's `block_on` (for example
/// `#[tokio::main]`'s body) awaits directly takes a few µs more once parked, because the
/// worker that reads the reactor must then wake the main thread as well.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::Event;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let ready = Event::new()?;
/// let waiter = tokio::spawn({
///     let ready = ready.clone();
///     async move { ready.wait().await }
/// });
/// ready.set();
/// waiter.await.unwrap();
/// assert!(ready.is_set());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Event {
    seg: Arc<Segment>,
}

impl Event {
    /// A new, cleared event.
    ///
    /// # Errors
    ///
    /// [`Error::Io`](crate::Error::Io) when the segment or its doorbell cannot be made.
    pub fn new() -> Result<Self> {
        Ok(Event {
            seg: Arc::new(Segment::create(Kind::Event, STATE, |_| Ok(()))?),
        })
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        if self.seg.u32(FLAG).swap(1, Ordering::Release) == 0 {
            self.seg.channel.notify();
        }
    }

    /// Clears the flag.
    pub fn clear(&self) {
        self.seg.u32(FLAG).store(0, Ordering::Release);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.seg.u32(FLAG).load(Ordering::Acquire) != 0
    }

    fn check(&self) -> Option<()> {
        self.is_set().then_some(())
    }

    /// Waits until the flag is set.
    ///
    /// A waiter that finds the flag clear checks it for up to 20 µs (holding its thread, as
    /// the queues' waiters do) before it parks, unless another waiter is already parked.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped wait leaves no trace.
    pub async fn wait(&self) {
        let _ = self
            .seg
            .channel
            .wait_after_check(|| self.check(), None, SAFETY_RECHECK)
            .await;
    }

    /// Waits until the flag is set or `timeout` passes; returns whether it is set (as Python's
    /// `wait(timeout)`).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn wait_timeout(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.seg
            .channel
            .wait_after_check(|| self.check(), Some(deadline), SAFETY_RECHECK)
            .await
            .is_some()
    }

    /// [`wait`](Self::wait) for threads (not on a runtime worker: it blocks the thread).
    pub fn wait_blocking(&self) {
        let _ = self
            .seg
            .channel
            .wait_blocking_after_check(|| self.check(), None, SAFETY_RECHECK);
    }

    /// [`wait_timeout`](Self::wait_timeout) for threads.
    pub fn wait_timeout_blocking(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.seg
            .channel
            .wait_blocking_after_check(|| self.check(), Some(deadline), SAFETY_RECHECK)
            .is_some()
    }

    /// Rings the channel without setting the flag (tests of spurious wake-ups).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn notify_spuriously(&self) {
        self.seg.channel.notify();
    }

    /// Waiters counted in on this event's channel (blocking, async).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn waiters(&self) -> (u32, u32) {
        self.seg.channel.waiters()
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("is_set", &self.is_set())
            .finish()
    }
}

impl Handle for Event {
    type Wire = SegmentWire;

    fn to_wire(&self, fds: &mut FdSink) -> Result<SegmentWire> {
        self.seg.to_wire(fds)
    }

    fn from_wire(wire: SegmentWire, fds: &mut FdSource) -> Result<Self> {
        Ok(Event {
            seg: Arc::new(Segment::from_wire(wire, fds, Kind::Event, STATE)?),
        })
    }
}

serde_via_handle!(Event);
