//! A shared barrier ([`Manager::barrier`], Python's `manager.Barrier(parties)`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{builtin_proxy, deadline, timeout_ms, wait_until};
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, unknown_method};
use crate::manager::wire::encode;
use crate::{Error, Result};

pub(crate) const TYPE_NAME: &str = "mp.barrier";

struct Barrier {
    state: Mutex<BarrierState>,
    changed: Notify,
}

/// How one round of the barrier ended.
#[derive(Default)]
struct Round {
    released: bool,
    broken: bool,
}

struct BarrierState {
    parties: u64,
    waiting: u64,
    round: Arc<Mutex<Round>>,
    /// Broken until `reset`.
    broken: bool,
}

pub(crate) fn construct(init: &[u8]) -> Result<Arc<dyn Served>> {
    let (parties,): (u64,) = crate::manager::wire::decode(init)?;
    if parties == 0 {
        return Err(Error::InvalidArgument(
            "a barrier needs at least one party".into(),
        ));
    }
    Ok(Arc::new(Barrier {
        state: Mutex::new(BarrierState {
            parties,
            waiting: 0,
            round: Arc::default(),
            broken: false,
        }),
        changed: Notify::new(),
    }))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Barrier {
    /// Breaks the current round (its waiters fail) and leaves the barrier broken.
    fn break_round(&self) {
        let mut state = lock(&self.state);
        state.broken = true;
        state.waiting = 0;
        lock(&state.round).broken = true;
        state.round = Arc::default();
        drop(state);
        self.changed.notify_waiters();
    }

    async fn wait(self: Arc<Self>, timeout_ms: Option<u64>) -> Result<u64> {
        let (index, round) = {
            let mut state = lock(&self.state);
            if state.broken {
                return Err(Error::Broken);
            }
            let index = state.waiting;
            state.waiting += 1;
            if state.waiting == state.parties {
                lock(&state.round).released = true;
                state.round = Arc::default();
                state.waiting = 0;
                drop(state);
                self.changed.notify_waiters();
                return Ok(index);
            }
            (index, state.round.clone())
        };
        // A waiter withdrawn (or timed out) breaks the barrier, as a timeout does in Python:
        // its arrival cannot be taken back without giving two parties one index.
        struct BreakOnDrop<'a>(Option<&'a Barrier>);
        impl Drop for BreakOnDrop<'_> {
            fn drop(&mut self) {
                if let Some(barrier) = self.0 {
                    barrier.break_round();
                }
            }
        }
        let mut breaker = BreakOnDrop(Some(&*self));
        let ended = wait_until(&self.changed, deadline(timeout_ms), || {
            let round = lock(&round);
            (round.released || round.broken).then_some(round.released)
        })
        .await;
        match ended {
            Some(released) => {
                breaker.0 = None;
                if released {
                    Ok(index)
                } else {
                    Err(Error::Broken)
                }
            }
            // Timed out: the breaker breaks the barrier as it goes.
            None => Err(Error::Broken),
        }
    }

    async fn run(self: Arc<Self>, call: Call) -> Result<Vec<u8>> {
        match call.method.as_str() {
            "wait" => {
                let (timeout_ms,): (Option<u64>,) = call.args()?;
                encode(&self.wait(timeout_ms).await?)
            }
            "abort" => {
                self.break_round();
                encode(&())
            }
            "reset" => {
                self.break_round();
                lock(&self.state).broken = false;
                encode(&())
            }
            "parties" => encode(&lock(&self.state).parties),
            "n_waiting" => encode(&lock(&self.state).waiting),
            "broken" => encode(&lock(&self.state).broken),
            other => Err(unknown_method("Barrier", other)),
        }
    }
}

impl Served for Barrier {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        Box::pin(self.run(call))
    }
}

builtin_proxy!(
    /// A proxy of a barrier in a manager ([`Manager::barrier`]): `parties` waiters, in any
    /// processes, are released together.
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`] when the manager is gone.
    BarrierProxy,
    TYPE_NAME
);

impl BarrierProxy {
    /// Waits until `parties` callers wait; returns this caller's arrival index, `0` to
    /// `parties - 1` (Python's `wait()`).
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] when the barrier is or becomes broken (aborted, reset, or a waiter
    /// timed out or was withdrawn).
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: a wait dropped before it returns breaks the barrier, as a timeout
    /// does (an arrival cannot be withdrawn).
    pub async fn wait(&self) -> Result<u64> {
        self.core.call("wait", &(None::<u64>,)).await
    }

    /// [`wait`](Self::wait), breaking the barrier if it takes longer than `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Broken`] on the timeout, or as [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<u64> {
        self.core.call("wait", &(Some(timeout_ms(timeout)),)).await
    }

    /// Breaks the barrier: current and future waiters fail until [`reset`](Self::reset).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe; a dropped call may still have aborted.
    pub async fn abort(&self) -> Result<()> {
        self.core.call("abort", &()).await
    }

    /// Returns the barrier to its empty state; current waiters fail with [`Error::Broken`].
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe; a dropped call may still have reset.
    pub async fn reset(&self) -> Result<()> {
        self.core.call("reset", &()).await
    }

    /// How many callers it releases together.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn parties(&self) -> Result<u64> {
        self.core.call("parties", &()).await
    }

    /// How many callers wait now.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn n_waiting(&self) -> Result<u64> {
        self.core.call("n_waiting", &()).await
    }

    /// Whether the barrier is broken.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn is_broken(&self) -> Result<bool> {
        self.core.call("broken", &()).await
    }
}

impl Manager {
    /// A new barrier for `parties` waiters (Python's `manager.Barrier(parties)`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for zero parties; [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a barrier made for a dropped call is released again.
    pub async fn barrier(&self, parties: u64) -> Result<BarrierProxy> {
        self.create_builtin(&(parties,)).await
    }
}
