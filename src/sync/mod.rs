//! Synchronization between processes: [`Event`], [`Lock`], [`RLock`], [`Semaphore`],
//! [`BoundedSemaphore`], [`Condition`], [`Barrier`], and shared [`Value`] / [`Array`] (Python's
//! `multiprocessing` synchronization primitives and shared ctypes).
//!
//! Each primitive is a small state block in a shared segment plus a wait channel (see the crate's
//! `notify` module): a parked waiter costs no CPU, notifying nobody costs no system call, and
//! every primitive works at once from async tasks, plain threads (`*_blocking`) and other
//! processes. All are handles: pass them to [`Process::spawn`](crate::Process::spawn), inside
//! messages, or with [`pass`](crate::pass).
//!
//! # Waiting: a short check, then a park
//!
//! A waiter that finds an event clear, no permit, or its barrier or condition not yet released
//! checks again for up to 20 µs, yielding its CPU between checks (a locker spins a few µs, then
//! yields), before it parks on a futex (threads) or on an eventfd through tokio's reactor
//! (tasks); a waiter that finds another already parked parks at once. In a hand-off between two
//! processes — release, wait for the answer, release again — the answer usually comes while the
//! waiter checks: a semaphore ping-pong or a barrier round then takes about 1 µs, where
//! waking a parked process can take tens of µs on a small VM. A wait for something that does
//! not come costs those 20 µs once; an idle process uses no CPU.
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
