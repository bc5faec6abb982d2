//! Pipes and connections between processes (Python's `multiprocessing.Pipe` and
//! `multiprocessing.connection`).
//!
//! | Python | here |
//! |---|---|
//! | `a, b = Pipe()` | [`Pipe::<T>::duplex()`](Pipe::duplex) |
//! | `r, w = Pipe(duplex=False)` | [`Pipe::<T>::simplex()`](Pipe::simplex) |
//! | `conn.send(x)` / `conn.recv()` | [`send(&x).await`](Connection::send) / [`recv().await`](Connection::recv) |
//! | `send_bytes` / `recv_bytes` / `recv_bytes_into` | same names |
//! | `conn.poll(timeout)` | [`poll(timeout).await`](Connection::poll) |
//! | `EOFError` | [`Error::Closed`](crate::Error::Closed) |
//!
//! With [`ListenerBuilder::python_compatible`] and [`ClientBuilder::python_compatible`] a
//! connection speaks CPython's own protocol instead (big-endian length frames, pickled values,
//! CPython's authkey handshake), so Python programs connect with the standard library:
//!
//! ```python
//! from multiprocessing.connection import Client
//! conn = Client(("127.0.0.1", 6000), authkey=b"secret")
//! ```
//!
//! Every frame is length-delimited with a maximum size checked before anything is allocated, and
//! carries the file descriptors of the handles inside it (`SCM_RIGHTS`). Receivers are
//! [`Stream`](futures::Stream)s and senders [`Sink`](futures::Sink)s.
//!
//! Latency: a receiver reads the socket directly for up to 20 µs before it parks on tokio's
//! reactor, so a peer that answers quickly costs no wake-up. When it does park, a task on a
//! runtime worker is woken by the thread that read the reactor; `main`'s own future (the one
//! `#[tokio::main]` runs in `block_on`) is woken through a second thread. For request/reply
//! loops that care about µs, run them in a spawned task: in the W2 benchmark a round trip
//! took 5 µs from a spawned task (Python's `Pipe`: 84–93 µs).
//!
//! Throughput: a socket is registered with the reactor only while someone waits on it — a
//! receiver that had to park (until frames flow again), a sender waiting for room. A lasting
//! registration would make every frame sent or read wake the reactor thread of the process at
//! the other end, waiting task or not; without it, one-way `send_bytes` runs at about twice the
//! rate of a tokio `UnixStream` with a length-delimited codec.
//!
//! ```
//! use tokio_multiprocessing::Pipe;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> tokio_multiprocessing::Result<()> {
//! let (mut rx, tx) = Pipe::<Vec<u32>>::simplex()?;
//! tx.send(&vec![1, 2, 3]).await?;
//! drop(tx);
//! assert_eq!(rx.recv().await?, [1, 2, 3]);
//! assert!(matches!(rx.recv().await, Err(tokio_multiprocessing::Error::Closed)));
//! # Ok(())
//! # }
//! ```

mod auth;
#[allow(clippy::module_inception)]
mod connection;
mod fd_channel;
mod frame;
mod listener;
mod pickle;
mod pipe;
mod read_side;
mod socket;
pub(crate) mod unpickle;
pub(crate) mod wire;
mod write_side;

pub use connection::{Connection, Credentials, Receiver, Sender};
pub(crate) use fd_channel::FdChannel;
pub(crate) use frame::{Frame, header as frame_header};
#[cfg(test)]
pub(crate) use frame::{FrameReader, Framing, Step};
pub use listener::{
    Address, Client, ClientBuilder, DEFAULT_HANDSHAKE_TIMEOUT, Listener, ListenerBuilder,
};
pub use pipe::Pipe;
