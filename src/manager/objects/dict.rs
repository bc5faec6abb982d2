//! A shared `dict` ([`Manager::dict`], Python's `manager.dict()`).

use std::borrow::Borrow;
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

pub(crate) const TYPE_NAME: &str = "mp.dict";

/// Keys and values as encoded bytes (two keys are equal when they encode the same), each with
/// the stamp of its last write, in insertion order.
#[derive(Default)]
struct Dict {
    state: Mutex<DictState>,
}

#[derive(Default)]
struct DictState {
    map: IndexMap<Vec<u8>, (Vec<u8>, u64)>,
    stamp: u64,
}

pub(crate) fn construct(_init: &[u8]) -> Result<Arc<dyn Served>> {
    Ok(Arc::new(Dict::default()))
}

fn copy(v: &[u8]) -> Bytes {
    Bytes(v.to_vec())
}

impl DictState {
    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) -> Option<Bytes> {
        self.stamp += 1;
        self.map
            .insert(key, (value, self.stamp))
            .map(|(old, _)| Bytes(old))
    }
}

impl Dict {
    fn run(&self, call: &Call) -> Result<Vec<u8>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match call.method.as_str() {
            "get" => {
                let (key,): (Bytes,) = call.args()?;
                encode(&state.map.get(&key.0).map(|(v, _)| copy(v)))
            }
            "insert" => {
                let (key, value): (Bytes, Bytes) = call.args()?;
                encode(&state.insert(key.0, value.0))
            }
            "remove" => {
                let (key,): (Bytes,) = call.args()?;
                encode(&state.map.shift_remove(&key.0).map(|(v, _)| Bytes(v)))
            }
            "contains_key" => {
                let (key,): (Bytes,) = call.args()?;
                encode(&state.map.contains_key(&key.0))
            }
            "len" => encode(&(state.map.len() as u64)),
            "keys" => encode(&state.map.keys().map(|k| copy(k)).collect::<Vec<_>>()),
            "values" => encode(&state.map.values().map(|(v, _)| copy(v)).collect::<Vec<_>>()),
            "items" => encode(
                &state
                    .map
                    .iter()
                    .map(|(k, (v, _))| (copy(k), copy(v)))
                    .collect::<Vec<_>>(),
            ),
            "update" => {
                let (items,): (Vec<(Bytes, Bytes)>,) = call.args()?;
                for (k, v) in items {
                    state.insert(k.0, v.0);
                }
                encode(&())
            }
            "clear" => {
                state.stamp += 1;
                state.map.clear();
                encode(&())
            }
            "get_stamped" => {
                let (key,): (Bytes,) = call.args()?;
                let found = state.map.get(&key.0);
                encode(&(found.map(|(v, _)| copy(v)), found.map_or(0, |(_, s)| *s)))
            }
            "replace_if" => {
                let (key, stamp, value): (Bytes, u64, Option<Bytes>) = call.args()?;
                let current = state.map.get(&key.0).map_or(0, |(_, s)| *s);
                if current != stamp {
                    return encode(&false);
                }
                match value {
                    Some(value) => {
                        state.insert(key.0, value.0);
                    }
                    None => {
                        state.map.shift_remove(&key.0);
                    }
                }
                encode(&true)
            }
            other => Err(unknown_method("dict", other)),
        }
    }
}

impl Served for Dict {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        ready(self.run(&call))
    }
}

