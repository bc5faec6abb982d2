//! A shared `list` ([`Manager::list`], Python's `manager.list()`).

use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{builtin_proxy, decoded, encoded};
use crate::connection::wire::serde_bytes_vec::Bytes;
use crate::manager::Manager;
use crate::manager::served::{Call, Reply, Served, ready, unknown_method};
use crate::manager::wire::encode;
use crate::{Error, Result};

pub(crate) const TYPE_NAME: &str = "mp.list";

/// The items as encoded bytes.
struct List(Mutex<Vec<Vec<u8>>>);

pub(crate) fn construct(init: &[u8]) -> Result<Arc<dyn Served>> {
    let items: Vec<Bytes> = crate::manager::wire::decode(init)?;
    Ok(Arc::new(List(Mutex::new(
        items.into_iter().map(|b| b.0).collect(),
    ))))
}

fn check(index: u64, len: usize, inclusive: bool) -> Result<usize> {
    let i = usize::try_from(index).unwrap_or(usize::MAX);
    if i < len || (inclusive && i == len) {
        Ok(i)
    } else {
        Err(Error::IndexOutOfRange { index: i, len })
    }
}

impl List {
    fn run(&self, call: &Call) -> Result<Vec<u8>> {
        let mut items = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match call.method.as_str() {
            "push" => {
                let (item,): (Bytes,) = call.args()?;
                items.push(item.0);
                encode(&())
            }
            "pop" => encode(&items.pop().map(Bytes)),
            "get" => {
                let (index,): (u64,) = call.args()?;
                let i = check(index, items.len(), false)?;
                encode(&Bytes(items[i].clone()))
            }
            "set" => {
                let (index, item): (u64, Bytes) = call.args()?;
                let i = check(index, items.len(), false)?;
                encode(&Bytes(std::mem::replace(&mut items[i], item.0)))
            }
            "insert" => {
                let (index, item): (u64, Bytes) = call.args()?;
                let i = check(index, items.len(), true)?;
                items.insert(i, item.0);
                encode(&())
            }
            "remove" => {
                let (index,): (u64,) = call.args()?;
                let i = check(index, items.len(), false)?;
                encode(&Bytes(items.remove(i)))
            }
            "len" => encode(&(items.len() as u64)),
            "extend" => {
                let (more,): (Vec<Bytes>,) = call.args()?;
                items.extend(more.into_iter().map(|b| b.0));
                encode(&())
            }
            "clear" => {
                items.clear();
                encode(&())
            }
            "to_vec" => encode(&items.iter().map(|i| Bytes(i.clone())).collect::<Vec<_>>()),
            other => Err(unknown_method("list", other)),
        }
    }
}

impl Served for List {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        ready(self.run(&call))
    }
}

builtin_proxy!(
    /// A proxy of a `list` in a manager ([`Manager::list`]): a sequence of `T` that every
    /// process holding a copy shares.
    ///
    /// # Errors
    ///
    /// Every method fails with [`Error::Closed`](crate::Error::Closed) when the manager is gone,
    /// with [`Error::IndexOutOfRange`] for an index past the end (Python's `IndexError`), and
    /// with [`Error::Corrupt`](crate::Error::Corrupt) when an item does not decode as `T`.
    ///
    /// # Cancel safety
    ///
    /// Every method is cancel-safe in the sense of [`ProxyCore::call`](crate::manager::ProxyCore::call).
    ListProxy<T>,
    TYPE_NAME
);

impl<T: Serialize + DeserializeOwned> ListProxy<T> {
    /// Appends `item` (Python: `append`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn push(&self, item: T) -> Result<()> {
        self.core.call("push", &(encoded(&item)?,)).await
    }

    /// Removes and returns the last item.
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
    pub async fn pop(&self) -> Result<Option<T>> {
        let item: Option<Bytes> = self.core.call("pop", &()).await?;
        item.as_ref().map(decoded).transpose()
    }

    /// The item at `index`.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index past the end
    /// (Python's `IndexError`); [`Error::Corrupt`](crate::Error::Corrupt) when a stored value
    /// does not decode as the proxy's types.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn get(&self, index: usize) -> Result<T> {
        decoded(&self.core.call("get", &(index as u64,)).await?)
    }

    /// Replaces the item at `index`; returns the old one (Python: `l[i] = item`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index past the end
    /// (Python's `IndexError`); [`Error::Corrupt`](crate::Error::Corrupt) when a stored value
    /// does not decode as the proxy's types.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn set(&self, index: usize, item: T) -> Result<T> {
        decoded(
            &self
                .core
                .call("set", &(index as u64, encoded(&item)?))
                .await?,
        )
    }

    /// Inserts `item` before `index` (`index == len` appends).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index past the end
    /// (Python's `IndexError`).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn insert(&self, index: usize, item: T) -> Result<()> {
        self.core
            .call("insert", &(index as u64, encoded(&item)?))
            .await
    }

    /// Removes and returns the item at `index` (Python: `pop(i)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone;
    /// [`Error::IndexOutOfRange`](crate::Error::IndexOutOfRange) for an index past the end
    /// (Python's `IndexError`); [`Error::Corrupt`](crate::Error::Corrupt) when a stored value
    /// does not decode as the proxy's types.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn remove(&self, index: usize) -> Result<T> {
        decoded(&self.core.call("remove", &(index as u64,)).await?)
    }

    /// The number of items.
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

    /// Whether the list is empty.
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

    /// Appends every item of `items` in one call.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a dropped call is withdrawn if the manager has not run it, and took effect
    /// whole if it had.
    pub async fn extend(&self, items: impl IntoIterator<Item = T>) -> Result<()> {
        let items = items
            .into_iter()
            .map(|i| encoded(&i))
            .collect::<Result<Vec<_>>>()?;
        self.core.call("extend", &(items,)).await
    }

    /// Removes every item.
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

    /// A copy of all the items (Python: `list(l)`).
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
    pub async fn to_vec(&self) -> Result<Vec<T>> {
        let items: Vec<Bytes> = self.core.call("to_vec", &()).await?;
        items.iter().map(decoded).collect()
    }
}

impl Manager {
    /// A new shared `list` holding `items` (Python's `manager.list(items)`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the manager is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a list made for a dropped call is released again.
    pub async fn list<T>(&self, items: impl IntoIterator<Item = T>) -> Result<ListProxy<T>>
    where
        T: Serialize + DeserializeOwned + 'static,
    {
        let items = items
            .into_iter()
            .map(|i| encoded(&i))
            .collect::<Result<Vec<_>>>()?;
        self.create_builtin(&items).await
    }
}
