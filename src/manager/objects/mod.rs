//! The built-in shared objects of a manager (Python's `SyncManager` types), one per file: the
//! object as the manager holds it (values kept as encoded bytes, so one manager serves every
//! `T`) and its typed proxy.

use serde::Serialize;

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
