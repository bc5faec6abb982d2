//! Typed connections: [`Sender`], [`Receiver`] and the duplex [`Connection`].

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures::{Sink, Stream, stream::FusedStream};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::ReusableBoxFuture;

use super::frame::{Frame, Framing};
use super::read_side::ReadSide;
use super::socket::Socket;
use super::write_side::WriteSide;
use crate::handle;
use crate::sys::scm_rights::{self, SocketKind};
use crate::{Error, Result};

/// The credentials of the process at the other end of a Unix connection (`SO_PEERCRED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Its process id (of the process that created the socket, for a socketpair).
    pub pid: u32,
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
}

/// Wraps a connected stream socket into both halves.
pub(crate) fn open<T>(fd: OwnedFd, max_frame: usize) -> Result<Connection<T>> {
    open_with(fd, max_frame, Framing::Native)
}

/// Wraps a connected stream socket with the given framing (and so codec).
pub(crate) fn open_with<T>(
    fd: OwnedFd,
    max_frame: usize,
    framing: Framing,
) -> Result<Connection<T>> {
    let (read, write) = engine(fd, max_frame, true, true, framing)?;
    Ok(Connection {
        rx: Receiver::from_side(read.expect("asked for")),
        tx: Sender::from_side(write.expect("asked for")),
        closed: false,
    })
}

/// Validates and registers a socket, building the halves asked for.
pub(super) fn engine(
    fd: OwnedFd,
    max_frame: usize,
    read: bool,
    write: bool,
    framing: Framing,
) -> Result<(Option<ReadSide>, Option<Arc<WriteSide>>)> {
    let kind = scm_rights::socket_kind(&fd)
        .ok_or_else(|| Error::Corrupt("a connection must be a stream socket".into()))?;
    scm_rights::set_nonblocking(&fd, true)?;
    // Registered with the reactor only while someone waits on it (see `socket.rs`).
    let sock = Arc::new(Socket::new(fd));
    let reader = read.then(|| ReadSide::new(sock.clone(), max_frame, framing));
    let writer =
        write.then(|| WriteSide::new(sock, kind == SocketKind::UnixStream, max_frame, framing));
    Ok((reader, writer))
}

/// Serialises a value for the wire: postcard with handles for our framing, pickle (protocol 3,
/// no handles) for CPython's.
fn encode<T: Serialize + ?Sized>(framing: Framing, value: &T) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
    match framing {
        Framing::Native => handle::encode(value),
        Framing::Python => super::pickle::to_vec(value)
            .map(|bytes| (bytes, Vec::new()))
            .map_err(|e| Error::InvalidArgument(format!("cannot pickle the value: {e}"))),
    }
}

