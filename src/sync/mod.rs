//! Synchronization between processes: [`Event`], [`Lock`], [`Semaphore`],
//! [`BoundedSemaphore`] (Python's `multiprocessing` synchronization primitives).
//!
//! Each primitive is a small state block in a shared segment plus a wait channel (see the crate's
//! `notify` module): waiting costs no CPU, notifying nobody costs no system call, and every
//! primitive works at once from async tasks, plain threads (`*_blocking`) and other processes.
//! All are handles: pass them to [`Process::spawn`](crate::Process::spawn), inside messages, or
//! with [`pass`](crate::pass).
//!
//! | Python | here |
//! |---|---|
//! | `Event()`: `set`, `clear`, `is_set`, `wait(timeout)` | [`Event`]: same, `wait().await`, `wait_timeout(d).await` |
//! | `Lock()`: `acquire`, `release` | [`Lock`]: `lock().await` → guard (released on drop), `try_lock`, `lock_timeout` |
//! | `Value('i', 0)`, `Array('d', n)`, `RawValue` | [`Value`], [`Array`] (`lock().await` → guard that derefs), [`RawValue`] |
//! | `Barrier(parties)`: `wait`, `abort`, `reset` | [`Barrier`]: `wait().await` → index, `abort`, `reset`, [`Error::Broken`](crate::Error::Broken) |
//! | `Semaphore(n)`, `BoundedSemaphore(n)` | [`Semaphore`], [`BoundedSemaphore`]: `acquire().await` → permit, `release()` |

mod barrier;
mod event;
mod lock;
mod segment;
mod semaphore;
mod value;

pub use barrier::{Barrier, MAX_PARTIES};
pub use event::Event;
pub use lock::{Lock, LockError, LockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphorePermit};
pub use value::{Array, ArrayGuard, RawValue, Value, ValueGuard};
