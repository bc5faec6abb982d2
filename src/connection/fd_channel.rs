//! [`FdChannel`]: a minimal async frame channel for the process bootstrap.
//!
//! One sender at a time, no writer task: the spawn bootstrap and the child's single result frame
//! need nothing more. Public connections are [`Connection`](super::Connection).

use std::io::IoSlice;
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::frame::{self, Frame, FrameReader, Step};
use crate::sys::{reactor, scm_rights};
use crate::{Error, Result};

/// One end of a framed, fd-carrying socket.
#[derive(Debug)]
pub(crate) struct FdChannel {
    sock: AsyncFd<OwnedFd>,
    reader: FrameReader,
    max_frame: usize,
}

impl FdChannel {
    /// Wraps a connected stream socket (any blocking mode) with the given frame limit.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn new(sock: OwnedFd, max_frame: usize) -> Result<Self> {
        scm_rights::set_nonblocking(&sock, true)?;
        Ok(FdChannel {
            sock: reactor::register(sock, Interest::READABLE | Interest::WRITABLE)?,
            reader: FrameReader::new(max_frame),
            max_frame,
        })
    }

    /// Sends one frame with `fds` attached.
    ///
    /// # Cancel safety
    ///
    /// Not cancel-safe: dropping the future after part of the frame was written leaves the
    /// stream mid-frame. Callers treat a cancelled send as the end of the channel.
    pub(crate) async fn send(&mut self, payload: &[u8], fds: &[OwnedFd]) -> Result<()> {
        if payload.len() > self.max_frame || payload.len() > u32::MAX as usize {
            return Err(Error::TooLarge {
                size: payload.len(),
                max: self.max_frame,
            });
        }
        let header = frame::header(payload.len(), fds.len());
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let total = frame::HEADER + payload.len();
        let mut sent = 0;
        while sent < total {
            let (h, p) = if sent < frame::HEADER {
                (&header[sent..], payload)
            } else {
                (&header[..0], &payload[sent - frame::HEADER..])
            };
            let attach = if sent == 0 { &borrowed[..] } else { &[] };
            sent += self
                .sock
                .async_io(Interest::WRITABLE, |s| {
                    scm_rights::send(s.as_fd(), &[IoSlice::new(h), IoSlice::new(p)], attach)
                })
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                        Error::Closed
                    }
                    _ => Error::Io(e),
                })?;
        }
        Ok(())
    }

    /// Receives one frame. `Err(Closed)` on a clean end of stream between frames.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: partial input is kept and the next call continues from it.
    pub(crate) async fn recv(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = self.reader.buffered()? {
                return Ok(frame);
            }
            let mut guard = self.sock.readable().await?;
            match guard.try_io(|s| would_block(self.reader.read_once(s.as_fd()))) {
                Ok(Ok(Ok(Step::Frame(frame)))) => return Ok(frame),
                Ok(Ok(Ok(Step::More))) | Err(_) => {}
                Ok(Ok(Err(e))) => return Err(e),
                Ok(Err(e)) => return Err(Error::Io(e)),
            }
        }
    }
}

/// Lifts a `WouldBlock` out of a reader step so tokio's `try_io` clears readiness on it.
pub(crate) fn would_block(step: Result<Step>) -> std::io::Result<Result<Step>> {
    match step {
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Err(e),
        other => Ok(other),
    }
}
