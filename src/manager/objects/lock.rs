//! Shared locks ([`Manager::lock`], [`Manager::rlock`]; Python's `manager.Lock()` /
//! `manager.RLock()`), held by a process, and released when it dies.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{builtin_proxy, wait_until};
use crate::manager::served::{Call, Reply, Served, unknown_method};
use crate::manager::wire::encode;
use crate::manager::{Manager, ProxyCore};
use crate::{Error, Result};

pub(crate) const TYPE_NAME: &str = "mp.lock";
pub(crate) const RLOCK_TYPE_NAME: &str = "mp.rlock";

/// A lock as the manager holds it: the connection holding it, and how often (re-entrant).
pub(crate) struct LockCore {
    state: Mutex<LockState>,
    changed: Notify,
    reentrant: bool,
}

#[derive(Default)]
struct LockState {
    holder: Option<u64>,
    depth: u32,
    /// The last holder's connection closed while holding it; the next acquirer is told.
    owner_died: bool,
}

/// Acquired normally.
const ACQUIRED: u8 = 0;
/// Acquired, after the previous holder's process died holding it.
const ACQUIRED_OWNER_DIED: u8 = 1;

pub(crate) fn construct(_init: &[u8]) -> Result<Arc<dyn Served>> {
    Ok(Arc::new(LockObject(LockCore::new(false))))
}

pub(crate) fn construct_rlock(_init: &[u8]) -> Result<Arc<dyn Served>> {
    Ok(Arc::new(LockObject(LockCore::new(true))))
}