builtin_proxy!(
    /// A proxy of a `dict` in a manager ([`Manager::dict`]): a map from `K` to `V` that every
    /// process holding a copy shares.
    ///
    /// Keys are compared by their encoded bytes (postcard): equal keys of one type encode
    /// equally. `keys`, `values` and `items` come in insertion order, as in Python.
    ///
    /// Every method is one round trip to the manager and is atomic there; combine several with
    /// [`update_with`](Self::update_with), not with a `get` followed by an `insert`.
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`](crate::Error::Closed) when the manager is gone,
    /// and with [`Error::Corrupt`](crate::Error::Corrupt) when a stored value does not decode as
    /// `K` or `V` (another process used other types with this dict).
    ///
    /// # Cancel safety
    ///
    /// Every method is cancel-safe in the sense of [`ProxyCore::call`](crate::manager::ProxyCore::call):
    /// a dropped call is withdrawn if it had not run, and took effect if it had.
    DictProxy<K, V>,
    TYPE_NAME
);

impl<K, V> DictProxy<K, V>
where
    K: Serialize + DeserializeOwned,
    V: Serialize + DeserializeOwned,
{
    /// The value for `key` (Python: `d.get(key)`).
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
    pub async fn get<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let found: Option<Bytes> = self.core.call("get", &(encoded(key)?,)).await?;
        found.as_ref().map(decoded).transpose()
    }

    /// Sets `key` to `value`; returns the value it replaced (Python: `d[key] = value`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::Corrupt`](crate::Error::Corrupt) when a stored value does not decode as the
    /// proxy's types.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        let old: Option<Bytes> = self
            .core
            .call("insert", &(encoded(&key)?, encoded(&value)?))
            .await?;
        old.as_ref().map(decoded).transpose()
    }

    /// Removes `key`; returns its value (Python: `d.pop(key, None)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::Corrupt`](crate::Error::Corrupt) when a stored value does not decode as the
    /// proxy's types.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn remove<Q>(&self, key: &Q) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let old: Option<Bytes> = self.core.call("remove", &(encoded(key)?,)).await?;
        old.as_ref().map(decoded).transpose()
    }

    /// Whether `key` is present (Python: `key in d`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn contains_key<Q>(&self, key: &Q) -> Result<bool>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.core.call("contains_key", &(encoded(key)?,)).await
    }

    /// The number of entries (Python: `len(d)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn len(&self) -> Result<usize> {
        let len: u64 = self.core.call("len", &()).await?;
        Ok(len as usize)
    }

    /// Whether the dict is empty.
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

    /// The keys, in insertion order.
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
    pub async fn keys(&self) -> Result<Vec<K>> {
        let keys: Vec<Bytes> = self.core.call("keys", &()).await?;
        keys.iter().map(decoded).collect()
    }

    /// The values, in insertion order of their keys.
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
    pub async fn values(&self) -> Result<Vec<V>> {
        let values: Vec<Bytes> = self.core.call("values", &()).await?;
        values.iter().map(decoded).collect()
    }

    /// The entries, in insertion order (Python: `list(d.items())`).
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
    pub async fn items(&self) -> Result<Vec<(K, V)>> {
        let items: Vec<(Bytes, Bytes)> = self.core.call("items", &()).await?;
        items
            .iter()
            .map(|(k, v)| Ok((decoded(k)?, decoded(v)?)))
            .collect()
    }

    /// Inserts every entry of `entries` in one call (Python: `d.update(other)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn update(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        let entries = entries
            .into_iter()
            .map(|(k, v)| Ok((encoded(&k)?, encoded(&v)?)))
            .collect::<Result<Vec<_>>>()?;
        self.core.call("update", &(entries,)).await
    }

    /// Removes every entry.
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

    /// Atomically replaces the value of `key` with `f(current)` (`None`: absent, or remove it),
    /// and returns the new value: a read-modify-write no other process can interleave with
    /// (Python needs a separate lock for `d[k] += 1`).
    ///
    /// `f` runs here, not in the manager, and may run more than once: when another process
    /// changed the entry between the read and the write, the write is refused and `f` runs
    /// again on the newer value (optimistic concurrency). Keep it free of side effects.
    ///
    /// ```
    /// # use tokio_multiprocessing as mp;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> mp::Result<()> {
    /// # let manager = mp::Manager::builder().serve().await?;
    /// let counts = manager.dict::<String, u64>().await?;
    /// counts.update_with("hits", |n| Some(n.unwrap_or(0) + 1)).await?;
    /// assert_eq!(counts.update_with("hits", |n| n.map(|n| n + 1)).await?, Some(2));
    /// # manager.shutdown().await
    /// # }
    /// ```
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
    pub async fn update_with<Q>(
        &self,
        key: &Q,
        mut f: impl FnMut(Option<V>) -> Option<V>,
    ) -> Result<Option<V>>
    where
        K: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let key = encoded(key)?;
        loop {
            let (current, stamp): (Option<Bytes>, u64) =
                self.core.call("get_stamped", &(&key,)).await?;
            let new = f(current.as_ref().map(decoded).transpose()?);
            let bytes = new.as_ref().map(encoded).transpose()?;
            let replaced: bool = self.core.call("replace_if", &(&key, stamp, bytes)).await?;
            if replaced {
                return Ok(new);
            }
        }
    }
}

impl Manager {
    /// A new, empty shared `dict` (Python's `manager.dict()`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dict made for a dropped call is released again.
    pub async fn dict<K, V>(&self) -> Result<DictProxy<K, V>>
    where
        K: Serialize + DeserializeOwned + 'static,
        V: Serialize + DeserializeOwned + 'static,
    {
        self.create_builtin(&()).await
    }
}
