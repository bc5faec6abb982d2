//! The messages between a manager and its clients, one postcard frame each.
//!
//! A client sends requests tagged with an id of its choosing and the manager answers each with
//! a [`Message::Reply`] (or [`Message::Cancelled`]) carrying that id; replies may come in any
//! order, so many calls share one connection. Reference counts travel as one-way messages.
//! Nothing a client sends names code: objects are made by registered *type names* only.

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::connection::wire::serde_bytes_vec::Bytes;

/// A shared-memory ring carrying encoded [`Message`]s (the bytes API of a queue).
pub(crate) type Ring = crate::Queue<Vec<u8>>;

/// One frame in either direction.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Message {
    /// Run `method` of `object` with postcard-encoded `args`; `id == 0` wants no reply.
    Call {
        id: u64,
        object: u64,
        method: String,
        args: Bytes,
    },
    /// Make an object of registered type `type_name` from its encoded initial value. The reply
    /// is the new object's id (as `u64`), already counted as referenced by this connection.
    Create {
        id: u64,
        type_name: String,
        init: Bytes,
    },
    /// Publish `object` under `name` (the name holds a reference until replaced or shutdown).
    Publish { id: u64, name: String, object: u64 },
    /// Find the object published as `name`: the reply is `(object, type_name)`, counted as
    /// referenced by this connection.
    Lookup { id: u64, name: String },
    /// (Local clients, over a Unix socket.) From now on this client's messages come through
    /// `requests` and the manager's go through `replies`: shared-memory rings, a round trip
    /// without a system call when both sides are awake. The socket stays open: its closing
    /// still tells each side that the other is gone.
    Attach { requests: Ring, replies: Ring },
    /// Withdraw call `id` if it has not completed.
    Cancel { id: u64 },
    /// This connection holds one more reference to `object`.
    IncRef { object: u64 },
    /// This connection holds one reference fewer.
    DecRef { object: u64 },
    /// A proxy of `object` is travelling in a message: keep the object alive until `token` is
    /// released (by the receiver) or the manager shuts down.
    Hold { object: u64, token: u128 },
    /// The proxy carrying `token` arrived (or the hold is no longer needed).
    Release { token: u128 },
    /// How many objects the manager holds (reply: `u64`).
    ObjectCount { id: u64 },
    /// Stop the manager: every object is dropped, every connection closed.
    Shutdown { id: u64 },
    /// The outcome of request `id`: postcard-encoded bytes, or the error.
    Reply {
        id: u64,
        outcome: Result<Bytes, Error>,
    },
    /// Request `id` was withdrawn before it completed: it had no effect.
    Cancelled { id: u64 },
}

/// Where one side's messages go: over the socket, or through a shared-memory ring once a
/// local client attached one.
#[derive(Clone)]
pub(crate) enum Outbox {
    Socket(crate::connection::Sender<Message>),
    Ring(Ring),
}

impl Outbox {
    /// Sends one message, written whole or not at all.
    pub(crate) async fn send(&self, message: &Message) -> crate::Result<()> {
        match self {
            Outbox::Socket(sender) => sender.send(message).await,
            Outbox::Ring(ring) => ring.put_bytes(&encode(message)?).await,
        }
    }
}

/// Encodes a value the way arguments and results travel.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> crate::Result<Vec<u8>> {
    postcard::to_allocvec(value)
        .map_err(|e| Error::InvalidArgument(format!("cannot encode a value for the manager: {e}")))
}

/// Decodes a value; bytes that do not decode are the peer's fault.
pub(crate) fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> crate::Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::Corrupt(format!("a manager value does not decode: {e}")))
}
