//! [`ProxyCore`]: what every proxy is — a counted reference to one object in one manager.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::address::ManagerAddress;
use super::session::{self, Session, Undo};
use super::wire::{self, Message};
use crate::Result;
use crate::connection::wire::serde_bytes_vec::Bytes;

/// A typed handle to an object that lives in a manager.
///
/// Proxies are made by [`Manager`](super::Manager) methods (`create`, `dict`, `queue`, …) and by
/// [`managed!`](crate::managed) for your own types. Every proxy is `Clone` and `Send`, and
/// crosses to other processes as a [`Process::spawn`](crate::Process::spawn) argument, a pool
/// task's argument or inside any message (it carries the manager's address and authkey, and the
/// receiving process connects by itself). Every copy reaches the same object, which lives as
/// long as some proxy of it exists anywhere.
pub trait Proxy: Clone + Send + Sync + 'static {
    /// The registered type name of the objects this proxy reaches.
    const TYPE_NAME: &'static str;

    /// Wraps a counted reference.
    #[doc(hidden)]
    fn from_core(core: ProxyCore) -> Self;

    /// The counted reference.
    fn core(&self) -> &ProxyCore;
}

/// The untyped part of every proxy: the manager's session and the object's id.
///
/// Cloning counts a reference, dropping releases it (the manager drops the object when the
/// last reference in every process is gone, or when a process holding some dies).
pub struct ProxyCore {
    session: Arc<Session>,
    object: u64,
}

impl ProxyCore {
    /// A core for a reference the manager already counted for this connection.
    pub(crate) fn adopt(session: Arc<Session>, object: u64) -> ProxyCore {
        session.adopt_ref(object);
        ProxyCore { session, object }
    }

    /// The object's id in its manager (unique for the manager's lifetime).
    pub fn object_id(&self) -> u64 {
        self.object
    }

    pub(crate) fn session(&self) -> &Arc<Session> {
        &self.session
    }

    /// Calls `method` with `args` in the manager and decodes its result.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) when the manager is gone or unreachable;
    /// [`Error::Remote`](crate::Error::Remote) when the method panicked or does not exist;
    /// errors the object's method returns for itself (a queue's `Empty`, say).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe for methods that only read or only write: a call dropped before its reply is
    /// withdrawn if the manager has not run it yet, and may have taken effect if it had.
    pub async fn call<A, R>(&self, method: &str, args: &A) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        self.call_undoable(method, args, None).await
    }

    /// [`call`](Self::call) for a method that hands something out (an item, a lock): if the
    /// caller goes away after the manager completed the call, `undo` is called in the manager
    /// with the reply's bytes as its arguments.
    pub(crate) async fn call_undoable<A, R>(
        &self,
        method: &str,
        args: &A,
        undo: Option<&'static str>,
    ) -> Result<R>
    where
        A: Serialize + ?Sized,
        R: DeserializeOwned,
    {
        let args = wire::encode(args)?;
        let object = self.object;
        let undo = undo.map(|method| Undo::Call { object, method });
        let bytes = self
            .session
            .request(
                |id| Message::Call {
                    id,
                    object,
                    method: method.to_owned(),
                    args: Bytes(args),
                },
                undo,
            )
            .await?;
        session::decode_reply(&bytes)
    }

    /// Calls `method` without waiting for (or getting) a reply, in order with this process's
    /// other one-way messages: for releases from `Drop`.
    pub(crate) fn post<A: Serialize + ?Sized>(&self, method: &str, args: &A) {
        if let Ok(args) = wire::encode(args) {
            self.session.post(Message::Call {
                id: 0,
                object: self.object,
                method: method.to_owned(),
                args: Bytes(args),
            });
        }
    }
}

impl Clone for ProxyCore {
    fn clone(&self) -> Self {
        self.session.add_ref(self.object);
        ProxyCore {
            session: self.session.clone(),
            object: self.object,
        }
    }
}

impl Drop for ProxyCore {
    fn drop(&mut self) {
        self.session.drop_ref(self.object);
    }
}

impl fmt::Debug for ProxyCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyCore")
            .field("manager", &self.session.address)
            .field("object", &self.object)
            .finish()
    }
}

/// A proxy in a message: where its manager is, how to get in, which object, and the token of
/// the hold that keeps the object alive until the receiver has counted its reference.
#[derive(Serialize, Deserialize)]
struct ProxyWire {
    address: ManagerAddress,
    authkey: Bytes,
    object: u64,
    token: u128,
}

impl Serialize for ProxyCore {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut token = [0u8; 16];
        crate::sys::random_bytes(&mut token).map_err(serde::ser::Error::custom)?;
        let token = u128::from_ne_bytes(token);
        self.session.post(Message::Hold {
            object: self.object,
            token,
        });
        ProxyWire {
            address: self.session.address.clone(),
            authkey: Bytes(self.session.authkey.clone()),
            object: self.object,
            token,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for ProxyCore {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let wire = ProxyWire::deserialize(d)?;
        let session =
            Session::get(&wire.address, &wire.authkey.0).map_err(serde::de::Error::custom)?;
        session.add_ref(wire.object);
        session.post(Message::Release { token: wire.token });
        Ok(ProxyCore {
            session,
            object: wire.object,
        })
    }
}
