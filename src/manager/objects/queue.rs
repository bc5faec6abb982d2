//! A shared queue ([`Manager::queue`], Python's `manager.Queue()` / `JoinableQueue()`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{builtin_proxy, deadline, decoded, encoded, timeout_ms, wait_until};
use crate::connection::wire::serde_bytes_vec::Bytes;
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, unknown_method};
use crate::manager::wire::encode;
use crate::queue::PutError;
use crate::{Error, Result};

pub(crate) const TYPE_NAME: &str = "mp.queue";

struct Queue {
    state: Mutex<QueueState>,
    /// Rung on every change; waiters re-check their condition.
    changed: Notify,
}

struct QueueState {
    items: VecDeque<Vec<u8>>,
    /// 0: unbounded.
    maxsize: usize,
    /// Items put and not yet marked done (`JoinableQueue`).
    unfinished: u64,
}

pub(crate) fn construct(init: &[u8]) -> Result<Arc<dyn Served>> {
    let (maxsize,): (u64,) = crate::manager::wire::decode(init)?;
    Ok(Arc::new(Queue {
        state: Mutex::new(QueueState {
            items: VecDeque::new(),
            maxsize: usize::try_from(maxsize).unwrap_or(usize::MAX),
            unfinished: 0,
        }),
        changed: Notify::new(),
    }))
}

impl Queue {
    fn state(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `attempt` succeeds (and then tells the other waiters) or the deadline
    /// passes. Cancel-safe: `attempt` runs under the lock and either completes or changes
    /// nothing.
    async fn wait_for<T>(
        &self,
        deadline: Option<Instant>,
        mut attempt: impl FnMut(&mut QueueState) -> Option<T>,
    ) -> Option<T> {
        let done = wait_until(&self.changed, deadline, || attempt(&mut self.state())).await;
        if done.is_some() {
            self.changed.notify_waiters();
        }
        done
    }

    async fn run(self: Arc<Self>, call: Call) -> Result<Vec<u8>> {
        match call.method.as_str() {
            "put" => {
                let (item, timeout_ms): (Bytes, Option<u64>) = call.args()?;
                let mut item = Some(item.0);
                let put = self
                    .wait_for(deadline(timeout_ms), |s| {
                        if s.maxsize != 0 && s.items.len() >= s.maxsize {
                            return None;
                        }
                        s.items.push_back(item.take()?);
                        s.unfinished += 1;
                        Some(())
                    })
                    .await;
                encode(&put.is_some())
            }
            "get" => {
                let (timeout_ms,): (Option<u64>,) = call.args()?;
                let item = self
                    .wait_for(deadline(timeout_ms), |s| s.items.pop_front())
                    .await;
                encode(&item.map(Bytes))
            }
            // The undo of a `get` whose caller went away: the item goes back to the front.
            "put_back" => {
                let item: Option<Bytes> = call.args()?;
                if let Some(item) = item {
                    self.state().items.push_front(item.0);
                    self.changed.notify_waiters();
                }
                encode(&())
            }
            "qsize" => encode(&(self.state().items.len() as u64)),
            "maxsize" => encode(&(self.state().maxsize as u64)),
            "task_done" => {
                let mut state = self.state();
                if state.unfinished == 0 {
                    return Err(Error::InvalidArgument(
                        "task_done() called more times than there were items".into(),
                    ));
                }
                state.unfinished -= 1;
                drop(state);
                self.changed.notify_waiters();
                encode(&())
            }
            "join" => {
                self.wait_for(None, |s| (s.unfinished == 0).then_some(()))
                    .await;
                encode(&())
            }
            other => Err(unknown_method("Queue", other)),
        }
    }
}

impl Served for Queue {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        Box::pin(self.run(call))
    }
}

