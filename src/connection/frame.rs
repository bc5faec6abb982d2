//! The frame format and the incremental frame reader.
//!
//! ```text
//! frame  = header payload
//! header = payload length (u32 LE) | number of fds (u32 LE)   -- the fds ride on the header bytes
//! ```
//!
//! Every length and count read from the socket is checked against local limits *before* anything
//! is allocated; a frame whose fds do not match its header is refused.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};

use crate::sys::scm_rights;
use crate::{Error, Result};

/// Bytes of a frame header.
pub(crate) const HEADER: usize = 8;

/// Default largest payload: 64 MiB.
pub(crate) const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// The largest `max_frame` a connection can have: our header's length is 32 bits (CPython's
/// framing could announce more, but both ends must agree on one limit).
pub(crate) const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

/// Refuses a `max_frame` setting the framing cannot honour, rather than lowering it silently.
pub(crate) fn check_max_frame(max: usize) -> Result<()> {
    if max > MAX_FRAME_LIMIT {
        return Err(Error::InvalidArgument(format!(
            "max_frame of {max} bytes is over the 4 GiB - 1 ({MAX_FRAME_LIMIT} bytes) a frame can carry"
        )));
    }
    Ok(())
}

/// A received frame: its payload and the fds that came with it.
#[derive(Debug)]
pub(crate) struct Frame {
    pub(crate) payload: Vec<u8>,
    pub(crate) fds: Vec<OwnedFd>,
}

/// How frames are laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// Ours: payload length (u32 LE) and fd count (u32 LE), fds riding on the header.
    Native,
    /// CPython's `multiprocessing.connection`: payload length as a big-endian signed 32-bit
    /// integer, or -1 followed by a big-endian u64 for payloads over 2 GiB − 1. No fds.
    Python,
}

/// An encoded frame header (at most 12 bytes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Header {
    bytes: [u8; 12],
    len: usize,
}

