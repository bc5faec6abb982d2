//! Turning `async fn(A) -> R` into something a re-executed child can find and call.

use std::any::Any;
use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::handle;
use crate::sys::code_address::{self, Trampoline};
use crate::{Error, Result};

/// What the child hands the trampoline: the serialised arguments and their fds.
pub(crate) struct ChildCall {
    pub(crate) args: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// What the trampoline hands back: the serialised result and its fds, and whether the result
/// is an `Err` (the child then exits with status 1).
pub(crate) type Returned = Result<(Vec<u8>, Vec<OwnedFd>, bool)>;

/// The monomorphic function the child calls: decode `A`, run the entry, encode `R`.
fn trampoline<F, A, Fut, R>(
    call: Box<dyn Any + Send>,
) -> Pin<Box<dyn Future<Output = Box<dyn Any + Send>>>>
where
    F: Fn(A) -> Fut + Copy + Send + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future<Output = R> + 'static,
    R: Serialize + 'static,
{
    Box::pin(async move {
        let returned: Returned = async {
            let call = call
                .downcast::<ChildCall>()
                .map_err(|_| Error::Corrupt("child call of the wrong type".into()))?;
            let args: A = handle::decode_from_parent(&call.args, call.fds)?;
            let entry: F = code_address::conjure::<F, A, Fut>();
            let value = entry(args).await;
            let failed = super::exit_status::is_err_result(&value);
            let (bytes, fds) = handle::encode(&value)?;
            Ok((bytes, fds, failed))
        }
        .await;
        Box::new(returned) as Box<dyn Any + Send>
    })
}

/// The address-independent name of the trampoline for entry type `F`.
pub(crate) fn offset_for<F, A, Fut, R>() -> i64
where
    F: Fn(A) -> Fut + Copy + Send + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future<Output = R> + 'static,
    R: Serialize + 'static,
{
    code_address::offset_of(trampoline::<F, A, Fut, R> as Trampoline)
}

/// One item's outcome in a chunk of pool tasks: its value, or the message it panicked with.
pub(crate) type ItemOutcome<R> = std::result::Result<R, String>;

/// The trampoline for a *chunk* of calls of entry `F` (a pool's `map`): decode `Vec<A>`, run the
/// entry on each item in turn (a panic fails that item only), encode `Vec<ItemOutcome<R>>`.
fn chunk_trampoline<F, A, Fut, R>(
    call: Box<dyn Any + Send>,
) -> Pin<Box<dyn Future<Output = Box<dyn Any + Send>>>>
where
    F: Fn(A) -> Fut + Copy + Send + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future<Output = R> + 'static,
    R: Serialize + 'static,
{
    use futures::FutureExt;
    Box::pin(async move {
        let returned: Returned = async {
            let call = call
                .downcast::<ChildCall>()
                .map_err(|_| Error::Corrupt("child call of the wrong type".into()))?;
            let items: Vec<A> = handle::decode_from_parent(&call.args, call.fds)?;
            let entry: F = code_address::conjure::<F, A, Fut>();
            let mut outcomes: Vec<ItemOutcome<R>> = Vec::with_capacity(items.len());
            for item in items {
                let outcome = std::panic::AssertUnwindSafe(entry(item))
                    .catch_unwind()
                    .await
                    .map_err(|panic| crate::process::panic_message(&*panic));
                outcomes.push(outcome);
            }
            let (bytes, fds) = handle::encode(&outcomes)?;
            Ok((bytes, fds, false))
        }
        .await;
        Box::new(returned) as Box<dyn Any + Send>
    })
}

/// The address-independent name of the chunk trampoline for entry type `F`.
pub(crate) fn chunk_offset_for<F, A, Fut, R>() -> i64
where
    F: Fn(A) -> Fut + Copy + Send + 'static,
    A: DeserializeOwned + 'static,
    Fut: Future<Output = R> + 'static,
    R: Serialize + 'static,
{
    code_address::offset_of(chunk_trampoline::<F, A, Fut, R> as Trampoline)
}
