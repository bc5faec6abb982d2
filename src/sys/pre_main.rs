//! A hook that runs before `main` in every process linking this crate, so that a copy of the
//! program started as the resource tracker (see `shm/tracker.rs`) becomes the tracker before
//! any of the user's code runs. Python starts its tracker as a separate interpreter; a Rust
//! program has only itself to re-execute, and its `main` may not call [`init`](crate::init).
//!
//! This is the one place where the platform layer calls up: the hook hands over to the
//! tracker's server loop, which is ordinary safe code.
//!
//! # References
//! - [ELF `.init_array`](https://refspecs.linuxfoundation.org/elf/gabi4+/ch5.dynamic.html#init_fini):
//!   glibc calls each entry with `argc`, `argv` and `envp` before `main`.

use std::ffi::{CStr, c_char, c_int};
use std::sync::atomic::{AtomicBool, Ordering};

/// The first argument that makes a copy of the program the resource tracker; the second is the
/// tracker's address.
pub(crate) const TRACKER_ARG: &str = "--tokio-multiprocessing-resource-tracker";

static HOOK_RAN: AtomicBool = AtomicBool::new(false);

type InitArrayEntry = extern "C" fn(c_int, *const *const c_char, *const *const c_char);

#[used]
// SAFETY: an `.init_array` entry must be a function the C runtime may call with (argc, argv,
// envp) before `main`; `before_main` has exactly that C signature and never unwinds (it only
// stores a flag, unless the process is the tracker, which exits without returning).
#[unsafe(link_section = ".init_array")]
static HOOK: InitArrayEntry = before_main;

extern "C" fn before_main(argc: c_int, argv: *const *const c_char, _envp: *const *const c_char) {
    HOOK_RAN.store(true, Ordering::Release);
    if argc < 3 || argv.is_null() {
        return;
    }
    let arg = |i: usize| {
        // SAFETY: glibc passes `argv` with `argc` entries (checked: i < argc), so `argv + i` is
        // inside that array.
        let slot = unsafe { argv.add(i) };
        // SAFETY: `slot` points at a live entry of the array (above).
        let ptr = unsafe { *slot };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: as above: a valid NUL-terminated C string that outlives this call.
        unsafe { CStr::from_ptr(ptr) }.to_str().ok()
    };
    if arg(1) == Some(TRACKER_ARG)
        && let Some(address) = arg(2)
    {
        crate::shm::tracker::serve(address);
        std::process::exit(0);
    }
}

/// Whether the hook ran in this process: only then may a copy of the program be started as the
/// tracker (otherwise the copy would run the user's `main`).
pub(crate) fn hook_ran() -> bool {
    // Referring to the entry keeps it in every program that can start a tracker.
    std::hint::black_box(&HOOK);
    HOOK_RAN.load(Ordering::Acquire)
}
