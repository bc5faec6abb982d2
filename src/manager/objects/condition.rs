//! A shared condition variable ([`Manager::condition`], Python's `manager.Condition()`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::builtin_proxy;
use super::lock::{LockCore, ManagedLockGuard, lock_methods};
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, unknown_method};
use crate::manager::wire::encode;
use crate::{Error, Result};

pub(crate) const TYPE_NAME: &str = "mp.condition";

/// A re-entrant lock and the queue of its waiters.
struct Condition {
    lock: LockCore,
    waiters: Mutex<VecDeque<oneshot::Sender<()>>>,
}

pub(crate) fn construct(_init: &[u8]) -> Result<Arc<dyn Served>> {
    Ok(Arc::new(Condition {
        lock: LockCore::new(true),
        waiters: Mutex::new(VecDeque::new()),
    }))
}

impl Condition {
    fn waiters(&self) -> std::sync::MutexGuard<'_, VecDeque<oneshot::Sender<()>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes up to `n` live waiters (a waiter whose call was withdrawn is skipped).
    fn notify(&self, n: u64) -> u64 {
        let mut woken = 0;
        let mut waiters = self.waiters();
        while woken < n {
            match waiters.pop_front() {
                Some(waiter) => {
                    if waiter.send(()).is_ok() {
                        woken += 1;
                    }
                }
                None => break,
            }
        }
        woken
    }

    async fn run(self: Arc<Self>, call: Call) -> Result<Vec<u8>> {
        if let Some(outcome) = self.lock.run(&call).await {
            return outcome;
        }
        match call.method.as_str() {
            "wait" => {
                let (timeout_ms,): (Option<u64>,) = call.args()?;
                if !self.lock.is_held_by(call.conn) {
                    return Err(Error::InvalidArgument(
                        "wait on a condition this process has not acquired".into(),
                    ));
                }
                let (tx, rx) = oneshot::channel();
                self.waiters().push_back(tx);
                let depth = self.lock.release(call.conn, true)?;
                let notified = match timeout_ms {
                    None => rx.await.is_ok(),
                    Some(ms) => {
                        let deadline = Instant::now() + Duration::from_millis(ms);
                        matches!(tokio::time::timeout_at(deadline, rx).await, Ok(Ok(())))
                    }
                };
                self.lock.acquire(call.conn, depth, None).await?;
                encode(&notified)
            }
            "notify" => {
                let (n,): (u64,) = call.args()?;
                encode(&self.notify(n))
            }
            "notify_all" => encode(&self.notify(u64::MAX)),
            other => Err(unknown_method("Condition", other)),
        }
    }
}

impl Served for Condition {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        Box::pin(self.run(call))
    }

    fn caller_gone(&self, conn: u64) {
        self.lock.caller_gone(conn);
    }
}

builtin_proxy!(
    /// A proxy of a condition variable in a manager ([`Manager::condition`]), with its own
    /// re-entrant lock held by a process (released, with
    /// [`OwnerDied`](super::lock::ManagedLockError::OwnerDied) for the next acquirer, when the
    /// holder's process dies).
    ///
    /// ```
    /// # use tokio_multiprocessing as mp;
    /// # #[tokio::main]
    /// # async fn main() -> mp::Result<()> {
    /// # let manager = mp::Manager::builder().serve().await?;
    /// let ready = manager.condition().await?;
    /// let notifier = ready.clone();
    /// let waiter = tokio::spawn(async move {
    ///     let mut guard = ready.acquire().await?;
    ///     ready.wait(&mut guard).await // releases the lock while waiting
    /// });
    /// // Notify once the waiter waits (a notification with nobody waiting is lost).
    /// loop {
    ///     let _guard = notifier.acquire().await?;
    ///     if notifier.notify_all().await? > 0 {
    ///         break;
    ///     }
    /// }
    /// waiter.await.unwrap()?;
    /// # manager.shutdown().await
    /// # }
    /// ```
    ConditionProxy,
    TYPE_NAME
);
lock_methods!(ConditionProxy);

impl ConditionProxy {
    async fn wait_with(
        &self,
        guard: &mut ManagedLockGuard,
        timeout_ms: Option<u64>,
    ) -> Result<bool> {
        if guard.core().object_id() != self.core.object_id() {
            return Err(Error::InvalidArgument(
                "the guard is of another lock".into(),
            ));
        }
        // Until the manager has re-acquired the lock for us, the guard does not hold it.
        guard.set_held(false);
        let notified = self
            .core
            .call_undoable("wait", &(timeout_ms,), Some("release"))
            .await?;
        guard.set_held(true);
        Ok(notified)
    }

    /// Releases the lock, waits for a notification, and re-acquires the lock (Python's
    /// `wait()`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `guard` is not this condition's; [`Error::Closed`] when
    /// the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe in one respect: a wait dropped before it returns leaves the lock *not*
    /// held — `guard` knows, and releases nothing when dropped — and its place in the queue
    /// is lost (a notification meant for it goes to the next waiter).
    pub async fn wait(&self, guard: &mut ManagedLockGuard) -> Result<()> {
        self.wait_with(guard, None).await.map(|_| ())
    }

    /// [`wait`](Self::wait) at most `timeout`; whether it was notified (Python's
    /// `wait(timeout)`). The lock is re-acquired either way.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_timeout(
        &self,
        guard: &mut ManagedLockGuard,
        timeout: Duration,
    ) -> Result<bool> {
        self.wait_with(guard, Some(super::timeout_ms(timeout)))
            .await
    }

    /// Waits until `predicate` holds (Python's `wait_for`): checks it with the lock held,
    /// [`wait`](Self::wait)s while it does not, and returns with the lock held. The predicate
    /// usually reads other managed objects, so it is async and may fail.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait), and the predicate's own errors.
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_for<F, Fut>(
        &self,
        guard: &mut ManagedLockGuard,
        mut predicate: F,
    ) -> Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        while !predicate().await? {
            self.wait(guard).await?;
        }
        Ok(())
    }

    /// [`wait_for`](Self::wait_for) at most `timeout` in all; whether the predicate held
    /// (Python's `wait_for(predicate, timeout)`). The lock is held on return either way.
    ///
    /// # Errors
    ///
    /// As [`wait_for`](Self::wait_for).
    ///
    /// # Cancel safety
    ///
    /// As [`wait`](Self::wait).
    pub async fn wait_for_timeout<F, Fut>(
        &self,
        guard: &mut ManagedLockGuard,
        timeout: Duration,
        mut predicate: F,
    ) -> Result<bool>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<bool>>,
    {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if predicate().await? {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            self.wait_timeout(guard, left).await?;
        }
    }

    /// Wakes up to `n` waiters; returns how many it woke.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe; a dropped call may still have notified.
    pub async fn notify(&self, n: u64) -> Result<u64> {
        self.core.call("notify", &(n,)).await
    }

    /// Wakes every waiter; returns how many it woke.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe; a dropped call may still have notified.
    pub async fn notify_all(&self) -> Result<u64> {
        self.core.call("notify_all", &()).await
    }
}

impl Manager {
    /// A new condition variable with its own re-entrant lock (Python's `manager.Condition()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a condition made for a dropped call is released again.
    pub async fn condition(&self) -> Result<ConditionProxy> {
        self.create_builtin(&()).await
    }
}