builtin_proxy!(
    /// A proxy of a queue in a manager ([`Manager::queue`], [`Manager::joinable_queue`]):
    /// FIFO, bounded or not, and joinable (`task_done` / `join`), reachable from other hosts.
    ///
    /// Items wait in the manager; a `put` on a full queue waits there for room (backpressure),
    /// without holding up other callers.
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`] when the manager is gone (a `put` hands the
    /// item back in [`PutError::Closed`]), and with [`Error::Corrupt`] when an item does not
    /// decode as `T`.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe. A `get` dropped before its reply takes nothing: withdrawn in time, or — if
    /// the manager had already handed out the item — put back at the front of the queue. A
    /// `put` dropped before its reply was withdrawn, or queued the item.
    QueueProxy<T>,
    TYPE_NAME
);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    async fn put_with(&self, item: T, timeout_ms: Option<u64>) -> Result<(), PutError<T>> {
        let bytes = match encoded(&item) {
            Ok(bytes) => bytes,
            Err(e) => return Err(PutError::Other(item, e)),
        };
        match self.core.call::<_, bool>("put", &(bytes, timeout_ms)).await {
            Ok(true) => Ok(()),
            Ok(false) if timeout_ms == Some(0) => Err(PutError::Full(item)),
            Ok(false) => Err(PutError::Timeout(item)),
            Err(Error::Closed) => Err(PutError::Closed(item)),
            Err(e) => Err(PutError::Other(item, e)),
        }
    }

    /// Puts `item`, waiting for room in a bounded queue.
    ///
    /// # Errors
    ///
    /// [`PutError::Closed`] when the manager is gone; the item comes back in every error.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe as far as the queue goes: a dropped put was withdrawn, or queued the item
    /// whole (which it can then no longer hand back).
    pub async fn put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, None).await
    }

    /// Puts `item`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// [`PutError::Timeout`] with the item when the queue stayed full.
    ///
    /// # Cancel safety
    ///
    /// As [`put`](Self::put).
    pub async fn put_timeout(&self, item: T, timeout: Duration) -> Result<(), PutError<T>> {
        self.put_with(item, Some(timeout_ms(timeout))).await
    }

    /// Puts `item` if there is room now (Python's `put_nowait`).
    ///
    /// # Errors
    ///
    /// [`PutError::Full`] with the item.
    ///
    /// # Cancel safety
    ///
    /// As [`put`](Self::put).
    pub async fn try_put(&self, item: T) -> Result<(), PutError<T>> {
        self.put_with(item, Some(0)).await
    }

    async fn get_with(&self, timeout_ms: Option<u64>) -> Result<T> {
        let item: Option<Bytes> = self
            .core
            .call_undoable("get", &(timeout_ms,), Some("put_back"))
            .await?;
        match item {
            Some(item) => decoded(&item),
            None if timeout_ms == Some(0) => Err(Error::Empty),
            None => Err(Error::Timeout),
        }
    }

    /// Takes the oldest item, waiting for one.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped get takes nothing — withdrawn in time, or the item the manager had
    /// already handed it goes back to the front of the queue.
    pub async fn get(&self) -> Result<T> {
        self.get_with(None).await
    }

    /// Takes the oldest item, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when none came.
    ///
    /// # Cancel safety
    ///
    /// As [`get`](Self::get).
    pub async fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_with(Some(timeout_ms(timeout))).await
    }

    /// Takes the oldest item if there is one now (Python's `get_nowait`).
    ///
    /// # Errors
    ///
    /// [`Error::Empty`] when there is none.
    ///
    /// # Cancel safety
    ///
    /// As [`get`](Self::get).
    pub async fn try_get(&self) -> Result<T> {
        self.get_with(Some(0)).await
    }

    /// How many items wait (Python's `qsize`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn len(&self) -> Result<usize> {
        let len: u64 = self.core.call("qsize", &()).await?;
        Ok(len as usize)
    }

    /// Whether no item waits.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn is_empty(&self) -> Result<bool> {
        Ok(self.len().await? == 0)
    }

    /// Marks one item taken earlier as processed (`JoinableQueue.task_done`).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when called more often than items were put.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn task_done(&self) -> Result<()> {
        self.core.call("task_done", &()).await
    }

    /// Waits until every item put has been marked done (`JoinableQueue.join`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: waiting takes nothing.
    pub async fn join(&self) -> Result<()> {
        self.core.call("join", &()).await
    }
}

impl Manager {
    /// A new queue holding at most `maxsize` items (0: unbounded); Python's
    /// `manager.Queue(maxsize)`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a queue made for a dropped call is released again.
    pub async fn queue<T>(&self, maxsize: usize) -> Result<QueueProxy<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        self.create_builtin(&(maxsize as u64,)).await
    }

    /// The same queue as [`queue`](Self::queue), named for Python's
    /// `manager.JoinableQueue(maxsize)`: every manager queue counts unfinished items.
    ///
    /// # Errors
    ///
    /// As [`queue`](Self::queue).
    ///
    /// # Cancel safety
    ///
    /// As [`queue`](Self::queue).
    pub async fn joinable_queue<T>(&self, maxsize: usize) -> Result<QueueProxy<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        self.queue(maxsize).await
    }
}
