//! Process liveness and exit: `pidfd_open(2)`, `pidfd_send_signal(2)`, `waitid(P_PIDFD)`.
//!
//! A pidfd names one process for good (no PID-reuse races) and turns readable when it exits, even
//! while it is an unreaped zombie (reliability-design.md, experiment E4), so tokio can await it.
//!
//! # References
//! - [pidfd_open(2)](https://man7.org/linux/man-pages/man2/pidfd_open.2.html)
//! - [pidfd_send_signal(2)](https://man7.org/linux/man-pages/man2/pidfd_send_signal.2.html)
//! - [waitid(2)](https://man7.org/linux/man-pages/man2/waitid.2.html)

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use rustix::process::{Pid, PidfdFlags, Signal, WaitId, WaitIdOptions};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// How a child ended, as `waitid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// `exit(code)` or return from `main`.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// `pidfd_open(pid, 0)`: a close-on-exec fd for process `pid`.
pub(crate) fn open(pid: u32) -> io::Result<OwnedFd> {
    let pid = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "invalid pid"))?;
    Ok(rustix::process::pidfd_open(pid, PidfdFlags::empty())?)
}

/// `pidfd_send_signal(SIGTERM or SIGKILL)`; a process that already exited is not an error.
pub(crate) fn signal(pidfd: impl AsFd, kill: bool) -> io::Result<()> {
    let sig = if kill { Signal::KILL } else { Signal::TERM };
    match rustix::process::pidfd_send_signal(pidfd, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether the process has exited (its pidfd is readable), without waiting (`poll`, zero timeout).
pub(crate) fn has_exited(pidfd: impl AsFd) -> io::Result<bool> {
    let mut fds = [rustix::event::PollFd::new(
        &pidfd,
        rustix::event::PollFlags::IN,
    )];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let n = rustix::event::poll(&mut fds, Some(&zero))?;
    Ok(n > 0)
}

/// Whether process `pid` has ended: exited (a zombie counts) or gone. A `pidfd_open` and a
/// zero-timeout `poll` (a few µs), instead of reading `/proc/<pid>/stat` (tens of µs): for
/// checks made while holding a lock others wait for. Falls back to `/proc` when no fd can be
/// opened (out of fds).
pub(crate) fn has_ended(pid: u32) -> bool {
    match open(pid) {
        Ok(pidfd) => has_exited(&pidfd).unwrap_or(false),
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::SRCH.raw_os_error()) => true,
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => true,
        Err(_) => start_time(pid).is_none_or(|(_, zombie)| zombie),
    }
}

/// Reaps our child behind `pidfd` if it has exited (`waitid(P_PIDFD, WEXITED | WNOHANG)`).
///
/// `Ok(None)` while it still runs.
pub(crate) fn try_reap(pidfd: impl AsFd) -> io::Result<Option<Exit>> {
    let status = rustix::process::waitid(
        WaitId::PidFd(pidfd.as_fd()),
        WaitIdOptions::EXITED | WaitIdOptions::NOHANG,
    )?;
    Ok(status.and_then(|s| {
        if let Some(code) = s.exit_status() {
            Some(Exit::Code(code))
        } else {
            s.terminating_signal().map(Exit::Signal)
        }
    }))
}

/// A pidfd registered with the current tokio reactor, to await a process's exit.
#[derive(Debug)]
pub(crate) struct AsyncPidfd {
    fd: AsyncFd<OwnedFd>,
}

impl AsyncPidfd {
    /// Registers (a duplicate of) `pidfd` with the current runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub(crate) fn register(pidfd: impl AsFd) -> io::Result<Self> {
        let fd = super::reactor::register(super::dup(pidfd)?, Interest::READABLE)?;
        Ok(AsyncPidfd { fd })
    }

    /// Waits until the process has exited.
    ///
    /// # Cancel safety
    ///
    /// Cancel-safe: it only observes readiness, which stays set once the process is gone.
    pub(crate) async fn exited(&self) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable().await?;
            if has_exited(self.fd.get_ref())? {
                return Ok(());
            }
            guard.clear_ready();
        }
    }
}

/// When process `pid` started (`/proc/<pid>/stat` field 22, clock ticks since boot), and
/// whether it is a zombie. `None` when no such process exists.
///
/// The start time tells a process from a later one that reused its pid.
pub(crate) fn start_time(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything, ')' included.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    // `rest` starts at field 3 (state); field 22 is 19 further on.
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, state == "Z" || state == "X"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ended_processes_are_told_from_running_ones() {
        assert!(!super::has_ended(std::process::id()));
        assert!(
            super::has_ended(i32::MAX as u32),
            "no such process (above any pid_max)"
        );
        assert!(super::has_ended(u32::MAX - 1), "not a pid at all");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped (a zombie) counts as ended, as does reaped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !super::has_ended(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "an exited child is never ended"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(
            super::start_time(pid).is_some_and(|(_, zombie)| zombie),
            "still a zombie"
        );
        child.wait().unwrap();
    }

    #[test]
    fn our_own_start_time_is_stable_and_alive() {
        let me = std::process::id();
        let (a, zombie) = super::start_time(me).unwrap();
        assert!(!zombie);
        assert_eq!(super::start_time(me).unwrap().0, a);
        assert!(super::start_time(u32::MAX - 1).is_none());
    }
}
