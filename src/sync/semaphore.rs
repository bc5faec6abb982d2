//! [`Semaphore`] and [`BoundedSemaphore`]: counters of permits shared by processes.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::segment::{Segment, SegmentWire};
use crate::handle::{FdSink, FdSource, Handle, serde_via_handle};
use crate::notify::SAFETY_RECHECK;
use crate::shm::header::Kind;
use crate::{Error, Result};

const VALUE: usize = 0; // u32: permits available
const BOUND: usize = 4; // u32: 0 = unbounded, else the initial value and maximum
const STATE: usize = 8;

/// The engine both semaphore types share.
#[derive(Clone)]
struct Engine {
    seg: Arc<Segment>,
}

impl Engine {
    fn new(permits: u32, bounded: bool) -> Result<Self> {
        let seg = Segment::create(Kind::Semaphore, STATE, |shm| {
            shm.atomic_u32(crate::notify::CHANNEL_SIZE + VALUE)?
                .store(permits, Ordering::Relaxed);
            let bound = if bounded { permits.max(1) } else { 0 };
            shm.atomic_u32(crate::notify::CHANNEL_SIZE + BOUND)?
                .store(bound, Ordering::Relaxed);
            Ok(())
        })?;
        Ok(Engine { seg: Arc::new(seg) })
    }

    fn value(&self) -> u32 {
        self.seg.u32(VALUE).load(Ordering::Acquire)
    }

    fn try_take(&self) -> Option<()> {
        self.seg
            .u32(VALUE)
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |v| v.checked_sub(1))
            .ok()
            .map(drop)
    }

    fn release(&self) -> Result<()> {
        let bound = self.seg.u32(BOUND).load(Ordering::Relaxed);
        self.seg
            .u32(VALUE)
            .fetch_update(Ordering::Release, Ordering::Relaxed, |v| {
                if bound != 0 && v >= bound {
                    None
                } else {
                    v.checked_add(1)
                }
            })
            .map_err(|_| Error::InvalidArgument("semaphore released too many times".into()))?;
        self.seg.channel.notify();
        Ok(())
    }

    async fn acquire(&self, deadline: Option<Instant>) -> Option<()> {
        self.seg
            .channel
            .wait_after_check(|| self.try_take(), deadline, SAFETY_RECHECK)
            .await
    }

    fn acquire_blocking(&self, deadline: Option<Instant>) -> Option<()> {
        self.seg
            .channel
            .wait_blocking_after_check(|| self.try_take(), deadline, SAFETY_RECHECK)
    }
}

/// A permit from a semaphore; dropping it gives the permit back.
#[must_use = "the permit is returned as soon as it is dropped"]
#[clippy::has_significant_drop]
pub struct SemaphorePermit {
    engine: Option<Engine>,
}

impl SemaphorePermit {
    /// Keeps the permit taken for good (Python's `acquire()` without a matching `release()`).
    pub fn forget(mut self) {
        self.engine = None;
    }
}

impl Drop for SemaphorePermit {
    fn drop(&mut self) {
        if let Some(engine) = self.engine.take() {
            // A permit only exists for a value that was taken, so this cannot overflow a bound
            // unless somebody also released without a permit; then the extra release is dropped.
            let _ = engine.release();
        }
    }
}

impl fmt::Debug for SemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").finish_non_exhaustive()
    }
}

