//! Surviving a named segment's file being truncated under our mapping.
//!
//! Anonymous segments are sealed memfds: nobody can shrink them. A named segment is a file in
//! `/dev/shm` that any process with access may `ftruncate`, and touching a mapped page past the
//! new end raises `SIGBUS`, which kills the process. So every mapping of a named segment is
//! registered here, and a `SIGBUS` handler that finds the faulting address in a registered
//! mapping replaces the whole mapping with private zero pages (`mmap(MAP_FIXED | MAP_ANONYMOUS)`)
//! and marks it *vanished*: the faulting access is restarted and reads zeros, and every later
//! checked access reports an error instead of using the memory. A fault anywhere else goes to
//! the handler that was installed before ours (or the default action, which kills as before).
//!
//! The handler only loads atomics from a static table and makes two async-signal-safe system
//! calls (`mmap`, and `sigaction` when it hands the fault on).
//!
//! # References
//! - [sigaction(2)](https://man7.org/linux/man-pages/man2/sigaction.2.html)
//! - [mmap(2), `SIGBUS`](https://man7.org/linux/man-pages/man2/mmap.2.html)

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Mappings of named segments guarded at once; more are mapped unguarded (a truncation of one
/// of those kills the process, as without this module).
const SLOTS: usize = 4096;

struct Slot {
    /// The mapping's first byte; 0 when the slot is free. Written last when registering.
    start: AtomicUsize,
    len: AtomicUsize,
    vanished: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    start: AtomicUsize::new(0),
    len: AtomicUsize::new(0),
    vanished: AtomicBool::new(false),
};

static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

/// The disposition of `SIGBUS` before ours, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();

/// A registered mapping; unregisters when dropped (before the mapping is unmapped).
#[derive(Debug)]
pub(crate) struct Guard {
    slot: &'static Slot,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("vanished", &self.vanished.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Guards `len` bytes mapped at `start`; `None` when the table is full or the handler
    /// cannot be installed.
    pub(crate) fn register(start: *mut u8, len: usize) -> Option<Guard> {
        install().ok()?;
        let slot = TABLE.iter().find(|slot| {
            slot.start.load(Ordering::Relaxed) == 0
                && slot
                    .len
                    .compare_exchange(0, len.max(1), Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
        })?;
        slot.vanished.store(false, Ordering::Relaxed);
        slot.start.store(start as usize, Ordering::Release);
        Some(Guard { slot })
    }

    /// Set once the file was truncated under the mapping (its pages are private zeros now).
    /// Valid for as long as the guard lives.
    pub(crate) fn vanished(&self) -> &'static AtomicBool {
        &self.slot.vanished
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.slot.start.store(0, Ordering::Release);
        self.slot.len.store(0, Ordering::Release);
    }
}

/// Installs the handler once per process.
fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // SAFETY: an all-zero `sigaction` is a valid value of the C struct (no handler, empty
            // mask, no flags), filled in below before use.
            let mut ours: libc::sigaction = unsafe { std::mem::zeroed() };
            ours.sa_sigaction = on_sigbus as *const () as usize;
            ours.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: as above, a zeroed struct for the kernel to fill in.
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers are to live, initialised `sigaction` structs; `on_sigbus`
            // has the three-argument signature `SA_SIGINFO` requires and is async-signal-safe.
            if unsafe { libc::sigaction(libc::SIGBUS, &ours, &mut previous) } != 0 {
                return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            let _ = PREVIOUS.set(previous);
            Ok(())
        })
        .as_ref()
        .map(|_| ())
        .map_err(|&code| io::Error::from_raw_os_error(code))
}

extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid, live `siginfo_t` to an `SA_SIGINFO` handler.
    let siginfo = unsafe { &*info };
    // SAFETY: `si_addr` is the union field the kernel fills in for `SIGBUS`.
    let address = unsafe { siginfo.si_addr() } as usize;
    for slot in &TABLE {
        let start = slot.start.load(Ordering::Acquire);
        let len = slot.len.load(Ordering::Acquire);
        if start == 0 || address < start || address - start >= len {
            continue;
        }
        // SAFETY: `start..start + len` is a mapping of ours (registered, still mapped: a guard
        // unregisters before its mapping is unmapped). Replacing it with private anonymous pages
        // at the same address keeps every pointer into it valid; `mmap` is a raw system call.
        let replaced = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if replaced != libc::MAP_FAILED {
            slot.vanished.store(true, Ordering::Release);
            return; // the faulting access is restarted on the new pages
        }
    }
    pass_on(signal, info, context);
}

/// A fault that is not ours: what would have happened without us.
fn pass_on(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let Some(previous) = PREVIOUS.get() else {
        return;
    };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Restore the default and return: the access faults again and the process dies as it
        // would have (a synchronous SIGBUS cannot be ignored).
        // SAFETY: a zeroed `sigaction` with `SIG_DFL` (0) is the default disposition.
        let default: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: `sigaction` is async-signal-safe; the pointer is to a live struct.
        unsafe { libc::sigaction(signal, &default, std::ptr::null_mut()) };
        return;
    }
    if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous handler was installed with `SA_SIGINFO`, so it has this
        // signature; we pass on exactly what the kernel gave us.
        let previous: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
            unsafe { std::mem::transmute(handler) };
        previous(signal, info, context);
    } else {
        // SAFETY: without `SA_SIGINFO` the handler takes only the signal number.
        let previous: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
        previous(signal);
    }
}
