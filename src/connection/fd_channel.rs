//! [`FdChannel`]: length-delimited frames plus fds over a Unix stream socket.
//!
//! ```text
//! frame = header payload
//! header = payload length (u32 LE) | number of fds (u32 LE)     -- the fds ride on the header
//! ```
//!
//! Every length and count read from the socket is checked against local limits before anything
//! is allocated; a frame whose fds do not match its header is refused.

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};

use tokio::io::Interest;
use tokio::net::UnixStream;

use crate::sys::scm_rights;
use crate::{Error, Result};

const HEADER: usize = 8;

/// One end of a framed, fd-carrying socket.
#[derive(Debug)]
pub(crate) struct FdChannel {
    stream: UnixStream,
    max_frame: usize,
    /// Partial input survives a cancelled `recv`.
    header: [u8; HEADER],
    header_len: usize,
    payload: Vec<u8>,
    payload_len: usize,
    expected: Option<(usize, usize)>,
    fds: Vec<OwnedFd>,
}

impl FdChannel {
    /// Wraps a connected stream socket (any blocking mode) with the given frame limit.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn new(sock: OwnedFd, max_frame: usize) -> Result<Self> {
        scm_rights::set_nonblocking(&sock, true)?;
        let std = std::os::unix::net::UnixStream::from(sock);
        Ok(FdChannel {
            stream: UnixStream::from_std(std)?,
            max_frame,
            header: [0; HEADER],
            header_len: 0,
            payload: Vec::new(),
            payload_len: 0,
            expected: None,
            fds: Vec::new(),
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
        let mut header = [0u8; HEADER];
        header[..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        header[4..].copy_from_slice(&(fds.len() as u32).to_le_bytes());
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        let total = HEADER + payload.len();
        let mut sent = 0;
        while sent < total {
            let n = self
                .stream
                .async_io(Interest::WRITABLE, || {
                    let (h, p) = if sent < HEADER {
                        (&header[sent..], payload)
                    } else {
                        (&header[..0], &payload[sent - HEADER..])
                    };
                    let attach = if sent == 0 { &borrowed[..] } else { &[] };
                    scm_rights::send(
                        self.stream.as_fd(),
                        &[IoSlice::new(h), IoSlice::new(p)],
                        attach,
                    )
                })
                .await
                .map_err(closed_on_pipe)?;
            sent += n;
        }
        Ok(())
    }

    /// Receives one frame and its fds. `Err(Closed)` on a clean end of stream between frames.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: partial input is kept in `self` and the next call continues from it.
    pub(crate) async fn recv(&mut self) -> Result<(Vec<u8>, Vec<OwnedFd>)> {
        loop {
            if let Some((len, nfds)) = self.expected {
                if self.payload_len == len {
                    if self.fds.len() != nfds {
                        return Err(Error::Corrupt(format!(
                            "frame announced {nfds} file descriptors, {} arrived",
                            self.fds.len()
                        )));
                    }
                    let payload = std::mem::take(&mut self.payload);
                    let fds = std::mem::take(&mut self.fds);
                    self.expected = None;
                    self.header_len = 0;
                    self.payload_len = 0;
                    return Ok((payload, fds));
                }
                let start = self.payload_len;
                let (n, fds) = self.read_some(Some(start), nfds).await?;
                if n == 0 {
                    return Err(Error::Corrupt(
                        "peer closed the connection mid-frame".into(),
                    ));
                }
                self.payload_len += n;
                self.take_fds(fds, nfds)?;
            } else {
                let (n, fds) = self.read_some(None, scm_rights::MAX_FDS).await?;
                if n == 0 {
                    return Err(if self.header_len == 0 {
                        Error::Closed
                    } else {
                        Error::Corrupt("peer closed the connection mid-frame".into())
                    });
                }
                self.header_len += n;
                self.fds.extend(fds);
                if self.header_len == HEADER {
                    let len =
                        u32::from_le_bytes(self.header[..4].try_into().expect("4 bytes")) as usize;
                    let nfds =
                        u32::from_le_bytes(self.header[4..].try_into().expect("4 bytes")) as usize;
                    if len > self.max_frame {
                        return Err(Error::TooLarge {
                            size: len,
                            max: self.max_frame,
                        });
                    }
                    if nfds > scm_rights::MAX_FDS || self.fds.len() > nfds {
                        return Err(Error::Corrupt(format!(
                            "frame announces {nfds} file descriptors"
                        )));
                    }
                    self.payload = vec![0; len];
                    self.expected = Some((len, nfds));
                }
            }
        }
    }

    fn take_fds(&mut self, fds: Vec<OwnedFd>, nfds: usize) -> Result<()> {
        self.fds.extend(fds);
        if self.fds.len() > nfds {
            return Err(Error::Corrupt(
                "more file descriptors than the frame announced".into(),
            ));
        }
        Ok(())
    }

    /// Reads into the header (`None`) or the payload from `Some(offset)`.
    async fn read_some(
        &mut self,
        payload_at: Option<usize>,
        max_fds: usize,
    ) -> Result<(usize, Vec<OwnedFd>)> {
        let stream = &self.stream;
        let buf: &mut [u8] = match payload_at {
            None => &mut self.header[self.header_len..],
            Some(at) => &mut self.payload[at..],
        };
        stream
            .async_io(Interest::READABLE, || {
                scm_rights::recv(stream.as_fd(), buf, max_fds.max(1))
            })
            .await
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => Error::Corrupt(e.to_string()),
                io::ErrorKind::ConnectionReset => Error::Closed,
                _ => Error::Io(e),
            })
    }
}

fn closed_on_pipe(e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Error::Closed,
        _ => Error::Io(e),
    }
}
