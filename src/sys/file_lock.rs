//! `flock(2)` on a lock file beside a Unix socket path, so a listener can tell "a live listener
//! of ours holds this path" without connecting to it (a probe connection would reach that
//! listener's `accept`).
//!
//! # References
//! - [flock(2)](https://man7.org/linux/man-pages/man2/flock.2.html)

use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FlockOperation, flock};

/// Opens (creating, mode 0600) `path` and takes an exclusive `flock` on it without waiting.
/// `None` when another open file description holds it: a live process owns the path. The lock
/// lasts as long as the returned file is open, and ends with the process however it dies.
pub(crate) fn try_lock(path: &Path) -> io::Result<Option<File>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::CLOEXEC.bits() as i32)
        .open(path)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(file)),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}