macro_rules! semaphore {
    ($name:ident, $bounded:expr, $doc:literal) => {
        #[doc = $doc]
        ///
        /// Permits are counted in shared memory; `acquire` waits while none is left, in any
        /// process. Permits are not owned: a process that dies holding some does not give them
        /// back (as in Python, where any process may `release`), because nothing records who took
        /// which permit; guard shared resources whose holders may die with a [`Lock`](crate::Lock).
        ///
        /// # Memory ordering
        ///
        /// Taking a permit is an acquire operation and giving one back a release operation.
        #[derive(Clone)]
        pub struct $name {
            engine: Engine,
        }

        impl $name {
            /// A semaphore with `permits` permits available.
            ///
            /// # Errors
            ///
            /// [`Error::Io`] when the segment or its doorbell cannot be made.
            pub fn new(permits: u32) -> Result<Self> {
                Ok($name {
                    engine: Engine::new(permits, $bounded)?,
                })
            }

            /// Permits available now (Python's `get_value()`).
            pub fn available_permits(&self) -> u32 {
                self.engine.value()
            }

            /// Takes a permit if one is available, without waiting.
            ///
            /// # Errors
            ///
            /// [`Error::Empty`] when none is.
            pub fn try_acquire(&self) -> Result<SemaphorePermit> {
                self.engine.try_take().ok_or(Error::Empty)?;
                Ok(self.permit())
            }

            /// Waits for a permit and takes it.
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe: the permit is taken in the same step that completes the future, so
            /// a dropped `acquire` holds nothing.
            pub async fn acquire(&self) -> SemaphorePermit {
                let _ = self.engine.acquire(None).await;
                self.permit()
            }

            /// [`acquire`](Self::acquire) with a deadline.
            ///
            /// # Errors
            ///
            /// [`Error::Timeout`].
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe, as [`acquire`](Self::acquire).
            pub async fn acquire_timeout(&self, timeout: Duration) -> Result<SemaphorePermit> {
                self.engine
                    .acquire(Some(Instant::now() + timeout))
                    .await
                    .ok_or(Error::Timeout)?;
                Ok(self.permit())
            }

            /// [`acquire`](Self::acquire) for threads (not on a runtime worker).
            pub fn acquire_blocking(&self) -> SemaphorePermit {
                let _ = self.engine.acquire_blocking(None);
                self.permit()
            }

            /// [`acquire_timeout`](Self::acquire_timeout) for threads.
            ///
            /// # Errors
            ///
            /// [`Error::Timeout`].
            pub fn acquire_timeout_blocking(&self, timeout: Duration) -> Result<SemaphorePermit> {
                self.engine
                    .acquire_blocking(Some(Instant::now() + timeout))
                    .ok_or(Error::Timeout)?;
                Ok(self.permit())
            }

            /// Adds a permit without a [`SemaphorePermit`] (Python's `release()`), waking a waiter.
            ///
            /// # Errors
            ///
            /// For a [`BoundedSemaphore`], [`Error::InvalidArgument`] when that would exceed the
            /// initial value (Python's `ValueError`); for either, at 2³² − 1 permits.
            pub fn release(&self) -> Result<()> {
                self.engine.release()
            }

            fn permit(&self) -> SemaphorePermit {
                SemaphorePermit {
                    engine: Some(self.engine.clone()),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("available_permits", &self.available_permits())
                    .finish()
            }
        }

        impl Handle for $name {
            type Wire = SegmentWire;

            fn to_wire(&self, fds: &mut FdSink) -> Result<SegmentWire> {
                self.engine.seg.to_wire(fds)
            }

            fn from_wire(wire: SegmentWire, fds: &mut FdSource) -> Result<Self> {
                let seg = Segment::from_wire(wire, fds, Kind::Semaphore, STATE)?;
                let bounded = seg.u32(BOUND).load(Ordering::Relaxed) != 0;
                if bounded != $bounded {
                    return Err(Error::Corrupt("semaphore of the other kind".into()));
                }
                Ok($name {
                    engine: Engine { seg: Arc::new(seg) },
                })
            }
        }

        serde_via_handle!($name);
    };
}

semaphore!(
    Semaphore,
    false,
    "A counting semaphore shared by tasks, threads and processes (Python's `multiprocessing.Semaphore`)."
);
semaphore!(
    BoundedSemaphore,
    true,
    "A semaphore that refuses to be released above its initial value (Python's `multiprocessing.BoundedSemaphore`)."
);
