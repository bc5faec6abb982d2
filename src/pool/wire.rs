//! The messages between a pool and one of its workers.
//!
//! Each worker has a private pair of shared-memory queues (tasks in, results out: a round trip
//! in microseconds, no socket hop) and a private socket for the rare message whose arguments or
//! result hold handles (file descriptors travel only over sockets). Both carry the same
//! postcard-encoded messages; over the socket, the fds of every call ride on the frame, in
//! order, `nfds` each. Only the process that started the worker can write to either, which is
//! what lets a message name the code to run (as a spawn argument does).

use serde::{Deserialize, Serialize};

/// Calls to run, in order.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Calls(pub(super) Vec<Call>);

/// One call: a task (or a chunk of a `map`) by its trampoline and its encoded arguments.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Call {
    pub(super) id: u64,
    /// The trampoline's offset (see `sys::code_address`).
    pub(super) entry: i64,
    #[serde(with = "serde_bytes")]
    pub(super) args: Vec<u8>,
    pub(super) nfds: u32,
}

/// [`Call`] borrowing its arguments, to encode one without copying them first.
#[derive(Serialize)]
pub(super) struct CallRef<'a> {
    pub(super) id: u64,
    pub(super) entry: i64,
    #[serde(with = "serde_bytes")]
    pub(super) args: &'a [u8],
    pub(super) nfds: u32,
}

/// What a worker sends back.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Reply {
    /// Calls finished, in any order.
    Done(Vec<Done>),
    /// The initializer failed (panicked or returned `Err`): the worker exits.
    InitFailed(String),
}

/// [`Reply::Done`] borrowing its calls, to encode one without building a `Vec` (the same
/// wire form).
#[derive(Serialize)]
pub(super) enum ReplyRef<'a> {
    Done(&'a [Done]),
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Done {
    pub(super) id: u64,
    pub(super) outcome: Outcome,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Outcome {
    /// The encoded result; its `nfds` fds ride on the frame (socket path only).
    Returned {
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
        nfds: u32,
    },
    /// The task panicked with this message (the worker goes on).
    Panicked(String),
    /// The worker could not run it (arguments that do not decode, say).
    Failed(String),
}
