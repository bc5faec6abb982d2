//! Anonymous sealed segments: `memfd_create(2)`, `fallocate(2)` and file seals.
//!
//! A segment is allocated up front (out of memory is an error now, never a `SIGBUS` later) and
//! sealed against shrinking and growing, so a peer that holds the fd cannot pull pages out from
//! under our mapping (reliability-design.md, experiment E5).
//!
//! # References
//! - [memfd_create(2)](https://man7.org/linux/man-pages/man2/memfd_create.2.html)
//! - [fcntl(2), "File Sealing"](https://man7.org/linux/man-pages/man2/fcntl.2.html)
//! - [fallocate(2)](https://man7.org/linux/man-pages/man2/fallocate.2.html)

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};

/// The seals every segment of ours carries.
pub(crate) const SEALS: SealFlags = SealFlags::SHRINK
    .union(SealFlags::GROW)
    .union(SealFlags::SEAL);

/// Creates a memfd of exactly `size` bytes, backed by allocated pages, sealed with [`SEALS`].
pub(crate) fn create_sealed(name: &str, size: u64) -> io::Result<OwnedFd> {
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // `MFD_NOEXEC_SEAL` (Linux 6.3) keeps the segment from ever being executed; older kernels
    // reject the flag, so fall back to plain sealing there.
    let fd = match rustix::fs::memfd_create(name, base | MemfdFlags::NOEXEC_SEAL) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create(name, base)?,
        Err(e) => return Err(e.into()),
    };
    rustix::fs::ftruncate(&fd, size)?;
    allocate(&fd, size)?;
    rustix::fs::fcntl_add_seals(&fd, SEALS)?;
    Ok(fd)
}

/// Reserves the pages of `[0, size)` now (`fallocate`), so running out of memory shows here.
pub(crate) fn allocate(fd: impl AsFd, size: u64) -> io::Result<()> {
    if size == 0 {
        return Ok(());
    }
    match rustix::fs::fallocate(fd, FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(()),
        // A file system without fallocate: the size is set, pages come on first touch.
        Err(rustix::io::Errno::OPNOTSUPP) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The seals on `fd` (`F_GET_SEALS`); empty for files that cannot be sealed.
pub(crate) fn seals(fd: impl AsFd) -> io::Result<SealFlags> {
    match rustix::fs::fcntl_get_seals(fd) {
        Ok(s) => Ok(s),
        Err(rustix::io::Errno::INVAL) => Ok(SealFlags::empty()),
        Err(e) => Err(e.into()),
    }
}

/// Whether `fd` carries every seal in [`SEALS`].
pub(crate) fn is_sealed(fd: impl AsFd) -> io::Result<bool> {
    Ok(seals(fd)?.contains(SEALS))
}

/// A memfd without seals, for tests that play a careless peer.
#[cfg(test)]
pub(crate) fn create_unsealed(size: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create("unsealed", MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&fd, size)?;
    Ok(fd)
}

#[cfg(test)]
/// `ftruncate(2)`, exposed so tests can play a hostile peer against a sealed segment.
pub(crate) fn truncate(fd: impl AsFd, size: u64) -> io::Result<()> {
    Ok(rustix::fs::ftruncate(fd, size)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_segment_refuses_resizing() {
        let fd = create_sealed("test", 4096).unwrap();
        assert!(is_sealed(&fd).unwrap());
        assert_eq!(super::super::file_size(&fd).unwrap(), 4096);
        assert!(truncate(&fd, 0).is_err());
        assert!(truncate(&fd, 8192).is_err());
    }
}