fn decode<T: DeserializeOwned>(framing: Framing, frame: Frame) -> Result<T> {
    match framing {
        Framing::Native => handle::decode(&frame.payload, frame.fds),
        // Our unpickler never runs code: it builds plain data, and refuses pickles that name
        // classes or functions, nest too deep or expand too far.
        Framing::Python => super::unpickle::from_slice(&frame.payload)
            .map_err(|e| Error::Corrupt(format!("cannot unpickle the message as this type: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------

/// The sending end of a pipe or connection (Python's `Connection.send` side).
///
/// Cheap to clone; clones send over the same socket and their frames never interleave.
///
/// Sending writes the frame straight to the socket when nothing else is being written (one
/// system call, no task hop). When several tasks send at once, or the peer reads slower than we
/// write, frames queue and a writer task sends them in batches, so many small messages cost far
/// fewer system calls than messages.
pub struct Sender<T> {
    pub(super) side: Arc<WriteSide>,
    sink: Option<ReusableBoxFuture<'static, Result<()>>>,
    _type: PhantomData<fn(T)>,
}

impl<T> Sender<T> {
    pub(super) fn from_side(side: Arc<WriteSide>) -> Self {
        Sender {
            side,
            sink: None,
            _type: PhantomData,
        }
    }

    /// Sends `bytes` as one frame, without serialisation (Python's `send_bytes`); returns once
    /// it is written to the socket.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] (nothing is written) above the maximum frame size;
    /// [`Error::Closed`] when the peer is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe in the sense that matters for a stream: the frame is handed over whole before
    /// the first await, so cancelling never leaves half a frame on the wire. A cancelled send
    /// may still be delivered.
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.side.send(bytes, Vec::new()).await
    }

    /// Queues `bytes` as one frame without serialisation and returns without waiting for the
    /// write (only for room in the queue): the raw twin of [`feed`](Self::feed). Call
    /// [`flush`](Self::flush) before relying on delivery.
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if cancelled while waiting for room, nothing was queued.
    pub async fn feed_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.side.wait_for_space().await?;
        self.side.enqueue(bytes, Vec::new())
    }

    /// [`send_bytes`](Self::send_bytes) for plain threads.
    ///
    /// # Errors
    ///
    /// As [`send_bytes`](Self::send_bytes).
    ///
    /// # Panics
    ///
    /// When it would have to wait inside a tokio runtime (use the async method there).
    pub fn send_bytes_blocking(&self, bytes: &[u8]) -> Result<()> {
        self.side.send_blocking(bytes, Vec::new())
    }

    /// Waits until every frame queued by this or any clone is written.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] when the peer is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits.
    pub async fn flush(&self) -> Result<()> {
        self.side.flush().await
    }

    /// The largest payload this end sends.
    pub fn max_frame(&self) -> usize {
        self.side.max_frame()
    }
}

impl<T: Serialize> Sender<T> {
    /// Serialises `value` and sends it as one frame (Python's `send`); returns once it is
    /// written to the socket. Handles inside `value` travel with their file descriptors.
    ///
    /// `value` may be anything `T` borrows as, and so serialises the same: a `&str` on a
    /// `Sender<String>` (`conn.send("stop")`), a `&[u32]` on a `Sender<Vec<u32>>`.
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] (nothing is written) above the maximum frame size;
    /// [`Error::Closed`] when the peer is gone; [`Error::InvalidArgument`] when `value` cannot be
    /// serialised or holds handles on a TCP connection.
    ///
    /// # Cancel safety
    ///
    /// As [`send_bytes`](Self::send_bytes): never half a frame; a cancelled send may still be
    /// delivered.
    pub async fn send<Q>(&self, value: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let (bytes, fds) = encode(self.side.framing(), value)?;
        self.side.send(&bytes, fds).await
    }

    /// Queues `value` and returns without waiting for the write (only for room in the queue):
    /// the batching path. Call [`flush`](Self::flush) before relying on delivery, such as before
    /// the process exits.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: if cancelled while waiting for room, nothing was queued.
    pub async fn feed<Q>(&self, value: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let (bytes, fds) = encode(self.side.framing(), value)?;
        self.side.wait_for_space().await?;
        self.side.enqueue(&bytes, fds)
    }

    /// [`send`](Self::send) for plain threads: blocks until written.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    ///
    /// # Panics
    ///
    /// When it would have to wait inside a tokio runtime (use the async method there).
    pub fn send_blocking<Q>(&self, value: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        let (bytes, fds) = encode(self.side.framing(), value)?;
        self.side.send_blocking(&bytes, fds)
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.side.add_sender();
        Sender::from_side(self.side.clone())
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.side.remove_sender();
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("max_frame", &self.max_frame())
            .finish_non_exhaustive()
    }
}

impl<T: Serialize> Sink<T> for Sender<T> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let side = this.side.clone();
        poll_stored(
            &mut this.sink,
            cx,
            async move { side.wait_for_space().await },
        )
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        let (bytes, fds) = encode(self.side.framing(), &item)?;
        self.side.enqueue(&bytes, fds)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let side = this.side.clone();
        poll_stored(&mut this.sink, cx, async move { side.flush().await })
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
}

/// Polls the stored future, starting `fresh` when none is in flight.
fn poll_stored(
    slot: &mut Option<ReusableBoxFuture<'static, Result<()>>>,
    cx: &mut Context<'_>,
    fresh: impl std::future::Future<Output = Result<()>> + Send + 'static,
) -> Poll<Result<()>> {
    let fut = match slot {
        Some(fut) => fut,
        None => slot.insert(ReusableBoxFuture::new(fresh)),
    };
    let out = ready!(fut.poll(cx));
    *slot = None;
    Poll::Ready(out)
}

// ---------------------------------------------------------------------------------------------

/// The receiving end of a pipe or connection (Python's `Connection.recv` side).
pub struct Receiver<T> {
    pub(super) side: ReadSide,
    done: bool,
    _type: PhantomData<fn() -> T>,
}

impl<T> Receiver<T> {
    pub(super) fn from_side(side: ReadSide) -> Self {
        Receiver {
            side,
            done: false,
            _type: PhantomData,
        }
    }

    /// Receives one frame's bytes, without deserialisation (Python's `recv_bytes`).
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the peer closed and every frame it sent was received (Python's
    /// `EOFError`); [`Error::TooLarge`] or [`Error::Corrupt`] when the peer broke the protocol
    /// (an oversized announcement, a frame cut short, fds that do not match): the connection is
    /// shut down.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a partly received frame is kept, and the next receive continues it.
    pub async fn recv_bytes(&mut self) -> Result<Bytes> {
        Ok(Bytes::from(self.side.recv().await?.payload))
    }

    /// [`recv_bytes`](Self::recv_bytes) for plain threads.
    ///
    /// # Errors
    ///
    /// As [`recv_bytes`](Self::recv_bytes).
    pub fn recv_bytes_blocking(&mut self) -> Result<Bytes> {
        Ok(Bytes::from(self.side.recv_blocking()?.payload))
    }

    /// Receives one frame into `buf` and returns its length (Python's `recv_bytes_into`).
    ///
    /// # Errors
    ///
    /// [`Error::TooLarge`] when the frame does not fit in `buf` (`size` is the frame's length);
    /// the frame is kept, and the next receive returns it. Otherwise as
    /// [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`recv_bytes`](Self::recv_bytes).
    pub async fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        let frame = self.side.recv().await?;
        let len = frame.payload.len();
        if len > buf.len() {
            self.side.unread(frame);
            return Err(Error::TooLarge {
                size: len,
                max: buf.len(),
            });
        }
        buf[..len].copy_from_slice(&frame.payload);
        Ok(len)
    }

    /// Waits up to `timeout` for something to receive, consuming nothing (Python's `poll`).
    /// `Duration::ZERO` checks without waiting; `Duration::MAX` waits for ever.
    ///
    /// True when data or the end of the stream is waiting (a receive will not wait long).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it consumes nothing.
    pub async fn poll(&mut self, timeout: Duration) -> bool {
        let timeout = (timeout != Duration::MAX).then_some(timeout);
        self.side.poll(timeout).await
    }

    /// The credentials of the peer process, for Unix connections.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] for a TCP connection.
    pub fn peer_credentials(&self) -> Result<Credentials> {
        let (pid, uid, gid) = scm_rights::peer_credentials(self.side.socket().get_ref())?;
        Ok(Credentials { pid, uid, gid })
    }
}

impl<T: DeserializeOwned> Receiver<T> {
    /// Receives and deserialises one value (Python's `recv`). Handles inside it arrive with
    /// their file descriptors.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`] once the peer closed and everything it sent was received;
    /// [`Error::Corrupt`] when the frame does not deserialise as `T` or breaks the protocol;
    /// [`Error::TooLarge`] when the peer announced a frame above the maximum (nothing is
    /// allocated; the connection is shut down).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: a partly received frame is kept, and the next receive continues it.
    pub async fn recv(&mut self) -> Result<T> {
        decode(self.side.framing(), self.side.recv().await?)
    }

    /// [`recv`](Self::recv) without the short spin before parking (a manager that also waits
    /// on a ring).
    pub(crate) async fn recv_parked(&mut self) -> Result<T> {
        decode(self.side.framing(), self.side.recv_parked().await?)
    }

    /// Shuts the socket down both ways: the peer sees the end of the stream even while other
    /// handles of it (a sending half, a writer task) are still around.
    pub(crate) fn shutdown(&self) {
        scm_rights::shutdown(self.side.socket().get_ref());
    }

    /// The socket itself (for socket options; never for reading: that is this receiver's).
    pub(crate) fn raw_socket(&self) -> &std::os::fd::OwnedFd {
        self.side.socket().get_ref()
    }

    /// The socket's readiness: await `readable()` on it, then drain with
    /// [`try_recv`](Self::try_recv) and clear the readiness (which keeps any edge that came
    /// after the guard was taken).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket cannot be registered with the reactor.
    pub(crate) fn readiness(
        &self,
    ) -> Result<std::sync::Arc<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>> {
        Ok(self.side.readiness()?)
    }

    /// A value if a whole frame is already waiting; [`Error::Empty`] otherwise. Never waits.
    ///
    /// # Errors
    ///
    /// [`Error::Empty`], or as [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<T> {
        decode(self.side.framing(), self.side.try_recv()?)
    }

    /// [`recv`](Self::recv) with a deadline.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`], or as [`recv`](Self::recv).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe, as [`recv`](Self::recv); a timeout loses nothing.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        match tokio::time::timeout(timeout, self.side.recv()).await {
            Ok(frame) => decode(self.side.framing(), frame?),
            Err(_) => Err(Error::Timeout),
        }
    }

    /// [`recv`](Self::recv) for plain threads.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    pub fn recv_blocking(&mut self) -> Result<T> {
        decode(self.side.framing(), self.side.recv_blocking()?)
    }
}

