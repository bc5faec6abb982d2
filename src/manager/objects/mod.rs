//! The built-in shared objects of a manager (Python's `SyncManager` types), one per file: the
//! object as the manager holds it (values kept as encoded bytes, so one manager serves every
//! `T`) and its typed proxy.

use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::served::{Constructor, TypeTable};
use crate::Result;
use crate::connection::wire::serde_bytes_vec::Bytes;

pub(crate) mod barrier;
pub(crate) mod condition;
pub(crate) mod dict;
pub(crate) mod event;
pub(crate) mod list;
pub(crate) mod lock;
pub(crate) mod namespace;
pub(crate) mod queue;
pub(crate) mod semaphore;
pub(crate) mod shared_memory;
pub(crate) mod value;

/// Adds the built-in types to a manager's table.
pub(crate) fn add_builtins(table: &mut TypeTable) {
    let builtins: [(&'static str, Constructor); 12] = [
        (dict::TYPE_NAME, dict::construct),
        (list::TYPE_NAME, list::construct),
        (value::TYPE_NAME, value::construct),
        (namespace::TYPE_NAME, namespace::construct),
        (queue::TYPE_NAME, queue::construct),
        (lock::TYPE_NAME, lock::construct),
        (lock::RLOCK_TYPE_NAME, lock::construct_rlock),
        (semaphore::TYPE_NAME, semaphore::construct),
        (event::TYPE_NAME, event::construct),
        (condition::TYPE_NAME, condition::construct),
        (barrier::TYPE_NAME, barrier::construct),
        (shared_memory::TYPE_NAME, shared_memory::construct),
    ];
    table.0.extend(builtins);
}

/// The deadline of a wait of `timeout_ms` (`None`: forever) from now.
pub(crate) fn deadline(timeout_ms: Option<u64>) -> Option<Instant> {
    timeout_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}

/// A timeout as the milliseconds a call carries.
pub(crate) fn timeout_ms(timeout: Duration) -> u64 {
    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `attempt` until it succeeds, again each time `changed` is rung, or until the deadline
/// passes (`None`). Cancel-safe when `attempt` either completes or changes nothing: every
/// await is between attempts. (A ring after `attempt` failed is never missed: the waiter is
/// registered before the attempt.)
pub(crate) async fn wait_until<T>(
    changed: &Notify,
    deadline: Option<Instant>,
    mut attempt: impl FnMut() -> Option<T>,
) -> Option<T> {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(done) = attempt() {
            return Some(done);
        }
        match deadline {
            None => notified.await,
            Some(deadline) => {
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return None;
                }
            }
        }
    }
}

/// A value as the manager keeps it.
pub(crate) fn encoded<T: Serialize + ?Sized>(value: &T) -> Result<Bytes> {
    super::wire::encode(value).map(Bytes)
}

/// Decodes a value the manager kept.
pub(crate) fn decoded<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T> {
    super::wire::decode(&bytes.0)
}

/// Defines a built-in proxy type: a [`ProxyCore`](super::ProxyCore) with type parameters that
/// only say what its values decode as.
macro_rules! builtin_proxy {
    ($(#[$attr:meta])* $name:ident $(<$($param:ident),+>)?, $type_name:expr) => {
        $(#[$attr])*
        pub struct $name $(<$($param),+>)? {
            core: $crate::manager::ProxyCore,
            _types: ::std::marker::PhantomData<fn() -> ($($($param,)+)?)>,
        }

        impl $(<$($param),+>)? $name $(<$($param),+>)? {
            #[allow(dead_code)]
            fn wrap(core: $crate::manager::ProxyCore) -> Self {
                $name { core, _types: ::std::marker::PhantomData }
            }
        }

        impl $(<$($param),+>)? Clone for $name $(<$($param),+>)? {
            fn clone(&self) -> Self {
                Self::wrap(self.core.clone())
            }
        }

        impl $(<$($param),+>)? ::std::fmt::Debug for $name $(<$($param),+>)? {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.core).finish()
            }
        }

        impl $(<$($param: 'static),+>)? $crate::manager::Proxy for $name $(<$($param),+>)? {
            const TYPE_NAME: &'static str = $type_name;
            fn from_core(core: $crate::manager::ProxyCore) -> Self {
                Self::wrap(core)
            }
            fn core(&self) -> &$crate::manager::ProxyCore {
                &self.core
            }
        }

        impl $(<$($param),+>)? ::serde::Serialize for $name $(<$($param),+>)? {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> ::std::result::Result<S::Ok, S::Error> {
                self.core.serialize(s)
            }
        }

        impl<'de, $($($param),+)?> ::serde::Deserialize<'de> for $name $(<$($param),+>)? {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> ::std::result::Result<Self, D::Error> {
                Ok(Self::wrap(<$crate::manager::ProxyCore as ::serde::Deserialize>::deserialize(d)?))
            }
        }
    };
}
pub(crate) use builtin_proxy;
