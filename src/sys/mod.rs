//! The only door to the operating system.
//!
//! Every raw syscall and every piece of `unsafe` plumbing of the crate lives in this folder, one
//! file per syscall family, each a thin safe wrapper (mostly over [`rustix`]). Everything above it
//! is safe code. Each wrapper names the syscall it makes; each `unsafe` block names the invariant it
//! relies on in a `// SAFETY:` comment.
//!
//! | file | syscalls |
//! |---|---|
//! | `futex.rs` | `futex(FUTEX_WAIT / FUTEX_WAKE)` with shared (not private) keys |
//! | `eventfd.rs` | `eventfd`, `write`, registration with tokio's reactor |
//! | `file_lock.rs` | `flock` on a listener's lock file |
//! | `memfd.rs` | `memfd_create`, `ftruncate`, `fallocate`, `F_ADD_SEALS` / `F_GET_SEALS` |
//! | `shm_open.rs` | `shm_open` / `shm_unlink`, `fstat` for named segments |
//! | `sigbus.rs` | `sigaction(SIGBUS)` and `mmap(MAP_FIXED)`: named segments truncated under us |
//! | `mapping.rs` | `mmap` (through `memmap2::MmapRaw`), bounds-checked copies and atomics |
//! | `scm_rights.rs` | `socketpair`, `sendmsg` / `recvmsg` with `SCM_RIGHTS` |
//! | `reactor.rs` | registering an fd with tokio's reactor (`AsyncFd`) |
//! | `pidfd.rs` | `pidfd_open`, `pidfd_send_signal`, `waitid(P_PIDFD)` |
//! | `spawn.rs` | `prctl(PR_SET_PDEATHSIG)` and fd inheritance between `fork` and `exec` |
//! | `tcp.rs` | `setsockopt`: keepalive probes and `TCP_USER_TIMEOUT`, to notice a vanished host |
//! | `pre_main.rs` | an `.init_array` hook: a copy of the program started as the resource tracker becomes it before `main` |
//! | `code_address.rs` | turning a function into an address that survives `exec` of the same binary |
#![allow(unsafe_code)]

pub(crate) mod code_address;
pub(crate) mod eventfd;
pub(crate) mod file_lock;
pub(crate) mod futex;
pub(crate) mod mapping;
pub(crate) mod memfd;
pub(crate) mod pidfd;
pub(crate) mod pre_main;
pub(crate) mod reactor;
pub(crate) mod scm_rights;
pub(crate) mod shm_open;
pub(crate) mod sigbus;
pub(crate) mod spawn;
pub(crate) mod tcp;

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU32;

/// The size of the file behind `fd` (`fstat`).
pub(crate) fn file_size(fd: impl AsFd) -> std::io::Result<u64> {
    let st = rustix::fs::fstat(fd)?;
    u64::try_from(st.st_size).map_err(|_| std::io::Error::other("negative file size"))
}

/// Milliseconds on the system-wide monotonic clock (`clock_gettime(CLOCK_MONOTONIC)`, through
/// the vDSO), truncated to 32 bits: the same clock in every process, so a stamp one process
/// leaves in shared memory means the same instant to another.
pub(crate) fn monotonic_millis() -> u32 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64)
        .wrapping_mul(1000)
        .wrapping_add(t.tv_nsec as u64 / 1_000_000) as u32
}

/// How many CPUs this thread may run on (`sched_getaffinity`); `None` if it cannot be asked.
pub(crate) fn cpus_allowed() -> Option<usize> {
    let set = rustix::thread::sched_getaffinity(None).ok()?;
    usize::try_from(set.count()).ok().filter(|&n| n > 0)
}

/// Duplicates `fd` with `O_CLOEXEC` (`fcntl(F_DUPFD_CLOEXEC)`).
pub(crate) fn dup(fd: impl AsFd) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// This process's id (`getpid`). Locks ask on every acquisition and `getpid` is a system call,
/// so the answer is kept in a page the kernel zeroes in a forked child (`MADV_WIPEONFORK`): a
/// child of a bare `fork` asks again instead of believing it is its parent.
pub(crate) fn getpid() -> u32 {
    use std::sync::OnceLock;
    use std::sync::atomic::Ordering;
    static CACHE: OnceLock<Option<&'static AtomicU32>> = OnceLock::new();
    let ask = || rustix::process::getpid().as_raw_nonzero().get() as u32;
    let Some(cache) = *CACHE.get_or_init(wipe_on_fork_word) else {
        return ask();
    };
    match cache.load(Ordering::Relaxed) {
        0 => {
            let pid = ask();
            cache.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

/// A zeroed word in a private page that a forked child sees zeroed again; `None` on kernels
/// without `MADV_WIPEONFORK` (before 4.14).
fn wipe_on_fork_word() -> Option<&'static AtomicU32> {
    use rustix::mm::{Advice, MapFlags, ProtFlags};
    const PAGE: usize = 4096;
    // SAFETY: a new anonymous private mapping at an address the kernel picks aliases nothing.
    let page = unsafe {
        rustix::mm::mmap_anonymous(
            std::ptr::null_mut(),
            PAGE,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }
    .ok()?;
    // SAFETY: `page` is the whole of the mapping just made, which nothing else knows of.
    if unsafe { rustix::mm::madvise(page, PAGE, Advice::LinuxWipeOnFork) }.is_err() {
        // SAFETY: as above; the mapping is dropped unused.
        let _ = unsafe { rustix::mm::munmap(page, PAGE) };
        return None;
    }
    // SAFETY: the page is never unmapped (it lives as long as the process), is page-aligned and
    // zero-filled, and is only ever accessed through this atomic.
    Some(unsafe { &*page.cast::<AtomicU32>() })
}

/// The parent's process id (`getppid`), `None` when the parent is gone and we were reparented to
/// no one visible.
pub(crate) fn getppid() -> Option<u32> {
    rustix::process::getppid().map(|p| p.as_raw_nonzero().get() as u32)
}

/// Whether two fds refer to the same file (same device and inode).
pub(crate) fn same_file(a: impl AsFd, b: impl AsFd) -> std::io::Result<bool> {
    let (a, b) = (rustix::fs::fstat(a)?, rustix::fs::fstat(b)?);
    Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
}

/// Fills `buf` from the kernel's random source (`getrandom(2)`), for authentication nonces.
pub(crate) fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        match rustix::rand::getrandom(&mut buf[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
