//! The frame format and the incremental frame reader.
//!
//! ```text
//! frame  = header payload
//! header = payload length (u32 LE) | number of fds (u32 LE)   -- the fds ride on the header bytes
//! ```
//!
//! Every length and count read from the socket is checked against local limits *before* anything
//! is allocated; a frame whose fds do not match its header is refused.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::sys::scm_rights;
use crate::{Error, Result};

/// Bytes of a frame header.
pub(crate) const HEADER: usize = 8;

/// Default largest payload: 64 MiB.
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// A received frame: its payload and the fds that came with it.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// The header of a frame of `len` payload bytes carrying `nfds` fds.
pub(crate) fn header(len: usize, nfds: usize) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..].copy_from_slice(&(nfds as u32).to_le_bytes());
    h
}

/// What one read brought.
#[derive(Debug)]
pub(crate) enum Step {
    /// A whole frame.
    Frame(Frame),
    /// Some bytes; read again.
    More,
}

/// Reassembles frames from a stream, one `recvmsg` at a time. Partial input survives between
/// calls, so a cancelled receive loses nothing.
#[derive(Debug)]
pub(crate) struct FrameReader {
    max_frame: usize,
    header: [u8; HEADER],
    header_len: usize,
    payload: Vec<u8>,
    payload_len: usize,
    expected: Option<(usize, usize)>,
    fds: Vec<OwnedFd>,
    /// Set after a protocol violation: the stream position is lost for good.
    broken: Option<String>,
}

impl FrameReader {
    pub(crate) fn new(max_frame: usize) -> Self {
        FrameReader {
            max_frame,
            header: [0; HEADER],
            header_len: 0,
            payload: Vec::new(),
            payload_len: 0,
            expected: None,
            fds: Vec::new(),
            broken: None,
        }
    }

    /// The largest payload accepted.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Makes at most one `recvmsg` on `sock` and returns a frame once complete.
    ///
    /// A socket with nothing to read gives `Error::Io` of kind `WouldBlock`. End of stream between
    /// frames is [`Error::Closed`]; inside a frame it is [`Error::Corrupt`]. After a protocol
    /// error every later call fails the same way.
    pub(crate) fn read_once(&mut self, sock: BorrowedFd<'_>) -> Result<Step> {
        if let Some(why) = &self.broken {
            return Err(Error::Corrupt(format!("connection is broken: {why}")));
        }
        let result = self.read_inner(sock);
        let broken = match &result {
            Err(Error::Corrupt(why)) => Some(why.clone()),
            Err(Error::TooLarge { size, max }) => {
                Some(format!("peer announced a {size}-byte frame (max {max})"))
            }
            _ => None,
        };
        if broken.is_some() {
            self.broken = broken;
            scm_rights::shutdown(sock);
        }
        result
    }

    fn read_inner(&mut self, sock: BorrowedFd<'_>) -> Result<Step> {
        let (n, fds) = match self.expected {
            None => scm_rights::recv(
                sock,
                &mut self.header[self.header_len..],
                scm_rights::MAX_FDS,
            ),
            Some((len, _)) if self.payload_len < len => scm_rights::recv(
                sock,
                &mut self.payload[self.payload_len..],
                scm_rights::MAX_FDS,
            ),
            Some(_) => return self.finish(),
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => Error::Corrupt(e.to_string()),
            io::ErrorKind::ConnectionReset => Error::Closed,
            _ => Error::Io(e),
        })?;
        if n == 0 {
            return Err(if self.header_len == 0 {
                Error::Closed
            } else {
                Error::Corrupt("peer closed the connection in the middle of a frame".into())
            });
        }
        self.fds.extend(fds);
        match self.expected {
            None => {
                self.header_len += n;
                if self.header_len < HEADER {
                    return Ok(Step::More);
                }
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
                if nfds > scm_rights::MAX_FDS {
                    return Err(Error::Corrupt(format!(
                        "frame announces {nfds} file descriptors"
                    )));
                }
                self.payload = vec![0; len];
                self.expected = Some((len, nfds));
            }
            Some(_) => self.payload_len += n,
        }
        if let Some((_, nfds)) = self.expected
            && self.fds.len() > nfds
        {
            return Err(Error::Corrupt(format!(
                "frame announced {nfds} file descriptors, more arrived"
            )));
        }
        match self.expected {
            Some((len, _)) if self.payload_len == len => self.finish(),
            _ => Ok(Step::More),
        }
    }

    fn finish(&mut self) -> Result<Step> {
        let (_, nfds) = self.expected.expect("a header was read");
        if self.fds.len() != nfds {
            return Err(Error::Corrupt(format!(
                "frame announced {nfds} file descriptors, {} arrived",
                self.fds.len()
            )));
        }
        let frame = Frame {
            payload: std::mem::take(&mut self.payload),
            fds: std::mem::take(&mut self.fds),
        };
        self.expected = None;
        self.header_len = 0;
        self.payload_len = 0;
        Ok(Step::Frame(frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::IoSlice;
    use std::os::fd::AsFd;

    fn drain(reader: &mut FrameReader, sock: BorrowedFd<'_>) -> Result<Frame> {
        loop {
            if let Step::Frame(f) = reader.read_once(sock)? {
                return Ok(f);
            }
        }
    }

    #[test]
    fn frames_arrive_whole_even_when_written_byte_by_byte() {
        let (a, b) = scm_rights::socketpair().unwrap();
        let mut bytes = header(5, 0).to_vec();
        bytes.extend_from_slice(b"hello");
        bytes.extend_from_slice(&header(0, 0));
        for byte in &bytes {
            scm_rights::send(a.as_fd(), &[IoSlice::new(std::slice::from_ref(byte))], &[]).unwrap();
        }
        drop(a);
        let mut reader = FrameReader::new(16);
        assert_eq!(drain(&mut reader, b.as_fd()).unwrap().payload, b"hello");
        assert!(drain(&mut reader, b.as_fd()).unwrap().payload.is_empty());
        assert!(matches!(drain(&mut reader, b.as_fd()), Err(Error::Closed)));
    }

    #[test]
    fn oversized_announcements_and_truncation_are_errors() {
        let (a, b) = scm_rights::socketpair().unwrap();
        scm_rights::send(
            a.as_fd(),
            &[IoSlice::new(&header(u32::MAX as usize, 0))],
            &[],
        )
        .unwrap();
        let mut reader = FrameReader::new(1024);
        assert!(matches!(
            drain(&mut reader, b.as_fd()),
            Err(Error::TooLarge { .. })
        ));
        assert!(
            matches!(drain(&mut reader, b.as_fd()), Err(Error::Corrupt(_))),
            "stays broken"
        );

        let (a, b) = scm_rights::socketpair().unwrap();
        scm_rights::send(
            a.as_fd(),
            &[IoSlice::new(&header(10, 0)), IoSlice::new(b"abc")],
            &[],
        )
        .unwrap();
        drop(a);
        let mut reader = FrameReader::new(1024);
        assert!(matches!(
            drain(&mut reader, b.as_fd()),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn fds_must_match_the_header() {
        let (a, b) = scm_rights::socketpair().unwrap();
        let efd = crate::sys::eventfd::create().unwrap();
        scm_rights::send(
            a.as_fd(),
            &[IoSlice::new(&header(1, 0)), IoSlice::new(b"x")],
            &[efd.as_fd()],
        )
        .unwrap();
        let mut reader = FrameReader::new(1024);
        assert!(matches!(
            drain(&mut reader, b.as_fd()),
            Err(Error::Corrupt(_))
        ));
    }
}
