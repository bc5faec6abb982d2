//! The receiving half of a connection: frames reassembled from readiness-driven reads.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// How long a receiver keeps reading the socket directly before it parks on the reactor.
const RECV_SPIN: Duration = Duration::from_micros(20);

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::frame::{Frame, FrameReader, Framing, Step};
use super::socket::Socket;
use crate::notify::spin_until;
use crate::sys::scm_rights;
use crate::{Error, Result};

/// Frames received in a row without parking after which a receiver drops its registration
/// with the reactor (see `socket.rs`): input is flowing, and the registration would only make
/// every frame wake the reactor thread.
const FLOWING: u32 = 64;

/// One reader of a socket. Not shared: receiving takes `&mut self`.
#[derive(Debug)]
pub(crate) struct ReadSide {
    sock: Arc<Socket>,
    framing: Framing,
    reader: FrameReader,
    /// A frame handed back by `recv_bytes_into` because the caller's buffer was too small.
    pending: Option<Frame>,
    /// A registration for readability, made when this receiver first had to park.
    parked: Option<AsyncFd<OwnedFd>>,
    /// Frames received since it last parked.
    flowing: u32,
}

impl ReadSide {
    pub(crate) fn new(sock: Arc<Socket>, max_frame: usize, framing: Framing) -> Self {
        ReadSide {
            sock,
            framing,
            reader: FrameReader::with_framing(max_frame, framing),
            pending: None,
            parked: None,
            flowing: 0,
        }
    }

    pub(crate) fn framing(&self) -> Framing {
        self.framing
    }

    pub(crate) fn max_frame(&self) -> usize {
        self.reader.max_frame()
    }

    /// Changes the largest payload accepted from the next frame header on.
    pub(crate) fn set_max_frame(&mut self, max: usize) {
        self.reader.set_max_frame(max);
    }

    pub(crate) fn socket(&self) -> &Socket {
        &self.sock
    }

    /// Input received but not returned yet, and its fds (see [`FrameReader::unread_input`]).
    pub(crate) fn unread_input(&self) -> (Vec<u8>, Vec<std::os::fd::BorrowedFd<'_>>) {
        self.reader.unread_input(self.pending.as_ref())
    }

    /// Starts on input another process had received but not returned.
    pub(crate) fn prefill(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        self.reader.prefill(bytes, fds)
    }

    /// Puts a frame back; the next receive returns it.
    pub(crate) fn unread(&mut self, frame: Frame) {
        self.pending = Some(frame);
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame>> {
        if let Some(frame) = self.pending.take() {
            return Poll::Ready(Ok(frame));
        }
        loop {
            match self.reader.read_once(self.sock.get_ref().as_fd()) {
                Ok(Step::Frame(frame)) => {
                    self.note_flowing();
                    return Poll::Ready(Ok(frame));
                }
                Ok(Step::More) => continue,
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
            ready!(self.poll_parked(cx))?;
        }
    }

    /// Parks until the socket may be readable (a read may still find nothing: try again).
    fn poll_parked(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.flowing = 0;
        if self.parked.is_none() {
            self.parked = Some(self.sock.register(Interest::READABLE)?);
        }
        let parked = self.parked.as_ref().expect("registered above");
        let mut guard = ready!(parked.poll_read_ready(cx))?;
        // Cleared before the next read: an edge that comes after this is kept.
        guard.clear_ready();
        Poll::Ready(Ok(()))
    }

    /// A frame came without parking: after [`FLOWING`] in a row, stop being registered.
    fn note_flowing(&mut self) {
        self.flowing = self.flowing.saturating_add(1);
        if self.flowing >= FLOWING {
            self.parked = None;
        }
    }

    /// Receives one frame.
    ///
    /// A frame that is there or arrives within a few µs is read straight from the socket:
    /// waiting through tokio's reactor costs a wake-up of the runtime, tens of µs on a small
    /// VM, and a peer answering a request usually answers sooner than that. Only then does it
    /// register for readiness and park, so an idle receiver costs nothing.
    ///
    /// Cancel-safe: partial input stays in the reader.
    pub(crate) async fn recv(&mut self) -> Result<Frame> {
        if let Some(frame) = self.recv_soon()? {
            self.note_flowing();
            return Ok(frame);
        }
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The socket's readiness, for a task that waits for input while others may read it (a
    /// lasting registration: see [`Socket::readiness`]).
    pub(crate) fn readiness(&self) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
        self.sock.readiness()
    }

    /// Receives one frame without spinning first: for a task that also waits for other things.
    ///
    /// Cancel-safe: partial input stays in the reader.
    pub(crate) async fn recv_parked(&mut self) -> Result<Frame> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// A frame that is complete now or within [`RECV_SPIN`], read without the reactor.
    fn recv_soon(&mut self) -> Result<Option<Frame>> {
        // Each attempt is a read (a system call); the spin's pauses and yields space them out.
        spin_until(RECV_SPIN, || match self.try_recv() {
            Err(Error::Empty) => None,
            other => Some(other),
        })
        .transpose()
    }

    /// A frame if one can be completed without waiting; [`Error::Empty`] otherwise.
    pub(crate) fn try_recv(&mut self) -> Result<Frame> {
        self.recv_sync(|_| Err(Error::Empty))
    }

    /// Blocks the calling thread until a frame arrives.
    ///
    /// Like [`recv`](Self::recv), it reads for a few µs before it parks in `poll`: a thread
    /// woken from `poll` on a small VM takes tens of µs to run again (W2 blocking round trip
    /// 103 µs parking at once).
    pub(crate) fn recv_blocking(&mut self) -> Result<Frame> {
        if let Some(frame) = self.recv_soon()? {
            return Ok(frame);
        }
        self.recv_sync(|sock| {
            scm_rights::wait_ready(sock, false, None)?;
            Ok(())
        })
    }

    fn recv_sync(&mut self, mut on_empty: impl FnMut(&OwnedFd) -> Result<()>) -> Result<Frame> {
        if let Some(frame) = self.pending.take() {
            return Ok(frame);
        }
        loop {
            match self.reader.read_once(self.sock.get_ref().as_fd()) {
                Ok(Step::Frame(frame)) => return Ok(frame),
                Ok(Step::More) => {}
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    on_empty(self.sock.get_ref())?
                }
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits up to `timeout` (forever with `None`) for input; consumes nothing.
    ///
    /// True when a frame or part of one, or the end of the stream, is waiting.
    pub(crate) async fn poll(&mut self, timeout: Option<Duration>) -> bool {
        if self.pending.is_some() || self.reader.has_buffered() {
            return true;
        }
        let wait = async {
            loop {
                match scm_rights::has_input(self.sock.get_ref()) {
                    Ok(false) => {}
                    Ok(true) | Err(_) => return true,
                }
                if poll_fn(|cx| self.poll_parked(cx)).await.is_err() {
                    return true;
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.unwrap_or(false),
            None => wait.await,
        }
    }
}
