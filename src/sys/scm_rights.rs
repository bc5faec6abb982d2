//! Unix sockets that carry file descriptors: `socketpair(2)`, `sendmsg(2)` / `recvmsg(2)` with
//! `SCM_RIGHTS`.
//!
//! Received fds are installed close-on-exec (`MSG_CMSG_CLOEXEC`), and a control buffer that was
//! too small (`MSG_CTRUNC`) is an error rather than a silent loss of handles.
//!
//! # References
//! - [unix(7), "Ancillary messages"](https://man7.org/linux/man-pages/man7/unix.7.html)
//! - [cmsg(3)](https://man7.org/linux/man-pages/man3/cmsg.3.html)

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

/// The kernel's limit on fds in one message (`SCM_MAX_FD`).
pub(crate) const MAX_FDS: usize = 253;

/// Control-message space for `MAX_FDS` fds.
const CONTROL_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS));

/// A connected pair of close-on-exec, blocking `AF_UNIX` stream sockets.
pub(crate) fn socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

/// Frames up to this size are joined into one buffer and sent with `send`.
const SMALL_FRAME: usize = 512;

/// Sends `bufs` with `fds` attached to the first byte; returns the bytes written (maybe fewer).
///
/// `MSG_NOSIGNAL`: a closed peer is an `EPIPE` error, never a `SIGPIPE` that kills us.
pub(crate) fn send(
    sock: BorrowedFd<'_>,
    bufs: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
) -> io::Result<usize> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} file descriptors in one message (at most {MAX_FDS})",
                fds.len()
            ),
        ));
    }
    if fds.is_empty() {
        // The common case: no control message. A small frame (header and payload) goes as one
        // buffer through `send`, which spares the kernel copying in a message header and an
        // I/O vector (a tenth of a small `sendmsg`'s cost).
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if let [only] = bufs {
            return Ok(rustix::net::send(sock, only, SendFlags::NOSIGNAL)?);
        }
        if total <= SMALL_FRAME {
            let mut joined = [0u8; SMALL_FRAME];
            let mut len = 0;
            for buf in bufs {
                joined[len..len + buf.len()].copy_from_slice(buf);
                len += buf.len();
            }
            return Ok(rustix::net::send(
                sock,
                &joined[..len],
                SendFlags::NOSIGNAL,
            )?);
        }
        let mut none = SendAncillaryBuffer::default();
        return Ok(rustix::net::sendmsg(
            sock,
            bufs,
            &mut none,
            SendFlags::NOSIGNAL,
        )?);
    }
    let mut space = vec![MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(io::Error::other("control buffer too small for the fds"));
    }
    Ok(rustix::net::sendmsg(
        sock,
        bufs,
        &mut control,
        SendFlags::NOSIGNAL,
    )?)
}

/// Receives into `buf` and collects up to `max_fds` fds attached to the bytes read.
///
/// Returns `(0, [])` at end of stream. More fds than `max_fds` (`MSG_CTRUNC`) is an error; the fds
/// that did arrive are closed.
pub(crate) fn recv(
    sock: BorrowedFd<'_>,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let max_fds = max_fds.min(MAX_FDS);
    // On the stack: this runs for every read of every connection.
    let mut space = [MaybeUninit::<u8>::uninit(); CONTROL_SPACE];
    let len = rustix::cmsg_space!(ScmRights(max_fds.max(1))).min(CONTROL_SPACE);
    let mut control = RecvAncillaryBuffer::new(&mut space[..len]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    // cmsg padding can leave room for more fds than asked for, so count them ourselves too.
    if msg.flags.contains(ReturnFlags::CTRUNC) || fds.len() > max_fds {
        drop(fds);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("peer sent more file descriptors than the {max_fds} expected"),
        ));
    }
    Ok((msg.bytes, fds))
}

