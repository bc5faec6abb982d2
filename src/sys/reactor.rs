//! Registering an fd with the current tokio reactor (`epoll_ctl` through mio).
//!
//! `AsyncFd::new` is deprecated as unsound (tokio PR #8587): registration promises that the fd
//! stays open and means the same file for as long as the `AsyncFd` lives. Every registration of
//! the crate goes through [`register`], which takes the fd by value so nobody else can close it.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Registers `fd` with the current runtime's reactor for `interest`.
///
/// # Panics
///
/// Outside a tokio runtime.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` takes ownership of `fd`, a valid open fd; as its sole owner it keeps
    // it open and unchanged until the `AsyncFd` is dropped or `into_inner` is called.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}
