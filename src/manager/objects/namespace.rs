//! A shared namespace of named fields ([`Manager::namespace`], Python's `manager.Namespace()`).

use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{builtin_proxy, decoded, encoded};
use crate::Result;
use crate::connection::wire::serde_bytes_vec::Bytes;
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, ready, unknown_method};
use crate::manager::wire::encode;

pub(crate) const TYPE_NAME: &str = "mp.namespace";

struct Namespace(Mutex<IndexMap<String, Vec<u8>>>);

pub(crate) fn construct(_init: &[u8]) -> Result<Arc<dyn Served>> {
    Ok(Arc::new(Namespace(Mutex::new(IndexMap::new()))))
}

impl Namespace {
    fn run(&self, call: &Call) -> Result<Vec<u8>> {
        let mut fields = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match call.method.as_str() {
            "get" => {
                let (name,): (String,) = call.args()?;
                encode(&fields.get(&name).map(|v| Bytes(v.clone())))
            }
            "set" => {
                let (name, value): (String, Bytes) = call.args()?;
                fields.insert(name, value.0);
                encode(&())
            }
            "remove" => {
                let (name,): (String,) = call.args()?;
                encode(&fields.shift_remove(&name).is_some())
            }
            "names" => encode(&fields.keys().collect::<Vec<_>>()),
            other => Err(unknown_method("Namespace", other)),
        }
    }
}

impl Served for Namespace {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        ready(self.run(&call))
    }
}

builtin_proxy!(
    /// A proxy of a namespace in a manager ([`Manager::namespace`]): named fields of any serde
    /// type (Python's `ns.x = 1; ns.y = "two"`).
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`get`](Self::get) with [`Error::Corrupt`](crate::Error::Corrupt) when the field does not
    /// decode as the type asked for.
    ///
    /// # Cancel safety
    ///
    /// Every method is cancel-safe in the sense of [`ProxyCore::call`](crate::manager::ProxyCore::call).
    NamespaceProxy,
    TYPE_NAME
);

impl NamespaceProxy {
    /// The field `name`, if set (Python: `ns.name`, or `AttributeError`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::Corrupt`](crate::Error::Corrupt) when the field does not decode as `T`. Values
    /// travel without their type: read a field as the type it was set with.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let value: Option<Bytes> = self.core.call("get", &(name,)).await?;
        value.as_ref().map(decoded).transpose()
    }

    /// Sets the field `name` (Python: `ns.name = value`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn set<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<()> {
        self.core.call("set", &(name, encoded(value)?)).await
    }

    /// Removes the field `name`; whether it was set (Python: `del ns.name`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn remove(&self, name: &str) -> Result<bool> {
        self.core.call("remove", &(name,)).await
    }

    /// The names of the fields, in the order they were first set.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn names(&self) -> Result<Vec<String>> {
        self.core.call("names", &()).await
    }
}

impl Manager {
    /// A new, empty namespace (Python's `manager.Namespace()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a namespace made for a dropped call is released again.
    pub async fn namespace(&self) -> Result<NamespaceProxy> {
        self.create_builtin(&()).await
    }
}