impl<T: DeserializeOwned> Stream for Receiver<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match ready!(this.side.poll_recv(cx)) {
            Ok(frame) => Poll::Ready(Some(decode(this.side.framing(), frame))),
            Err(Error::Closed) => {
                this.done = true;
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}

impl<T: DeserializeOwned> FusedStream for Receiver<T> {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------

/// Both ends of a duplex connection (Python's `multiprocessing.connection.Connection`).
///
/// Made by [`Pipe::duplex`](super::Pipe::duplex), [`Listener::accept`](super::Listener::accept)
/// or [`Client::connect`](super::Client::connect). Sending and receiving work as on
/// [`Sender`] and [`Receiver`]; [`into_split`](Self::into_split) separates them so two tasks
/// can use them at once.
///
/// A connection is a handle: it can be sent to another process (the standard "accept, then
/// hand to a worker" server). Whatever this end had already received but not returned travels
/// with it, so the other process reads on exactly where this one stopped; stop receiving on
/// this end once it is sent (as with Python, both ends would read the same socket).
pub struct Connection<T> {
    pub(super) rx: Receiver<T>,
    pub(super) tx: Sender<T>,
    pub(super) closed: bool,
}

impl<T> Connection<T> {
    /// Runs the authkey handshake: the listener side challenges first, then answers.
    pub(crate) async fn authenticate(
        &mut self,
        key: &[u8],
        listener_side: bool,
        options: super::auth::AuthOptions,
    ) -> Result<()> {
        let (reader, writer) = (&mut self.rx.side, &*self.tx.side);
        if listener_side {
            super::auth::challenge(key, options, reader, writer).await?;
            super::auth::answer(key, options, reader, writer).await
        } else {
            super::auth::answer(key, options, reader, writer).await?;
            super::auth::challenge(key, options, reader, writer).await
        }
    }

