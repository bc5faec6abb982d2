//! What must happen between `fork` and `exec` of a child, and taking over inherited fds after it.
//!
//! - `prctl(PR_SET_PDEATHSIG, SIGKILL)`, then a `getppid` check for a parent that died before the
//!   `prctl`, so children of [`Process::spawn`](crate::Process::spawn) never outlive us.
//! - Clearing `FD_CLOEXEC` on exactly the fds handed to the child (`fcntl(F_SETFD)`), so nothing
//!   else leaks into it and nothing of ours leaks into programs other threads start at the same
//!   time; and setting it on every other fd that lacks it (one a C library or a `dup2` left
//!   inheritable), as CPython's spawn closes everything it does not pass.
//!
//! # References
//! - [prctl(2), `PR_SET_PDEATHSIG`](https://man7.org/linux/man-pages/man2/PR_SET_PDEATHSIG.2const.html)
//! - [fcntl(2), `F_SETFD`](https://man7.org/linux/man-pages/man2/fcntl.2.html)

use std::collections::HashSet;
use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::Mutex;

use rustix::io::FdFlags;
use rustix::process::Signal;

/// Makes the child of `cmd` receive `SIGKILL` when the thread that forks it dies, and inherit
/// the `inherit` fds (which the caller keeps open until the spawn returned).
///
/// The forking thread must live as long as the process: `PR_SET_PDEATHSIG` follows the parent
/// *thread*, not the parent process.
///
/// With `die` false the child does not get the signal (a process that must outlive its
/// parent briefly, to clean up, and watches for its death by other means); it still
/// inherits the fds.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command, inherit: Vec<RawFd>, die: bool) {
    let parent = rustix::process::getpid();
    // Found before the fork: the hook must not allocate. An fd opened between here and the
    // fork by another thread comes from Rust or tokio, which open everything close-on-exec.
    let stray = inheritable_fds(&inherit);
    let hook = move || -> io::Result<()> {
        if die {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
        }
        // The parent may have died before the prctl took effect; then we were reparented.
        if die && rustix::process::getppid() != Some(parent) {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::SRCH.raw_os_error(),
            ));
        }
        for &fd in &stray {
            // SAFETY: `fd` was open in the parent when the list was made and the child has a
            // copy of the parent's fd table; if another thread closed it since, `fcntl` fails
            // with EBADF (ignored below) and touches nothing else. No I/O is done on it.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = rustix::io::fcntl_setfd(fd, FdFlags::CLOEXEC);
        }
        inherit_in_child(&inherit)
    };
    // SAFETY: the hook runs in the forked child before `exec`. It only makes raw syscalls
    // (prctl, getppid, fcntl) through rustix, which are async-signal-safe: no allocation, no
    // locks, no access to state another thread of the parent might have held at the fork.
    unsafe { cmd.pre_exec(hook) };
}

/// The fds of this process above stderr that a child would inherit (no `FD_CLOEXEC`), except
/// `keep`.
fn inheritable_fds(keep: &[RawFd]) -> Vec<RawFd> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .filter(|&fd| fd > 2 && !keep.contains(&fd))
        .filter(|&fd| {
            // SAFETY: only the fd's flags are read; a number closed meanwhile gives EBADF.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            rustix::io::fcntl_getfd(borrowed).is_ok_and(|flags| !flags.contains(FdFlags::CLOEXEC))
        })
        .collect()
}

/// Makes `fds` survive the `exec` of the child `cmd` starts (and no other child). The command
/// keeps them open until it is dropped.
pub(crate) fn inherit_fds(cmd: &mut tokio::process::Command, fds: Vec<OwnedFd>) {
    let hook = move || {
        for fd in &fds {
            rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
        }
        Ok(())
    };
    // SAFETY: the hook runs between fork and exec and only makes async-signal-safe raw `fcntl`
    // calls (through rustix, no allocation or locking) on fds that the hook itself owns, so they
    // are open in the forked child.
    unsafe { cmd.pre_exec(hook) };
}

fn inherit_in_child(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        // SAFETY: the caller of `die_with_parent` / `inherit_fds` keeps these fds open in the
        // parent until the spawn returns, and the forked child has a copy of that fd table, so
        // each is open for the duration of this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        rustix::io::fcntl_setfd(fd, FdFlags::empty())?;
    }
    Ok(())
}

/// The fds this process has taken over from its parent, so each is owned once.
static CLAIMED: Mutex<Option<HashSet<RawFd>>> = Mutex::new(None);

/// Takes ownership of an fd number the parent said it left open for us.
///
/// Fails if that number is not an open fd or was taken before. The fd is made close-on-exec again
/// so it does not leak further into our own children.
pub(crate) fn take_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 || std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("fd {fd} handed down by the parent is not open"),
        ));
    }
    let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
    if !claimed.get_or_insert_with(HashSet::new).insert(fd) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("fd {fd} handed down by the parent was already taken"),
        ));
    }
    // SAFETY: the fd is open (checked above through /proc), it was left open by our parent for
    // this crate under the inheritance protocol, and the `CLAIMED` set guarantees that no other
    // `OwnedFd` for this number is ever created by us, so the new owner is the only one.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    rustix::io::fcntl_setfd(&owned, FdFlags::CLOEXEC)?;
    Ok(owned)
}