impl LockCore {
    pub(crate) fn new(reentrant: bool) -> LockCore {
        LockCore {
            state: Mutex::new(LockState::default()),
            changed: Notify::new(),
            reentrant,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LockState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Acquires for `conn` (`depth` times at once, for a condition's re-acquire); returns
    /// [`ACQUIRED`] or [`ACQUIRED_OWNER_DIED`]. Cancel-safe: it takes the lock under the mutex,
    /// after its last await.
    pub(crate) async fn acquire(
        &self,
        conn: u64,
        depth: u32,
        deadline: Option<Instant>,
    ) -> Result<u8> {
        wait_until(&self.changed, deadline, || {
            let mut state = self.state();
            match state.holder {
                None => {
                    state.holder = Some(conn);
                    state.depth = depth;
                    let died = std::mem::take(&mut state.owner_died);
                    Some(if died { ACQUIRED_OWNER_DIED } else { ACQUIRED })
                }
                Some(holder) if holder == conn && self.reentrant => {
                    state.depth += depth;
                    Some(ACQUIRED)
                }
                Some(_) => None,
            }
        })
        .await
        .ok_or(Error::Timeout)
    }

    /// Releases one level held by `conn`; with `all`, every level, returning how many.
    pub(crate) fn release(&self, conn: u64, all: bool) -> Result<u32> {
        let mut state = self.state();
        if state.holder != Some(conn) {
            return Err(Error::InvalidArgument(
                "release of a lock this process does not hold".into(),
            ));
        }
        let released = if all { state.depth } else { 1 };
        state.depth -= released;
        if state.depth == 0 {
            state.holder = None;
            drop(state);
            self.changed.notify_waiters();
        }
        Ok(released)
    }

    /// Whether some process holds it.
    pub(crate) fn is_locked(&self) -> bool {
        self.state().holder.is_some()
    }

    /// Whether `conn` holds it.
    pub(crate) fn is_held_by(&self, conn: u64) -> bool {
        self.state().holder == Some(conn)
    }

    pub(crate) fn caller_gone(&self, conn: u64) {
        let mut state = self.state();
        if state.holder == Some(conn) {
            state.holder = None;
            state.depth = 0;
            state.owner_died = true;
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// Runs the lock methods shared by locks and conditions.
    pub(crate) async fn run(&self, call: &Call) -> Option<Result<Vec<u8>>> {
        Some(match call.method.as_str() {
            "acquire" => match call.args::<(Option<u64>,)>() {
                Ok((timeout_ms,)) => {
                    let deadline = timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
                    self.acquire(call.conn, 1, deadline)
                        .await
                        .and_then(|outcome| encode(&outcome))
                }
                Err(e) => Err(e),
            },
            "release" => self.release(call.conn, false).and_then(|_| encode(&())),
            "is_locked" => encode(&self.is_locked()),
            _ => return None,
        })
    }
}

struct LockObject(LockCore);

impl Served for LockObject {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        Box::pin(async move {
            match self.0.run(&call).await {
                Some(outcome) => outcome,
                None => Err(unknown_method("Lock", &call.method)),
            }
        })
    }

    fn caller_gone(&self, conn: u64) {
        self.0.caller_gone(conn);
    }
}

/// Why acquiring a managed lock did not simply hand it out.
pub enum ManagedLockError {
    /// The previous holder's process died while holding the lock (its connection closed). The
    /// lock is now yours: the guard holds it. The state it protects may be half-updated.
    OwnerDied(ManagedLockGuard),
    /// The timeout passed first (or, for `try_acquire`, the lock was held).
    Timeout,
    /// The manager failed: [`Error::Closed`] when it is gone.
    Manager(Error),
}

impl ManagedLockError {
    /// The guard of an [`OwnerDied`](Self::OwnerDied), if this is one.
    pub fn into_guard(self) -> Option<ManagedLockGuard> {
        match self {
            ManagedLockError::OwnerDied(guard) => Some(guard),
            _ => None,
        }
    }
}

impl fmt::Debug for ManagedLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagedLockError::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            ManagedLockError::Timeout => f.write_str("Timeout"),
            ManagedLockError::Manager(e) => write!(f, "Manager({e:?})"),
        }
    }
}

impl fmt::Display for ManagedLockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ManagedLockError::OwnerDied(_) => {
                f.write_str("the previous owner died while holding the lock")
            }
            ManagedLockError::Timeout => f.write_str("timed out waiting for the lock"),
            ManagedLockError::Manager(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ManagedLockError {}

impl From<ManagedLockError> for Error {
    /// `OwnerDied` (releasing the lock), `Timeout`, or the manager's error.
    fn from(e: ManagedLockError) -> Error {
        match e {
            ManagedLockError::OwnerDied(_) => Error::OwnerDied,
            ManagedLockError::Timeout => Error::Timeout,
            ManagedLockError::Manager(e) => e,
        }
    }
}

/// Holds a managed lock (or one level of a re-entrant one, or a condition's lock); releases
/// it when dropped.
pub struct ManagedLockGuard {
    core: ProxyCore,
    held: bool,
}

impl ManagedLockGuard {
    /// Releases now, and says whether the manager agreed (dropping the guard releases too,
    /// without waiting).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone (which released the lock anyway).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if dropped before the manager answered, the release still happens.
    pub async fn release(mut self) -> Result<()> {
        self.held = false;
        self.core.call("release", &()).await
    }

    pub(crate) fn core(&self) -> &ProxyCore {
        &self.core
    }

    /// Marks the lock as no longer held (a condition wait that was dropped released it).
    pub(crate) fn set_held(&mut self, held: bool) {
        self.held = held;
    }
}

impl Drop for ManagedLockGuard {
    fn drop(&mut self) {
        if self.held {
            self.core.post("release", &());
        }
    }
}

impl fmt::Debug for ManagedLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManagedLockGuard")
            .field("object", &self.core.object_id())
            .field("held", &self.held)
            .finish()
    }
}

/// Acquires the lock behind `core`, waiting at most `timeout_ms`.
pub(crate) async fn acquire(
    core: &ProxyCore,
    timeout_ms: Option<u64>,
) -> Result<ManagedLockGuard, ManagedLockError> {
    let outcome: Result<u8> = core
        .call_undoable("acquire", &(timeout_ms,), Some("release"))
        .await;
    let guard = || ManagedLockGuard {
        core: core.clone(),
        held: true,
    };
    match outcome {
        Ok(ACQUIRED) => Ok(guard()),
        Ok(_) => Err(ManagedLockError::OwnerDied(guard())),
        Err(Error::Timeout) => Err(ManagedLockError::Timeout),
        Err(e) => Err(ManagedLockError::Manager(e)),
    }
}