/// Writes all of `data` on a blocking socket, with `fds` attached to the first byte.
pub(crate) fn send_all_blocking(sock: impl AsFd, data: &[u8], fds: &[OwnedFd]) -> io::Result<()> {
    let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
    let mut sent = 0;
    while sent < data.len() {
        let attach = if sent == 0 { &borrowed[..] } else { &[] };
        match send(sock.as_fd(), &[IoSlice::new(&data[sent..])], attach) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Puts a socket into non-blocking mode (for registration with tokio).
pub(crate) fn set_nonblocking(sock: impl AsFd, nonblocking: bool) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(&sock)?;
    let flags = if nonblocking {
        flags | rustix::fs::OFlags::NONBLOCK
    } else {
        flags - rustix::fs::OFlags::NONBLOCK
    };
    Ok(rustix::fs::fcntl_setfl(sock, flags)?)
}

/// The credentials (pid, uid, gid) of the process at the other end (`SO_PEERCRED`).
pub(crate) fn peer_credentials(sock: impl AsFd) -> io::Result<(u32, u32, u32)> {
    let cred = rustix::net::sockopt::socket_peercred(sock)?;
    Ok((
        cred.pid.as_raw_nonzero().get() as u32,
        cred.uid.as_raw(),
        cred.gid.as_raw(),
    ))
}

/// What kind of socket an fd is, for fds that arrive from other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SocketKind {
    /// `AF_UNIX`, `SOCK_STREAM`: can carry fds.
    UnixStream,
    /// `AF_INET` / `AF_INET6`, `SOCK_STREAM`.
    TcpStream,
}

/// Classifies `fd` (`getsockopt(SO_DOMAIN, SO_TYPE)`); `None` for anything else (a pipe, a
/// file, a datagram socket).
pub(crate) fn socket_kind(fd: impl AsFd) -> Option<SocketKind> {
    let ty = rustix::net::sockopt::socket_type(&fd).ok()?;
    if ty != SocketType::STREAM {
        return None;
    }
    match rustix::net::sockopt::socket_domain(&fd).ok()? {
        AddressFamily::UNIX => Some(SocketKind::UnixStream),
        AddressFamily::INET | AddressFamily::INET6 => Some(SocketKind::TcpStream),
        _ => None,
    }
}

/// `shutdown(SHUT_RDWR)`: every holder of the socket, in every process, sees it closed.
pub(crate) fn shutdown(sock: impl AsFd) {
    let _ = rustix::net::shutdown(sock, rustix::net::Shutdown::Both);
}

/// Waits until `sock` is readable (`for_write == false`) or writable, at most `timeout`
/// (`poll(2)`); returns whether it became ready. For blocking callers only.
pub(crate) fn wait_ready(
    sock: impl AsFd,
    for_write: bool,
    timeout: Option<std::time::Duration>,
) -> io::Result<bool> {
    use rustix::event::{PollFd, PollFlags, Timespec};
    let flags = if for_write {
        PollFlags::OUT
    } else {
        PollFlags::IN
    };
    let ts = timeout.map(|d| Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    let mut fds = [PollFd::new(&sock, flags)];
    loop {
        match rustix::event::poll(&mut fds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a byte (or the end of stream) is waiting on `sock`, without consuming it
/// (`recv(MSG_PEEK | MSG_DONTWAIT)`).
pub(crate) fn has_input(sock: impl AsFd) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    match rustix::net::recv(sock, &mut byte, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
        Ok(_) => Ok(true),
        Err(rustix::io::Errno::AGAIN) => Ok(false),
        Err(rustix::io::Errno::CONNRESET) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_travel_and_truncation_is_reported() {
        let (a, b) = socketpair().unwrap();
        let e1 = super::super::eventfd::create().unwrap();
        let e2 = super::super::eventfd::create().unwrap();
        let n = send(a.as_fd(), &[IoSlice::new(b"hi")], &[e1.as_fd(), e2.as_fd()]).unwrap();
        assert_eq!(n, 2);
        let mut buf = [0u8; 8];
        let (n, fds) = recv(b.as_fd(), &mut buf, 4).unwrap();
        assert_eq!((&buf[..n], fds.len()), (&b"hi"[..], 2));

        send(a.as_fd(), &[IoSlice::new(b"x")], &[e1.as_fd(), e2.as_fd()]).unwrap();
        let err = recv(b.as_fd(), &mut buf, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
