//! Synchronization between processes: [`Event`], [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Barrier`], and shared [`Value`] / [`Array`] (Python's
//! `multiprocessing` synchronization primitives and shared ctypes).
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
//! | `RLock()` | [`RLock`]: re-entrant for the task (or thread) that holds it |
//! | `Lock()`: `acquire`, `release` | [`Lock`]: `lock().await` → guard (released on drop), `try_lock`, `lock_timeout` |
//! | `Value('i', 0)`, `Array('d', n)`, `RawValue` | [`Value`], [`Array`] (`lock().await` → guard that derefs), [`RawValue`], [`RawArray`] |
//! | `Condition(lock)`: `wait`, `wait_for(pred, timeout)`, `notify(n)`, `notify_all` | [`Condition`]: `wait(guard).await` → guard, `wait_for`, `wait_for_timeout`, same names |
//! | `Barrier(parties, action)`: `wait`, `abort`, `reset` | [`Barrier`] (`with_action`): `wait().await` → index, `abort`, `reset`, [`Error::Broken`](crate::Error::Broken) |
//! | `Semaphore(n)`, `BoundedSemaphore(n)` | [`Semaphore`], [`BoundedSemaphore`]: `acquire().await` → permit, `release()` |

mod barrier;
mod condition;
mod event;
mod lock;
mod rlock;
pub(crate) mod segment;
mod semaphore;
mod value;

pub use barrier::{Barrier, MAX_PARTIES};
pub use condition::{Condition, MAX_WAITERS};
pub use event::Event;
pub(crate) use lock::{Held, HoldError};
pub use lock::{Lock, LockError, LockGuard};
pub use rlock::{RLock, RLockError, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphorePermit};
pub use value::{Array, ArrayGuard, RawArray, RawValue, Value, ValueGuard};