impl Header {
    pub(crate) fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Framing {
    /// The header announcing `len` payload bytes and `nfds` fds.
    pub(crate) fn header(self, len: usize, nfds: usize) -> Header {
        let mut bytes = [0u8; 12];
        let n = match self {
            Framing::Native => {
                bytes[..8].copy_from_slice(&header(len, nfds));
                8
            }
            Framing::Python if len <= i32::MAX as usize => {
                bytes[..4].copy_from_slice(&(len as i32).to_be_bytes());
                4
            }
            Framing::Python => {
                bytes[..4].copy_from_slice(&(-1i32).to_be_bytes());
                bytes[4..].copy_from_slice(&(len as u64).to_be_bytes());
                12
            }
        };
        Header { bytes, len: n }
    }

    /// Parses a header at the start of `buf`: `Ok(None)` if more bytes are needed, else the
    /// header's size, the payload length and the fd count.
    fn parse(self, buf: &[u8]) -> Result<Option<(usize, u64, usize)>> {
        match self {
            Framing::Native => {
                if buf.len() < HEADER {
                    return Ok(None);
                }
                let len = u32::from_le_bytes(buf[..4].try_into().expect("4 bytes"));
                let nfds = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
                Ok(Some((HEADER, u64::from(len), nfds as usize)))
            }
            Framing::Python => {
                if buf.len() < 4 {
                    return Ok(None);
                }
                match i32::from_be_bytes(buf[..4].try_into().expect("4 bytes")) {
                    -1 if buf.len() < 12 => Ok(None),
                    -1 => Ok(Some((
                        12,
                        u64::from_be_bytes(buf[4..12].try_into().expect("8 bytes")),
                        0,
                    ))),
                    n if n < 0 => Err(Error::Corrupt(format!("frame header announces {n} bytes"))),
                    n => Ok(Some((4, n as u64, 0))),
                }
            }
        }
    }
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

/// Input buffer size: many small frames arrive with one `recvmsg`.
const BUFFER: usize = 64 * 1024;

/// A frame whose header was parsed and whose payload is still arriving.
#[derive(Debug)]
struct Partial {
    /// The bytes received so far (its length), in memory grown as they arrive: a peer that
    /// announces a huge frame and sends nothing costs nothing.
    payload: Vec<u8>,
    /// The payload length the header announced.
    len: usize,
    fds: Vec<OwnedFd>,
}

impl Partial {
    fn missing(&self) -> usize {
        self.len - self.payload.len()
    }

    /// Room for the next direct read: the buffer grows by what it holds already (at least
    /// `BUFFER`), never past the announced length, so memory stays within twice what arrived.
    fn room(&mut self) -> &mut [u8] {
        let filled = self.payload.len();
        let grow = filled.max(BUFFER).min(self.missing());
        self.payload.resize(filled + grow, 0);
        &mut self.payload[filled..]
    }
}

/// Reassembles frames from a stream. Reads go into a buffer (many small frames per system
/// call) or, for the rest of a large payload, straight into the payload. Partial input survives
/// between calls, so a cancelled receive loses nothing.
///
/// File descriptors arrive with the bytes of the `sendmsg` that carried them, which begins with
/// the header announcing them; the kernel never lets one read span two fd-carrying messages. So
/// fds are queued as they arrive and handed to the next header that announces fds; a header
/// whose fds are not there, or fds nobody announced piling up, break the connection.
#[derive(Debug)]
pub(crate) struct FrameReader {
    max_frame: usize,
    framing: Framing,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    partial: Option<Partial>,
    fds: VecDeque<OwnedFd>,
    /// Set after a protocol violation: the stream position is lost for good.
    broken: Option<String>,
}

impl FrameReader {
    pub(crate) fn new(max_frame: usize) -> Self {
        Self::with_framing(max_frame, Framing::Native)
    }

    pub(crate) fn with_framing(max_frame: usize, framing: Framing) -> Self {
        FrameReader {
            max_frame,
            framing,
            buf: vec![0; BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
            partial: None,
            fds: VecDeque::new(),
            broken: None,
        }
    }

    /// The largest payload accepted.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Changes the largest payload accepted from the next frame header on.
    pub(crate) fn set_max_frame(&mut self, max: usize) {
        self.max_frame = max;
    }

    /// Everything received but not returned yet, as the bytes a fresh reader would read (`first`,
    /// a frame already parsed, and a frame in progress re-encoded with their headers) and the
    /// fds that came with them, in order: what a connection carries along when it is sent to
    /// another process.
    pub(crate) fn unread_input<'a>(
        &'a self,
        first: Option<&'a Frame>,
    ) -> (Vec<u8>, Vec<BorrowedFd<'a>>) {
        use std::os::fd::AsFd;
        let mut bytes = Vec::new();
        let mut fds = Vec::new();
        if let Some(frame) = first {
            bytes.extend_from_slice(
                self.framing
                    .header(frame.payload.len(), frame.fds.len())
                    .as_slice(),
            );
            bytes.extend_from_slice(&frame.payload);
            fds.extend(frame.fds.iter().map(AsFd::as_fd));
        }
        if let Some(partial) = &self.partial {
            bytes.extend_from_slice(
                self.framing
                    .header(partial.len, partial.fds.len())
                    .as_slice(),
            );
            bytes.extend_from_slice(&partial.payload);
            fds.extend(partial.fds.iter().map(AsFd::as_fd));
        }
        bytes.extend_from_slice(&self.buf[self.start..self.end]);
        fds.extend(self.fds.iter().map(AsFd::as_fd));
        (bytes, fds)
    }

    /// Starts a reader on input another process had received but not returned (see
    /// [`unread_input`](Self::unread_input)). Parsed as if it had just arrived, so it is
    /// checked like anything read from the socket.
    pub(crate) fn prefill(&mut self, bytes: &[u8], fds: Vec<OwnedFd>) -> Result<()> {
        if fds.len() > scm_rights::MAX_FDS
            || bytes.len() > self.max_frame.saturating_add(2 * BUFFER)
        {
            return Err(Error::Corrupt(
                "a connection arrived with more unread input than it can hold".into(),
            ));
        }
        if bytes.len() > self.buf.len() {
            self.buf = vec![0; bytes.len()].into_boxed_slice();
        }
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.start = 0;
        self.end = bytes.len();
        self.fds.extend(fds);
        Ok(())
    }

    /// Whether input that was read but not returned is waiting.
    pub(crate) fn has_buffered(&self) -> bool {
        self.start < self.end || self.partial.is_some()
    }

    /// A frame already complete in the buffer, without a system call.
    pub(crate) fn buffered(&mut self) -> Result<Option<Frame>> {
        if let Some(why) = &self.broken {
            return Err(Error::Corrupt(format!("connection is broken: {why}")));
        }
        let result = self.parse();
        self.note_broken(&result, None);
        result
    }

    /// Returns a buffered frame, or makes one `recvmsg` on `sock` and returns a frame if that
    /// completed one.
    ///
    /// A socket with nothing to read gives `Error::Io` of kind `WouldBlock`. End of stream between
    /// frames is [`Error::Closed`]; inside a frame it is [`Error::Corrupt`]. After a protocol
    /// error every later call fails the same way, and the socket is shut down.
    pub(crate) fn read_once(&mut self, sock: BorrowedFd<'_>) -> Result<Step> {
        if let Some(why) = &self.broken {
            return Err(Error::Corrupt(format!("connection is broken: {why}")));
        }
        let result = match self.parse() {
            Ok(Some(frame)) => Ok(Step::Frame(frame)),
            Ok(None) => self.read_more(sock),
            Err(e) => Err(e),
        };
        self.note_broken(&result, Some(sock));
        result
    }

    fn note_broken<T>(&mut self, result: &Result<T>, sock: Option<BorrowedFd<'_>>) {
        let why = match result {
            Err(Error::Corrupt(why)) => why.clone(),
            Err(Error::TooLarge { size, max }) => {
                format!("peer announced a {size}-byte frame (max {max})")
            }
            _ => return,
        };
        self.broken = Some(why);
        self.partial = None;
        self.fds.clear();
        if let Some(sock) = sock {
            scm_rights::shutdown(sock);
        }
    }

    /// Makes progress on buffered input; `Some` once a frame is complete.
    fn parse(&mut self) -> Result<Option<Frame>> {
        loop {
            if let Some(partial) = &mut self.partial {
                let take = partial.missing().min(self.end - self.start);
                partial
                    .payload
                    .extend_from_slice(&self.buf[self.start..self.start + take]);
                self.start += take;
                if partial.missing() > 0 {
                    return Ok(None);
                }
                let done = self.partial.take().expect("checked above");
                return Ok(Some(Frame {
                    payload: done.payload,
                    fds: done.fds,
                }));
            }
            let Some((header_len, len, nfds)) =
                self.framing.parse(&self.buf[self.start..self.end])?
            else {
                return Ok(None);
            };
            if len > self.max_frame as u64 {
                return Err(Error::TooLarge {
                    size: usize::try_from(len).unwrap_or(usize::MAX),
                    max: self.max_frame,
                });
            }
            let len = len as usize;
            if nfds > self.fds.len() {
                return Err(Error::Corrupt(format!(
                    "frame announced {nfds} file descriptors, {} arrived",
                    self.fds.len()
                )));
            }
            self.start += header_len;
            self.partial = Some(Partial {
                payload: Vec::with_capacity(len.min(BUFFER)),
                len,
                fds: self.fds.drain(..nfds).collect(),
            });
        }
    }

    fn read_more(&mut self, sock: BorrowedFd<'_>) -> Result<Step> {
        // The rest of a large payload goes straight into it; everything else into the buffer.
        let direct = self
            .partial
            .as_ref()
            .is_some_and(|p| self.start == self.end && p.missing() >= BUFFER / 2);
        if !direct && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let mut filled_before = 0;
        let target: &mut [u8] = match &mut self.partial {
            Some(p) if direct => {
                filled_before = p.payload.len();
                p.room()
            }
            _ => &mut self.buf[self.end..],
        };
        let received =
            scm_rights::recv(sock, target, scm_rights::MAX_FDS).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => Error::Corrupt(e.to_string()),
                io::ErrorKind::ConnectionReset => Error::Closed,
                _ => Error::Io(e),
            });
        if direct {
            // Keep only what arrived: the rest of the room was zeros.
            let p = self
                .partial
                .as_mut()
                .expect("direct reads have a partial frame");
            p.payload
                .truncate(filled_before + received.as_ref().map_or(0, |(n, _)| *n));
        }
        let (n, fds) = received?;
        if n == 0 {
            return Err(if self.has_buffered() {
                Error::Corrupt("peer closed the connection in the middle of a frame".into())
            } else {
                Error::Closed
            });
        }
        self.fds.extend(fds);
        if self.fds.len() > scm_rights::MAX_FDS {
            return Err(Error::Corrupt(
                "file descriptors arrived that no frame announced".into(),
            ));
        }
        if !direct {
            self.end += n;
        }
        Ok(match self.parse()? {
            Some(frame) => Step::Frame(frame),
            None => Step::More,
        })
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

    /// Regression: a payload was allocated at its announced size, so a peer (or a forged
    /// handle lifting `max_frame`) that announced 2^46 bytes aborted us, and 2^64 − 2 panicked
    /// with "capacity overflow". Memory now grows with what arrives.
    #[test]
    fn a_huge_announcement_costs_nothing_until_bytes_arrive() {
        for announced in [1u64 << 46, u64::MAX - 1] {
            let (a, b) = scm_rights::socketpair().unwrap();
            let mut python_header = (-1i32).to_be_bytes().to_vec();
            python_header.extend_from_slice(&announced.to_be_bytes());
            scm_rights::send(
                a.as_fd(),
                &[IoSlice::new(&python_header), IoSlice::new(b"a few bytes")],
                &[],
            )
            .unwrap();
            drop(a);
            let mut reader = FrameReader::with_framing(usize::MAX, Framing::Python);
            assert!(matches!(
                drain(&mut reader, b.as_fd()),
                Err(Error::Corrupt(_))
            ));
        }
    }

    /// A large frame still arrives whole when its bytes come in many reads.
    #[test]
    fn a_large_frame_grows_into_place() {
        let (a, b) = scm_rights::socketpair().unwrap();
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let payload = payload.clone();
            std::thread::spawn(move || {
                let mut bytes = header(payload.len(), 0).to_vec();
                bytes.extend_from_slice(&payload);
                for chunk in bytes.chunks(100_000) {
                    scm_rights::send(a.as_fd(), &[IoSlice::new(chunk)], &[]).unwrap();
                }
            })
        };
        let mut reader = FrameReader::new(8 << 20);
        let got = loop {
            match reader.read_once(b.as_fd()) {
                Ok(Step::Frame(f)) => break f,
                Ok(Step::More) => {}
                Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        };
        writer.join().unwrap();
        assert!(got.payload == payload);
    }

    #[test]
    fn fds_go_to_the_frames_that_announce_them() {
        // Announced but missing.
        let (a, b) = scm_rights::socketpair().unwrap();
        scm_rights::send(
            a.as_fd(),
            &[IoSlice::new(&header(1, 2)), IoSlice::new(b"x")],
            &[],
        )
        .unwrap();
        let mut reader = FrameReader::new(1024);
        assert!(matches!(
            drain(&mut reader, b.as_fd()),
            Err(Error::Corrupt(_))
        ));
        // Several frames, some with fds, read together: each gets its own.
        let (a, b) = scm_rights::socketpair().unwrap();
        let e1 = crate::sys::eventfd::create().unwrap();
        let e2 = crate::sys::eventfd::create().unwrap();
        let send = |h: [u8; HEADER], p: &[u8], fds: &[BorrowedFd<'_>]| {
            scm_rights::send(a.as_fd(), &[IoSlice::new(&h), IoSlice::new(p)], fds).unwrap();
        };
        send(header(1, 0), b"a", &[]);
        send(header(1, 2), b"b", &[e1.as_fd(), e2.as_fd()]);
        send(header(1, 0), b"c", &[]);
        send(header(1, 1), b"d", &[e1.as_fd()]);
        let mut reader = FrameReader::new(1024);
        let counts: Vec<usize> = (0..4)
            .map(|_| drain(&mut reader, b.as_fd()).unwrap().fds.len())
            .collect();
        assert_eq!(counts, [0, 2, 0, 1]);
    }
}
