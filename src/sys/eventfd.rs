//! `eventfd(2)` doorbells and their registration with tokio's reactor.
//!
//! A doorbell is shared by every process that holds the primitive. It is only ever *written*:
//! reading it in one process would make another process miss its wakeup
//! (reliability-design.md, experiments E1 and R1). tokio registers fds edge-triggered, so every
//! write produces one readiness event in every process that registered the fd.
//!
//! # References
//! - [eventfd(2)](https://man7.org/linux/man-pages/man2/eventfd.2.html)

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::event::{EventfdFlags, eventfd};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Creates a non-blocking, close-on-exec eventfd with a zero counter.
pub(crate) fn create() -> io::Result<OwnedFd> {
    Ok(eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?)
}

/// Rings the doorbell: adds 1 to the counter (`write(2)` of 8 bytes).
///
/// Never fails in a way the caller could act on: a saturated counter (2^64 − 2 rings without a
/// read, unreachable in practice) still leaves the fd readable, which is all a ring must do.
pub(crate) fn ring(fd: BorrowedFd<'_>) {
    let _ = rustix::io::write(fd, &1u64.to_ne_bytes());
}

/// Whether `fd` is an eventfd (its `/proc/self/fd` link names the eventfd anon inode), so a
/// peer cannot hand us a pipe or a socket as a doorbell.
pub(crate) fn is_eventfd(fd: impl AsRawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventfd]")
}

/// A doorbell registered with the current tokio reactor, for async waiters.
#[derive(Debug)]
pub(crate) struct AsyncDoorbell {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncDoorbell {
    /// Registers (a duplicate of) `fd` for readability with the current runtime's reactor.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn register(fd: BorrowedFd<'_>) -> io::Result<Self> {
        let fd = super::reactor::register(super::dup(fd)?, Interest::READABLE)?;
        Ok(AsyncDoorbell { fd })
    }

    /// Waits for a ring that happened after the previous call returned, then consumes the
    /// readiness (never the counter).
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: dropping the future consumes nothing.
    pub(crate) async fn rung(&self) -> io::Result<()> {
        let mut guard = self.fd.readable().await?;
        guard.clear_ready();
        Ok(())
    }
}

impl AsFd for AsyncDoorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.get_ref().as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn every_registration_hears_a_ring_and_the_counter_is_never_read() {
        let fd = create().unwrap();
        let (a, b) = (
            AsyncDoorbell::register(fd.as_fd()).unwrap(),
            AsyncDoorbell::register(fd.as_fd()).unwrap(),
        );
        let ringer = std::thread::spawn({
            let fd = crate::sys::dup(&fd).unwrap();
            move || {
                std::thread::sleep(Duration::from_millis(20));
                ring(fd.as_fd());
            }
        });
        tokio::time::timeout(Duration::from_secs(30), async {
            a.rung().await.unwrap();
            b.rung().await.unwrap();
        })
        .await
        .expect("both registrations woke");
        ringer.join().unwrap();
        // Nobody drained it: the counter still holds the ring.
        let mut buf = [0u8; 8];
        assert_eq!(rustix::io::read(&fd, &mut buf).unwrap(), 8);
        assert_eq!(u64::from_ne_bytes(buf), 1);
    }
}
