//! How a handle crosses to another process: plain data plus file descriptors.
//!
//! Every primitive of this crate is a *handle*: cheap to clone inside a process, and sendable to
//! another one. Crossing is always the same two steps:
//!
//! 1. The value is serialised with serde (postcard). Each handle inside it turns itself into its
//!    [`Handle::Wire`] form and parks its fds in a side table, leaving only their index in the
//!    bytes (the technique of servo's ipc-channel).
//! 2. The bytes travel with the fds: over a Unix socket in `SCM_RIGHTS` (spawn arguments and
//!    results, messages on a connection) or through `exec` as inherited fds
//!    ([`pass`](crate::pass) / [`inherited`](crate::inherited)).
//!
//! A new handle type plugs in by implementing [`Handle`] and forwarding serde to it with
//! [`serialize`] / [`deserialize`]. Serialising a handle anywhere else (say, to JSON) is an
//! error: a file descriptor means nothing outside the message that carries it.

use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};

use serde::de::{DeserializeOwned, Error as _};
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// A value that can be sent to another process together with file descriptors.
///
/// Implement it, then forward `Serialize` / `Deserialize` to [`serialize`] and [`deserialize`].
pub trait Handle: Sized {
    /// The plain-data part that travels in the message bytes (fds appear as [`FdIndex`]).
    type Wire: Serialize + DeserializeOwned;

    /// Describes `self`, adding its fds to `fds`.
    ///
    /// # Errors
    ///
    /// When an fd cannot be duplicated.
    fn to_wire(&self, fds: &mut FdSink) -> Result<Self::Wire>;

    /// Rebuilds the handle on the receiving side, taking its fds from `fds`.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the description or the fds fail validation (sizes, seals, layout
    /// version, missing fds): the sender is buggy or hostile, or sent something that is not ours.
    fn from_wire(wire: Self::Wire, fds: &mut FdSource) -> Result<Self>;
}

/// The position of an fd in the message that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdIndex(u32);

/// Collects the fds of the handles in a value being serialised.
#[derive(Debug, Default)]
pub struct FdSink {
    fds: Vec<OwnedFd>,
}

impl FdSink {
    /// Adds a duplicate of `fd` to the message and returns where it will be found.
    ///
    /// # Errors
    ///
    /// When the fd cannot be duplicated (out of fds).
    pub fn push(&mut self, fd: impl AsFd) -> Result<FdIndex> {
        let index = u32::try_from(self.fds.len())
            .map_err(|_| Error::InvalidArgument("too many file descriptors".into()))?;
        self.fds.push(crate::sys::dup(fd)?);
        Ok(FdIndex(index))
    }
}

/// Hands out the fds that arrived with a message being deserialised.
#[derive(Debug, Default)]
pub struct FdSource {
    fds: Vec<Option<OwnedFd>>,
    from_parent: bool,
}

impl FdSource {
    /// A function named by `offset` (made by the sender with
    /// `sys::code_address::action_offset`), accepted only in this child's spawn arguments,
    /// which the parent that started this same executable made (as trusted as the executable
    /// itself): a peer could name any address.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the message does not come from our parent.
    pub(crate) fn parent_action(&self, offset: i64) -> Result<crate::sys::code_address::Action> {
        if !self.from_parent {
            return Err(Error::Corrupt(
                "a function can only be handed to a child as a spawn argument".into(),
            ));
        }
        crate::sys::code_address::resolve_action_from_parent(offset).ok_or_else(|| {
            Error::Corrupt("a function arrived before the parent's executable was checked".into())
        })
    }

    /// Takes the fd at `index`; each can be taken once.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the index is out of range or was taken already.
    pub fn take(&mut self, index: FdIndex) -> Result<OwnedFd> {
        let len = self.fds.len();
        self.fds
            .get_mut(index.0 as usize)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::Corrupt(format!(
                    "message refers to file descriptor #{} of {len}, which is missing or used twice",
                    index.0
                ))
            })
    }
}

thread_local! {
    static SINK: RefCell<Option<FdSink>> = const { RefCell::new(None) };
    static SOURCE: RefCell<Option<(FdSource, Option<Error>)>> = const { RefCell::new(None) };
}

const OUTSIDE: &str = "tokio-multiprocessing handles can only be serialised by the crate's own \
                       transports (spawn arguments, connection messages, `mp::pass`)";

