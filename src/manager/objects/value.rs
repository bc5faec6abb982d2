//! A shared value ([`Manager::value`], Python's `manager.Value(typecode, value)`).

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{builtin_proxy, decoded, encoded};
use crate::Result;
use crate::connection::wire::serde_bytes_vec::Bytes;
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, ready, unknown_method};
use crate::manager::wire::encode;

pub(crate) const TYPE_NAME: &str = "mp.value";

/// The encoded value and the stamp of its last write.
struct Value(Mutex<(Vec<u8>, u64)>);

pub(crate) fn construct(init: &[u8]) -> Result<Arc<dyn Served>> {
    let value: Bytes = crate::manager::wire::decode(init)?;
    Ok(Arc::new(Value(Mutex::new((value.0, 0)))))
}

impl Value {
    fn run(&self, call: &Call) -> Result<Vec<u8>> {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match call.method.as_str() {
            "get" => encode(&Bytes(state.0.clone())),
            "set" => {
                let (value,): (Bytes,) = call.args()?;
                *state = (value.0, state.1 + 1);
                encode(&())
            }
            "get_stamped" => encode(&(Bytes(state.0.clone()), state.1)),
            "replace_if" => {
                let (stamp, value): (u64, Bytes) = call.args()?;
                if stamp != state.1 {
                    return encode(&false);
                }
                *state = (value.0, state.1 + 1);
                encode(&true)
            }
            other => Err(unknown_method("Value", other)),
        }
    }
}

impl Served for Value {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        ready(self.run(&call))
    }
}

builtin_proxy!(
    /// A proxy of one value in a manager ([`Manager::value`]).
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`](crate::Error::Closed) when the manager is gone,
    /// and with [`Error::Corrupt`](crate::Error::Corrupt) when the value does not decode as `T`.
    ///
    /// # Cancel safety
    ///
    /// Every method is cancel-safe in the sense of [`ProxyCore::call`](crate::manager::ProxyCore::call).
    ValueProxy<T>,
    TYPE_NAME
);

impl<T: Serialize + DeserializeOwned> ValueProxy<T> {
    /// The value (Python: `v.value`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::Corrupt`](crate::Error::Corrupt) when a stored value does not decode as the
    /// proxy's types.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn get(&self) -> Result<T> {
        decoded(&self.core.call("get", &()).await?)
    }

    /// Replaces the value (Python: `v.value = x`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn set(&self, value: T) -> Result<()> {
        self.core.call("set", &(encoded(&value)?,)).await
    }

    /// Atomically replaces the value with `f(current)` and returns the new one (Python needs
    /// `with v.get_lock(): v.value += 1`). `f` runs here and may run again when another process
    /// wrote in between; keep it free of side effects.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::Corrupt`](crate::Error::Corrupt) when a stored value does not decode as the
    /// proxy's types.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped update wrote nothing or one whole new value.
    pub async fn update_with(&self, mut f: impl FnMut(T) -> T) -> Result<T> {
        loop {
            let (current, stamp): (Bytes, u64) = self.core.call("get_stamped", &()).await?;
            let new = f(decoded(&current)?);
            let replaced: bool = self
                .core
                .call("replace_if", &(stamp, encoded(&new)?))
                .await?;
            if replaced {
                return Ok(new);
            }
        }
    }
}

impl Manager {
    /// A new shared value holding `value` (Python's `manager.Value('i', 0)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a value made for a dropped call is released again.
    pub async fn value<T>(&self, value: T) -> Result<ValueProxy<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        self.create_builtin(&encoded(&value)?).await
    }
}
