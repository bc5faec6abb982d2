//! Naming a function so a re-executed copy of the same binary can call it.
//!
//! Address-space layout randomisation moves the whole executable image, never the distance
//! between two functions in it. A child started from `/proc/self/exe` (the very same file) can
//! therefore find a function from its offset to a fixed anchor function; this is how
//! [`Process::spawn`](crate::Process::spawn) tells the child which entry to run.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;

/// The one signature every spawn entry trampoline has.
pub(crate) type Trampoline =
    fn(Box<dyn Any + Send>) -> Pin<Box<dyn Future<Output = Box<dyn Any + Send>>>>;

#[inline(never)]
fn anchor() -> usize {
    // A body that cannot be merged with other functions by identical-code folding.
    std::hint::black_box(0x7f3a_91c5)
}

fn anchor_address() -> usize {
    anchor as fn() -> usize as usize
}

/// The distance from the anchor to `f`, valid in any process running this same executable file.
pub(crate) fn offset_of(f: Trampoline) -> i64 {
    (f as usize).wrapping_sub(anchor_address()) as i64
}

/// A plain function a primitive runs on a user's behalf (a barrier's action).
pub(crate) type Action = fn();

/// The distance from the anchor to `action`, as [`offset_of`].
pub(crate) fn action_offset(action: Action) -> i64 {
    (action as usize).wrapping_sub(anchor_address()) as i64
}

/// Turns an offset made by [`action_offset`] back into the function. Only for offsets that came
/// in this child's spawn arguments ([`FdSource::from_parent`](crate::handle::FdSource)): the
/// parent made them in its image of this executable, as it made the entry offset that
/// [`resolve`] checked before the arguments were decoded. `None` in a process that was not
/// started by [`Process::spawn`](crate::Process::spawn), where nothing vouches for the file.
pub(crate) fn resolve_action_from_parent(offset: i64) -> Option<Action> {
    PARENT_EXE_CHECKED.get()?;
    let address = anchor_address().wrapping_add(offset as usize);
    // SAFETY: the offset arrived in our spawn arguments (the caller checks), which our parent
    // made with `action_offset` from an `Action` in its image of the executable file we run:
    // `resolve` checked that file's identity (`PARENT_EXE_CHECKED`) before the arguments were
    // decoded. ASLR moves the image as a whole, so `address` is that function here. Fn pointers
    // and `usize` have the same size on Linux targets.
    Some(unsafe { std::mem::transmute::<usize, Action>(address) })
}

/// Set once [`resolve`] found that we run the executable our parent ran.
static PARENT_EXE_CHECKED: std::sync::OnceLock<()> = std::sync::OnceLock::new();

/// The identity (device, inode) of the executable file this process runs.
pub(crate) fn executable_identity() -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::stat("/proc/self/exe")?;
    Ok((st.st_dev, st.st_ino))
}

/// Turns an offset made by [`offset_of`] in the process that started us back into the function,
/// after checking that we run the same executable file it ran (`parent_exe`, from its
/// [`executable_identity`]).
pub(crate) fn resolve(offset: i64, parent_exe: (u64, u64)) -> std::io::Result<Trampoline> {
    if executable_identity()? != parent_exe {
        return Err(std::io::Error::other(
            "this process does not run the executable its parent ran; cannot find the entry",
        ));
    }
    let _ = PARENT_EXE_CHECKED.set(());
    let address = anchor_address().wrapping_add(offset as usize);
    // SAFETY: the parent computed `offset` with `offset_of` from a `Trampoline` in its image of
    // the very file we run (same device and inode, checked above; the parent execs
    // `/proc/self/exe`, which cannot be swapped for another file). The kernel maps an image as a
    // whole, so ASLR moved the function and the anchor by the same amount, and `address` is that
    // function here. Fn pointers and `usize` have the same size on Linux targets.
    Ok(unsafe { std::mem::transmute::<usize, Trampoline>(address) })
}

/// Produces the value of a zero-sized callable type: a function item or a closure that captures
/// nothing (the only zero-sized types that implement `Fn` on stable Rust, together with closures
/// capturing only such values).
///
/// # Panics
///
/// If `F` is not zero-sized.
pub(crate) fn conjure<F: Fn(A) -> R + Copy + 'static, A, R>() -> F {
    assert_eq!(
        std::mem::size_of::<F>(),
        0,
        "spawn entries must be zero-sized"
    );
    // SAFETY: `F` has size 0, so there are no bytes to initialise, and the only language-level
    // validity requirement left is that `F` be inhabited: the parent held a value of `F` to
    // spawn with, and it is the same type in the same binary. The crate documents that entries
    // are function items or closures capturing nothing, whose single value carries no invariant.
    // A read of a zero-sized type through a dangling, well-aligned, non-null pointer touches no
    // memory and is allowed.
    unsafe { std::ptr::read(std::ptr::NonNull::<F>::dangling().as_ptr()) }
}