    /// Wraps a connected Unix stream socket (for example one end of a `socketpair` made
    /// elsewhere) with the default 64 MiB frame limit.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] when the socket cannot be registered.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn from_std(stream: std::os::unix::net::UnixStream) -> Result<Self> {
        open(stream.into(), super::frame::DEFAULT_MAX_FRAME)
    }

    /// Separates the receiving and sending halves.
    pub fn into_split(self) -> (Receiver<T>, Sender<T>) {
        (self.rx, self.tx)
    }

    /// Sends one raw frame with fds (the pool's private socket to a worker).
    pub(crate) async fn send_frame(&self, payload: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        self.tx.side.send(payload, fds).await
    }

    /// Receives one raw frame with its fds.
    ///
    /// Cancel-safe, as [`Receiver::recv`].
    pub(crate) async fn recv_frame(&mut self) -> Result<Frame> {
        self.rx.side.recv().await
    }

    /// Closes the connection without dropping it (Python's `close()`): the peer sees the end
    /// of the stream, and every later send or receive here fails with [`Error::Closed`] (or an
    /// I/O error for a broken pipe). Clones of the sending half and copies sent to other
    /// processes share the socket and are closed with it. Closing twice does nothing.
    pub fn close(&mut self) {
        if !self.closed {
            self.closed = true;
            scm_rights::shutdown(self.tx.side.socket().get_ref());
        }
    }

