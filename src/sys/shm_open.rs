//! Named segments: `shm_open(3)` / `shm_unlink(3)` under `/dev/shm`.
//!
//! Created `O_EXCL` with mode 0600; opened only if owned by us and not readable or writable by
//! anyone else. tmpfs files from `shm_open` cannot be sealed, which is why anonymous memfd segments
//! are the default and names are opt-in.
//!
//! # References
//! - [shm_open(3)](https://man7.org/linux/man-pages/man3/shm_open.3.html)

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::Mode;
use rustix::shm::OFlags;

/// Creates `/dev/shm/<name>` exclusively, mode 0600, sized and allocated to `size` bytes.
///
/// On failure after creation the name is unlinked again.
pub(crate) fn create_exclusive(name: &str, size: u64) -> io::Result<OwnedFd> {
    let path = format!("/{name}");
    let fd = rustix::shm::open(
        path.as_str(),
        OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
        Mode::RUSR | Mode::WUSR,
    )?;
    let sized = rustix::fs::ftruncate(&fd, size)
        .map_err(io::Error::from)
        .and_then(|()| super::memfd::allocate(&fd, size));
    if let Err(e) = sized {
        let _ = unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// Opens an existing `/dev/shm/<name>` read-write, after checking who owns it.
pub(crate) fn open(name: &str) -> io::Result<OwnedFd> {
    let path = format!("/{name}");
    let fd = rustix::shm::open(path.as_str(), OFlags::RDWR, Mode::empty())?;
    check_private(&fd)?;
    Ok(fd)
}

/// Whether `/dev/shm/<name>` is the file behind `fd` (whatever its mode).
pub(crate) fn names(name: &str, fd: impl AsFd) -> bool {
    let path = format!("/{name}");
    rustix::shm::open(path.as_str(), OFlags::RDONLY, Mode::empty())
        .ok()
        .and_then(|current| super::same_file(&current, fd).ok())
        .unwrap_or(false)
}

/// The inode of the file `/dev/shm/<name>` now (`stat`).
pub(crate) fn inode(name: &str) -> io::Result<u64> {
    Ok(rustix::fs::stat(format!("/dev/shm/{name}").as_str())?.st_ino)
}

/// The inode of the file behind `fd` (`fstat`).
pub(crate) fn inode_of(fd: impl AsFd) -> io::Result<u64> {
    Ok(rustix::fs::fstat(fd)?.st_ino)
}

/// `shm_unlink(3)`: removes the name; mappings and fds stay valid.
pub(crate) fn unlink(name: &str) -> io::Result<()> {
    let path = format!("/{name}");
    Ok(rustix::shm::unlink(path.as_str())?)
}

/// Rejects a segment owned by another user or open to group/others.
fn check_private(fd: impl AsFd) -> io::Result<()> {
    let st = rustix::fs::fstat(fd)?;
    if st.st_uid != rustix::process::geteuid().as_raw() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "segment is owned by another user",
        ));
    }
    if st.st_mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "segment is accessible to other users (mode is not 0600)",
        ));
    }
    Ok(())
}
