//! The receiving half of a connection: frames reassembled from readiness-driven reads.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

/// How long a receiver keeps reading the socket directly before it parks on the reactor.
const RECV_SPIN: Duration = Duration::from_micros(20);

use tokio::io::unix::AsyncFd;

use super::fd_channel::would_block;
use super::frame::{Frame, FrameReader, Framing, Step};
use crate::notify::spin_until;
use crate::sys::scm_rights;
use crate::{Error, Result};

/// One reader of a socket. Not shared: receiving takes `&mut self`.
#[derive(Debug)]
pub(crate) struct ReadSide {
    sock: Arc<AsyncFd<OwnedFd>>,
    framing: Framing,
    reader: FrameReader,
    /// A frame handed back by `recv_bytes_into` because the caller's buffer was too small.
    pending: Option<Frame>,
}

impl ReadSide {
    pub(crate) fn new(sock: Arc<AsyncFd<OwnedFd>>, max_frame: usize, framing: Framing) -> Self {
        ReadSide {
            sock,
            framing,
            reader: FrameReader::with_framing(max_frame, framing),
            pending: None,
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

    pub(crate) fn socket(&self) -> &AsyncFd<OwnedFd> {
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
            if let Some(frame) = self.reader.buffered()? {
                return Poll::Ready(Ok(frame));
            }
            let mut guard = ready!(self.sock.poll_read_ready(cx))?;
            let reader = &mut self.reader;
            match guard.try_io(|s| would_block(reader.read_once(s.as_fd()))) {
                Ok(Ok(Ok(Step::Frame(frame)))) => return Poll::Ready(Ok(frame)),
                Ok(Ok(Ok(Step::More))) | Err(_) => {}
                Ok(Ok(Err(e))) => return Poll::Ready(Err(e)),
                Ok(Err(e)) => return Poll::Ready(Err(Error::Io(e))),
            }
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
            return Ok(frame);
        }
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// The socket's readiness, for a task that waits for input while others may read it.
    pub(crate) fn readiness(&self) -> Arc<AsyncFd<OwnedFd>> {
        self.sock.clone()
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
    pub(crate) fn recv_blocking(&mut self) -> Result<Frame> {
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
                let Ok(mut guard) = self.sock.readable().await else {
                    return true;
                };
                match scm_rights::has_input(self.sock.get_ref()) {
                    Ok(false) => guard.clear_ready(),
                    Ok(true) | Err(_) => return true,
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.unwrap_or(false),
            None => wait.await,
        }
    }
}