    /// Whether [`close`](Self::close) was called (Python's `closed`).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// See [`Sender::send_bytes`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send_bytes`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send_bytes`].
    pub async fn send_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.tx.send_bytes(bytes).await
    }

    /// See [`Sender::feed_bytes`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send_bytes`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::feed_bytes`].
    pub async fn feed_bytes(&self, bytes: &[u8]) -> Result<()> {
        self.tx.feed_bytes(bytes).await
    }

    /// See [`Sender::send_bytes_blocking`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send_bytes`].
    ///
    /// # Panics
    ///
    /// As [`Sender::send_bytes_blocking`].
    pub fn send_bytes_blocking(&self, bytes: &[u8]) -> Result<()> {
        self.tx.send_bytes_blocking(bytes)
    }

    /// See [`Sender::flush`].
    ///
    /// # Errors
    ///
    /// As [`Sender::flush`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only waits.
    pub async fn flush(&self) -> Result<()> {
        self.tx.flush().await
    }

    /// See [`Receiver::recv_bytes`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_bytes`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn recv_bytes(&mut self) -> Result<Bytes> {
        self.rx.recv_bytes().await
    }

    /// See [`Receiver::recv_bytes_blocking`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_bytes`].
    pub fn recv_bytes_blocking(&mut self) -> Result<Bytes> {
        self.rx.recv_bytes_blocking()
    }

    /// See [`Receiver::recv_bytes_into`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_bytes_into`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn recv_bytes_into(&mut self, buf: &mut [u8]) -> Result<usize> {
        self.rx.recv_bytes_into(buf).await
    }

    /// See [`Receiver::poll`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it consumes nothing.
    pub async fn poll(&mut self, timeout: Duration) -> bool {
        self.rx.poll(timeout).await
    }

    /// See [`Receiver::peer_credentials`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::peer_credentials`].
    pub fn peer_credentials(&self) -> Result<Credentials> {
        self.rx.peer_credentials()
    }
}

impl<T: Serialize> Connection<T> {
    /// See [`Sender::send`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::send`].
    pub async fn send<Q>(&self, value: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.tx.send(value).await
    }

    /// See [`Sender::feed`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Cancel safety
    ///
    /// As [`Sender::feed`].
    pub async fn feed<Q>(&self, value: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.tx.feed(value).await
    }

    /// See [`Sender::send_blocking`].
    ///
    /// # Errors
    ///
    /// As [`Sender::send`].
    ///
    /// # Panics
    ///
    /// As [`Sender::send_blocking`].
    pub fn send_blocking<Q>(&self, value: &Q) -> Result<()>
    where
        T: Borrow<Q>,
        Q: Serialize + ?Sized,
    {
        self.tx.send_blocking(value)
    }
}

impl<T: DeserializeOwned> Connection<T> {
    /// See [`Receiver::recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn recv(&mut self) -> Result<T> {
        self.rx.recv().await
    }

    /// See [`Receiver::try_recv`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&mut self) -> Result<T> {
        self.rx.try_recv()
    }

    /// See [`Receiver::recv_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv_timeout`].
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe.
    pub async fn recv_timeout(&mut self, timeout: Duration) -> Result<T> {
        self.rx.recv_timeout(timeout).await
    }

    /// See [`Receiver::recv_blocking`].
    ///
    /// # Errors
    ///
    /// As [`Receiver::recv`].
    pub fn recv_blocking(&mut self) -> Result<T> {
        self.rx.recv_blocking()
    }
}

impl<T: DeserializeOwned> Stream for Connection<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        Pin::new(&mut self.get_mut().rx).poll_next(cx)
    }
}

impl<T: DeserializeOwned> FusedStream for Connection<T> {
    fn is_terminated(&self) -> bool {
        self.rx.is_terminated()
    }
}

impl<T: Serialize> Sink<T> for Connection<T> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().tx).poll_ready(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        Pin::new(&mut self.get_mut().tx).start_send(item)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().tx).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        Pin::new(&mut self.get_mut().tx).poll_close(cx)
    }
}

impl<T> fmt::Debug for Connection<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}
