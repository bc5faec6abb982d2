//! [`RLock`]: a re-entrant lock (Python's `multiprocessing.RLock`).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::lock::{Lock, LockError, LockGuard};
use crate::Result;

/// Who re-enters: the current tokio task, or the current thread outside any task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Owner {
    Task(tokio::task::Id),
    Thread(std::thread::ThreadId),
}

fn current_owner() -> Owner {
    match tokio::task::try_id() {
        Some(id) => Owner::Task(id),
        None => Owner::Thread(std::thread::current().id()),
    }
}

/// A lock the same owner may take again while holding it (Python's `multiprocessing.RLock`).
///
/// Across processes it is a [`Lock`] (owner death is reported the same way). Inside the
/// holding process, the *owner* is the tokio task that took it — or the thread, outside any
/// task — so the task can lock it again without deadlocking itself, and every other task or
/// thread waits. Each [`lock`](Self::lock) returns a guard; the lock is released when the
/// owner's last guard drops, in any order.
///
/// Guards are `Send` and stay valid when a task moves between threads. A guard handed to another
/// task still releases correctly, but re-entry is recognised only in the task that locked.
///
/// # Examples
///
/// ```
/// use tokio_multiprocessing::RLock;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> tokio_multiprocessing::Result<()> {
/// let lock = RLock::new()?;
/// let outer = lock.lock().await?;
/// let inner = lock.lock().await?; // the same task: no deadlock
/// drop(outer);
/// assert!(lock.is_locked());
/// drop(inner);
/// assert!(!lock.is_locked());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RLock {
    lock: Lock,
    held: Arc<Mutex<HashMap<Owner, Weak<Hold>>>>,
}

/// The one hold of the underlying lock that an owner's guards share. (Behind a mutex so any of
/// them can mark the state consistent: the map of holds keeps a weak reference, so the guards
/// never have the `Arc` to themselves.)
type Hold = Mutex<LockGuard>;

/// Holds an [`RLock`]; the lock is released when the owner's last guard drops.
#[must_use = "the lock is released as soon as the last guard is dropped"]
#[clippy::has_significant_drop]
pub struct RLockGuard {
    inner: Arc<Hold>,
    held: Arc<Mutex<HashMap<Owner, Weak<Hold>>>>,
    owner: Owner,
}

impl RLock {
    /// A new, unlocked re-entrant lock.
    ///
    /// # Errors
    ///
    /// As [`Lock::new`].
    pub fn new() -> Result<Self> {
        Ok(Self::from_lock(Lock::new()?))
    }

    fn from_lock(lock: Lock) -> Self {
        RLock {
            lock,
            held: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether anybody holds the lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    fn reenter(&self, owner: Owner) -> Option<RLockGuard> {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let inner = held.get(&owner)?.upgrade()?;
        Some(RLockGuard {
            inner,
            held: self.held.clone(),
            owner,
        })
    }

    fn wrap(
        &self,
        owner: Owner,
        result: Result<LockGuard, LockError>,
    ) -> Result<RLockGuard, RLockError> {
        let (guard, died) = match result {
            Ok(guard) => (guard, false),
            Err(LockError::OwnerDied(guard)) => (guard, true),
            Err(e) => return Err(RLockError::Lock(e)),
        };
        let inner = Arc::new(Mutex::new(guard));
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(owner, Arc::downgrade(&inner));
        let guard = RLockGuard {
            inner,
            held: self.held.clone(),
            owner,
        };
        if died {
            Err(RLockError::OwnerDied(guard))
        } else {
            Ok(guard)
        }
    }

    /// Takes the lock, or takes it again if the current task (or thread) holds it.
    ///
    /// # Errors
    ///
    /// [`RLockError::OwnerDied`] (with the lock) when the holding process died; otherwise as
    /// [`Lock::lock`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`Lock::lock`].
    pub async fn lock(&self) -> Result<RLockGuard, RLockError> {
        let owner = current_owner();
        if let Some(guard) = self.reenter(owner) {
            return Ok(guard);
        }
        let result = self.lock.lock().await;
        self.wrap(owner, result)
    }

    /// [`lock`](Self::lock) with a deadline.
    ///
    /// # Errors
    ///
    /// As [`Lock::lock_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard, RLockError> {
        let owner = current_owner();
        if let Some(guard) = self.reenter(owner) {
            return Ok(guard);
        }
        let result = self.lock.lock_timeout(timeout).await;
        self.wrap(owner, result)
    }

    /// Takes or re-takes the lock without waiting.
    ///
    /// # Errors
    ///
    /// As [`Lock::try_lock`].
    pub fn try_lock(&self) -> Result<RLockGuard, RLockError> {
        let owner = current_owner();
        if let Some(guard) = self.reenter(owner) {
            return Ok(guard);
        }
        self.wrap(owner, self.lock.try_lock())
    }

    /// [`lock`](Self::lock) for threads.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock).
    pub fn lock_blocking(&self) -> Result<RLockGuard, RLockError> {
        let owner = current_owner();
        if let Some(guard) = self.reenter(owner) {
            return Ok(guard);
        }
        self.wrap(owner, self.lock.lock_blocking())
    }
}

impl RLockGuard {
    /// See [`LockGuard::mark_consistent`]: after [`RLockError::OwnerDied`], declares the
    /// protected state repaired so the lock stays usable. Any guard of the hold may do it.
    pub fn mark_consistent(&mut self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .mark_consistent();
    }
}

impl Drop for RLockGuard {
    fn drop(&mut self) {
        if Arc::strong_count(&self.inner) == 1 {
            let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
            if held
                .get(&self.owner)
                .is_some_and(|w| w.ptr_eq(&Arc::downgrade(&self.inner)))
            {
                held.remove(&self.owner);
            }
        }
    }
}

/// Why [`RLock::lock`] did not simply hand out the lock.
pub enum RLockError {
    /// The previous holder's process died; the guard holds the lock (see [`LockError::OwnerDied`]).
    OwnerDied(RLockGuard),
    /// Any other [`LockError`] (never `OwnerDied`).
    Lock(LockError),
}

impl fmt::Debug for RLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RLockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            RLockError::Lock(e) => write!(f, "{e:?}"),
        }
    }
}

impl fmt::Display for RLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RLockError::OwnerDied(_) => {
                f.write_str("the previous owner died while holding the lock")
            }
            RLockError::Lock(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl std::error::Error for RLockError {}

impl From<RLockError> for crate::Error {
    fn from(e: RLockError) -> crate::Error {
        match e {
            RLockError::OwnerDied(_) => crate::Error::OwnerDied,
            RLockError::Lock(e) => e.into(),
        }
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

impl fmt::Debug for RLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}

impl Serialize for RLock {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.lock.serialize(s)
    }
}

impl<'de> Deserialize<'de> for RLock {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(RLock::from_lock(Lock::deserialize(d)?))
    }
}
