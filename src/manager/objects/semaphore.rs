//! Shared semaphores ([`Manager::semaphore`], [`Manager::bounded_semaphore`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{builtin_proxy, deadline, timeout_ms, wait_until};
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, unknown_method};
use crate::manager::wire::encode;
use crate::{Error, Result};

pub(crate) const TYPE_NAME: &str = "mp.semaphore";

struct Semaphore {
    state: Mutex<SemaphoreState>,
    changed: Notify,
}

struct SemaphoreState {
    value: u64,
    /// A bounded semaphore's initial value, which releases may not exceed.
    bound: Option<u64>,
}

pub(crate) fn construct(init: &[u8]) -> Result<Arc<dyn Served>> {
    let (value, bounded): (u64, bool) = crate::manager::wire::decode(init)?;
    Ok(Arc::new(Semaphore {
        state: Mutex::new(SemaphoreState {
            value,
            bound: bounded.then_some(value),
        }),
        changed: Notify::new(),
    }))
}

impl Semaphore {
    fn state(&self) -> std::sync::MutexGuard<'_, SemaphoreState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self: Arc<Self>, call: Call) -> Result<Vec<u8>> {
        match call.method.as_str() {
            "acquire" => {
                let (timeout_ms,): (Option<u64>,) = call.args()?;
                let taken = wait_until(&self.changed, deadline(timeout_ms), || {
                    let mut state = self.state();
                    let free = state.value > 0;
                    if free {
                        state.value -= 1;
                    }
                    free.then_some(())
                })
                .await;
                taken.ok_or(Error::Timeout).and_then(|()| encode(&()))
            }
            "release" => {
                let mut state = self.state();
                if state.bound.is_some_and(|bound| state.value >= bound) {
                    return Err(Error::InvalidArgument(
                        "a bounded semaphore was released too many times".into(),
                    ));
                }
                state.value += 1;
                drop(state);
                self.changed.notify_waiters();
                encode(&())
            }
            "value" => encode(&self.state().value),
            other => Err(unknown_method("Semaphore", other)),
        }
    }
}

impl Served for Semaphore {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        Box::pin(self.run(call))
    }
}

builtin_proxy!(
    /// A proxy of a semaphore in a manager ([`Manager::semaphore`],
    /// [`Manager::bounded_semaphore`]).
    ///
    /// Permits are counts, not owned: a process that dies holding some does not give them back
    /// (as in Python).
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`] when the manager is gone.
    SemaphoreProxy,
    TYPE_NAME
);

impl SemaphoreProxy {
    async fn acquire_with(&self, timeout_ms: Option<u64>) -> Result<()> {
        self.core
            .call_undoable("acquire", &(timeout_ms,), Some("release"))
            .await
    }

    /// Takes a permit, waiting for one.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call takes no permit (one the manager had already handed out is
    /// given back).
    pub async fn acquire(&self) -> Result<()> {
        self.acquire_with(None).await
    }

    /// Takes a permit, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when none came.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.acquire_with(Some(timeout_ms(timeout))).await
    }

    /// Takes a permit if one is free now.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when none is.
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](Self::acquire).
    pub async fn try_acquire(&self) -> Result<()> {
        self.acquire_with(Some(0)).await
    }

    /// Gives a permit back.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when a bounded semaphore would exceed its initial value.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe; a dropped call may still have released.
    pub async fn release(&self) -> Result<()> {
        self.core.call("release", &()).await
    }

    /// The number of free permits (Python's `get_value`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn value(&self) -> Result<u64> {
        self.core.call("value", &()).await
    }
}

impl Manager {
    /// A new semaphore with `value` permits (Python's `manager.Semaphore(value)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a semaphore made for a dropped call is released again.
    pub async fn semaphore(&self, value: u64) -> Result<SemaphoreProxy> {
        self.create_builtin(&(value, false)).await
    }

    /// A new semaphore whose releases may not exceed `value` (Python's
    /// `manager.BoundedSemaphore(value)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a semaphore made for a dropped call is released again.
    pub async fn bounded_semaphore(&self, value: u64) -> Result<SemaphoreProxy> {
        self.create_builtin(&(value, true)).await
    }
}
