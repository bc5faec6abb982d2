//! A connection's socket, registered with the reactor only while someone waits on it.
//!
//! An epoll registration costs even when nobody waits: every frame the peer sends (for
//! readability) or reads (for room to write) makes the kernel wake the thread parked in
//! `epoll_wait`, whether a task waits or not — a wake-up of the reactor thread per message,
//! a third of a small message's cost. So the socket itself is not registered: a receiver that
//! finds nothing to read registers a duplicate of it while it parks (and keeps it while it keeps
//! parking), a sender that finds no room does the same for writability, and a task that waits
//! for input alongside other things asks for a lasting registration ([`Socket::readiness`]).

use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, OnceLock};

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::sys::reactor;

#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    lasting: OnceLock<Arc<AsyncFd<OwnedFd>>>,
}

impl Socket {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Socket {
            fd,
            lasting: OnceLock::new(),
        }
    }

    /// The socket itself, for reads and writes that never wait.
    pub(crate) fn get_ref(&self) -> &OwnedFd {
        &self.fd
    }

    /// A registration of a duplicate of the socket for `interest`, with the current runtime's
    /// reactor. It reports the socket's state at once, so nothing that happened before it was
    /// made is missed; dropping it deregisters.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn register(&self, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
        reactor::register(crate::sys::dup(&self.fd)?, interest)
    }

    /// A registration for readability that lasts as long as the socket, for a task that waits
    /// for input alongside other things (while it exists, every frame received wakes the
    /// reactor thread).
    pub(crate) fn readiness(&self) -> io::Result<Arc<AsyncFd<OwnedFd>>> {
        if let Some(lasting) = self.lasting.get() {
            return Ok(lasting.clone());
        }
        let registered = Arc::new(self.register(Interest::READABLE)?);
        Ok(self.lasting.get_or_init(|| registered).clone())
    }
}