macro_rules! lock_methods {
    ($proxy:ident) => {
        impl $proxy {
            /// Acquires the lock, waiting as long as it takes.
            ///
            /// # Errors
            ///
            /// [`ManagedLockError::OwnerDied`](crate::manager::ManagedLockError::OwnerDied) (holding the lock) when its previous holder's
            /// process died holding it; [`ManagedLockError::Manager`](crate::manager::ManagedLockError::Manager) when the manager is gone.
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe: a dropped call takes nothing (the manager releases a lock it had
            /// already handed to the dropped call).
            pub async fn acquire(
                &self,
            ) -> Result<$crate::manager::ManagedLockGuard, $crate::manager::ManagedLockError> {
                $crate::manager::objects::lock::acquire(&self.core, None).await
            }

            /// [`acquire`](Self::acquire), waiting at most `timeout`.
            ///
            /// # Errors
            ///
            /// [`ManagedLockError::Timeout`](crate::manager::ManagedLockError::Timeout), or as [`acquire`](Self::acquire).
            ///
            /// # Cancel safety
            ///
            /// As [`acquire`](Self::acquire).
            pub async fn acquire_timeout(
                &self,
                timeout: ::std::time::Duration,
            ) -> Result<$crate::manager::ManagedLockGuard, $crate::manager::ManagedLockError> {
                $crate::manager::objects::lock::acquire(
                    &self.core,
                    Some($crate::manager::objects::timeout_ms(timeout)),
                )
                .await
            }

            /// [`acquire`](Self::acquire) if the lock is free now (Python's
            /// `acquire(blocking=False)`).
            ///
            /// # Errors
            ///
            /// [`ManagedLockError::Timeout`](crate::manager::ManagedLockError::Timeout) when it is held, or as [`acquire`](Self::acquire).
            ///
            /// # Cancel safety
            ///
            /// As [`acquire`](Self::acquire).
            pub async fn try_acquire(
                &self,
            ) -> Result<$crate::manager::ManagedLockGuard, $crate::manager::ManagedLockError> {
                $crate::manager::objects::lock::acquire(&self.core, Some(0)).await
            }

            /// Whether some process holds the lock.
            ///
            /// # Errors
            ///
            /// [`Error::Closed`] when the manager is gone.
            ///
            /// # Cancel safety
            ///
            /// Cancel-safe.
            pub async fn is_locked(&self) -> $crate::Result<bool> {
                self.core.call("is_locked", &()).await
            }
        }
    };
}
pub(crate) use lock_methods;

builtin_proxy!(
    /// A proxy of a lock in a manager ([`Manager::lock`]).
    ///
    /// The lock is held by a *process*: another task of the same process waits like anyone
    /// else. A holder whose process dies (or whose last proxy of this manager is dropped)
    /// releases it, and the next acquirer gets [`ManagedLockError::OwnerDied`](crate::manager::ManagedLockError::OwnerDied) with the lock.
    LockProxy,
    TYPE_NAME
);
lock_methods!(LockProxy);

builtin_proxy!(
    /// A proxy of a re-entrant lock in a manager ([`Manager::rlock`]): the process holding it
    /// may acquire it again, and must release it as often.
    RLockProxy,
    RLOCK_TYPE_NAME
);
lock_methods!(RLockProxy);

impl Manager {
    /// A new lock (Python's `manager.Lock()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a lock made for a dropped call is released again.
    pub async fn lock(&self) -> Result<LockProxy> {
        self.create_builtin(&()).await
    }

    /// A new re-entrant lock (Python's `manager.RLock()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a lock made for a dropped call is released again.
    pub async fn rlock(&self) -> Result<RLockProxy> {
        self.create_builtin(&()).await
    }
}
