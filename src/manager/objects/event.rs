//! A shared event ([`Manager::event`], Python's `manager.Event()`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{builtin_proxy, deadline, timeout_ms, wait_until};
use crate::Result;
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, unknown_method};
use crate::manager::wire::encode;

pub(crate) const TYPE_NAME: &str = "mp.event";

struct Event {
    flag: Mutex<bool>,
    changed: Notify,
}

pub(crate) fn construct(_init: &[u8]) -> Result<Arc<dyn Served>> {
    Ok(Arc::new(Event {
        flag: Mutex::new(false),
        changed: Notify::new(),
    }))
}

impl Event {
    fn flag(&self) -> std::sync::MutexGuard<'_, bool> {
        self.flag.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(self: Arc<Self>, call: Call) -> Result<Vec<u8>> {
        match call.method.as_str() {
            "set" => {
                *self.flag() = true;
                self.changed.notify_waiters();
                encode(&())
            }
            "clear" => {
                *self.flag() = false;
                encode(&())
            }
            "is_set" => encode(&*self.flag()),
            "wait" => {
                let (timeout_ms,): (Option<u64>,) = call.args()?;
                let set = wait_until(&self.changed, deadline(timeout_ms), || {
                    self.flag().then_some(())
                })
                .await;
                encode(&set.is_some())
            }
            other => Err(unknown_method("Event", other)),
        }
    }
}

impl Served for Event {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        Box::pin(self.run(call))
    }
}

builtin_proxy!(
    /// A proxy of an event in a manager ([`Manager::event`]): a flag that processes wait for.
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Every method is cancel-safe: waiting takes nothing, and a dropped `set` or `clear` may
    /// still have happened.
    EventProxy,
    TYPE_NAME
);

impl EventProxy {
    /// Sets the flag and wakes every waiter, in every process.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn set(&self) -> Result<()> {
        self.core.call("set", &()).await
    }

    /// Clears the flag.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn clear(&self) -> Result<()> {
        self.core.call("clear", &()).await
    }

    /// Whether the flag is set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn is_set(&self) -> Result<bool> {
        self.core.call("is_set", &()).await
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: waiting takes nothing.
    pub async fn wait(&self) -> Result<()> {
        let _: bool = self.core.call("wait", &(None::<u64>,)).await?;
        Ok(())
    }

    /// Waits at most `timeout` for the flag; returns whether it is set (Python's
    /// `wait(timeout)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: waiting takes nothing.
    pub async fn wait_timeout(&self, timeout: Duration) -> Result<bool> {
        self.core.call("wait", &(Some(timeout_ms(timeout)),)).await
    }
}

impl Manager {
    /// A new event, not set (Python's `manager.Event()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: an event made for a dropped call is released again.
    pub async fn event(&self) -> Result<EventProxy> {
        self.create_builtin(&()).await
    }
}