/// `Serialize` for a [`Handle`]: use it as the body of the handle's `Serialize` impl.
///
/// # Errors
///
/// Outside one of the crate's transports, or when an fd cannot be duplicated.
pub fn serialize<H: Handle, S: Serializer>(handle: &H, serializer: S) -> Result<S::Ok, S::Error> {
    let wire = SINK.with(|sink| {
        let mut sink = sink.borrow_mut();
        let sink = sink.as_mut().ok_or_else(|| S::Error::custom(OUTSIDE))?;
        handle.to_wire(sink).map_err(S::Error::custom)
    })?;
    wire.serialize(serializer)
}

/// `Deserialize` for a [`Handle`]: use it as the body of the handle's `Deserialize` impl.
///
/// # Errors
///
/// Outside one of the crate's transports, or when the handle fails validation.
pub fn deserialize<'de, H: Handle, D: Deserializer<'de>>(deserializer: D) -> Result<H, D::Error> {
    let wire = H::Wire::deserialize(deserializer)?;
    SOURCE.with(|source| {
        let mut source = source.borrow_mut();
        let (fds, first_error) = source.as_mut().ok_or_else(|| D::Error::custom(OUTSIDE))?;
        H::from_wire(wire, fds).map_err(|e| {
            let msg = e.to_string();
            first_error.get_or_insert(e);
            D::Error::custom(msg)
        })
    })
}

/// Serialises `value` into `buf` if it fits there and holds no handle (the queues' fast path,
/// which allocates nothing); `None` otherwise, and the caller takes the general path.
pub(crate) fn encode_to_slice<T: Serialize + ?Sized>(value: &T, buf: &mut [u8]) -> Option<usize> {
    let previous = SINK.with(|s| s.replace(Some(FdSink::default())));
    let len = postcard::to_slice(value, buf).map(|b| b.len());
    let sink = SINK.with(|s| s.replace(previous)).unwrap_or_default();
    len.ok().filter(|_| sink.fds.is_empty())
}

/// Appends the serialisation of `value` to `buf`; `Ok(false)` (with `buf` as it was) when
/// `value` holds a handle, which only sockets can carry.
pub(crate) fn encode_append<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<bool> {
    struct Append<'a>(&'a mut Vec<u8>);
    impl Extend<u8> for Append<'_> {
        fn extend<I: IntoIterator<Item = u8>>(&mut self, bytes: I) {
            self.0.extend(bytes);
        }
    }
    let start = buf.len();
    let previous = SINK.with(|s| s.replace(Some(FdSink::default())));
    let result = postcard::to_extend(value, Append(buf));
    let sink = SINK.with(|s| s.replace(previous)).unwrap_or_default();
    if let Err(e) = result {
        buf.truncate(start);
        return Err(Error::InvalidArgument(format!(
            "cannot serialise value: {e}"
        )));
    }
    if !sink.fds.is_empty() {
        buf.truncate(start);
        return Ok(false);
    }
    Ok(true)
}

/// Serialises `value` (which may contain handles) into bytes plus the fds they need.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    let previous = SINK.with(|s| s.replace(Some(FdSink::default())));
    let bytes = postcard::to_allocvec(value);
    let sink = SINK.with(|s| s.replace(previous)).unwrap_or_default();
    let bytes =
        bytes.map_err(|e| Error::InvalidArgument(format!("cannot serialise value: {e}")))?;
    Ok((bytes, sink.fds))
}

/// Deserialises a value made by [`encode`] in another process, with the fds that came with it.
///
/// Fds that no handle claims are closed.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8], fds: Vec<OwnedFd>) -> Result<T> {
    decode_with(bytes, fds, false)
}

/// [`decode`] for a child's spawn arguments, which come from its parent (see
/// [`FdSource::parent_action`]).
pub(crate) fn decode_from_parent<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<T> {
    decode_with(bytes, fds, true)
}

fn decode_with<T: DeserializeOwned>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    from_parent: bool,
) -> Result<T> {
    let source = FdSource {
        fds: fds.into_iter().map(Some).collect(),
        from_parent,
    };
    let previous = SOURCE.with(|s| s.replace(Some((source, None))));
    let value = postcard::from_bytes::<T>(bytes);
    let (_, first_error) = SOURCE.with(|s| s.replace(previous)).unwrap_or_default();
    match (value, first_error) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(e)) => Err(e),
        (Err(e), None) => Err(Error::Corrupt(format!("cannot deserialise message: {e}"))),
    }
}

/// Implements `Serialize` and `Deserialize` for a type by forwarding to its [`Handle`] impl.
macro_rules! serde_via_handle {
    ($ty:ty) => {
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(
                &self,
                s: S,
            ) -> ::std::result::Result<S::Ok, S::Error> {
                $crate::handle::serialize(self, s)
            }
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::handle::deserialize(d)
            }
        }
    };
}
pub(crate) use serde_via_handle;
