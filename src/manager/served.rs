//! What the manager holds: objects that answer calls by method name.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;

use super::managed::Managed;
use crate::{Error, Result};

/// The eventual result of a call: the encoded return value.
pub(crate) type Reply = Pin<Box<dyn Future<Output = Result<Vec<u8>>> + Send>>;

/// One call as an object receives it.
pub(crate) struct Call {
    pub(crate) method: String,
    pub(crate) args: Vec<u8>,
    /// The connection it came in on: who holds a lock, say.
    pub(crate) conn: u64,
}

impl Call {
    /// The arguments, decoded.
    pub(crate) fn args<A: DeserializeOwned>(&self) -> Result<A> {
        super::wire::decode(&self.args)
    }
}

/// An object in a manager.
pub(crate) trait Served: Send + Sync + 'static {
    /// Runs one call. The future is polled until done unless the caller withdraws it, so it
    /// must take nothing it cannot keep at an await point (every await is a cancel point).
    fn call(self: Arc<Self>, call: Call) -> Reply;

    /// Connection `conn` closed (its process may have died): release what it held.
    fn caller_gone(&self, _conn: u64) {}
}

/// A ready reply.
pub(crate) fn ready(result: Result<Vec<u8>>) -> Reply {
    Box::pin(std::future::ready(result))
}

/// The error for a method name an object does not have.
pub(crate) fn unknown_method(type_name: &str, method: &str) -> Error {
    Error::Remote(format!("{type_name} has no method {method:?}"))
}

/// A user type behind a mutex; its methods run one at a time, each to completion.
struct UserObject<T>(Mutex<T>);

impl<T: Managed> Served for UserObject<T> {
    fn call(self: Arc<Self>, call: Call) -> Reply {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // A method that panicked left the object as it was at the panic; the caller was
            // told, and everyone else goes on with it (Python's manager does the same).
            let mut object = self.0.lock().unwrap_or_else(|e| e.into_inner());
            object.dispatch(&call.method, &call.args)
        }));
        ready(outcome.unwrap_or_else(|panic| {
            Err(Error::Remote(format!(
                "{}::{} panicked: {}",
                T::TYPE_NAME,
                call.method,
                crate::process::panic_message(&*panic)
            )))
        }))
    }
}

/// Makes an object from its encoded initial value.
pub(crate) type Constructor = fn(&[u8]) -> Result<Arc<dyn Served>>;

fn construct_user<T: Managed + DeserializeOwned>(init: &[u8]) -> Result<Arc<dyn Served>> {
    let value: T = super::wire::decode(init)?;
    Ok(Arc::new(UserObject(Mutex::new(value))))
}

/// The types a manager can make, by name.
#[doc(hidden)]
#[derive(Default)]
pub struct TypeTable(pub(crate) HashMap<&'static str, Constructor>);

impl std::fmt::Debug for TypeTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// The user types registered with a [`ManagerBuilder`](super::ManagerBuilder), as a type-level
/// list (`()`, `(A, ())`, `(B, (A, ()))`, …): a manager started in a child process is a
/// generic function of it, so the child knows the same types without any code address crossing.
pub trait Registry: 'static {
    /// Adds this list's types to `table`.
    #[doc(hidden)]
    fn add_to(table: &mut TypeTable);
}

impl Registry for () {
    fn add_to(_: &mut TypeTable) {}
}

impl<T: Managed + DeserializeOwned, R: Registry> Registry for (T, R) {
    fn add_to(table: &mut TypeTable) {
        table.0.insert(T::TYPE_NAME, construct_user::<T>);
        R::add_to(table);
    }
}
