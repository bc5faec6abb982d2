//! [`init`]: where a re-executed child takes over, and who this process is.

use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};

use futures::FutureExt;

use super::bootstrap::{self, Bootstrap, Outcome};
use super::entry::{ChildCall, Returned};
use crate::connection::FdChannel;
use crate::sys;
use crate::{Error, Result};

/// Name and pid of a process (Python's `current_process()` / `parent_process()`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessInfo {
    /// `"MainProcess"` for a process not started by this crate, else its `Process` name.
    pub name: String,
    /// The OS process id.
    pub pid: u32,
}

struct ChildIdentity {
    name: String,
    parent: ProcessInfo,
}

static IDENTITY: OnceLock<ChildIdentity> = OnceLock::new();
/// Set once `init` ran in this process: spawning without it would re-run an unprepared `main`.
static INITIALISED: OnceLock<()> = OnceLock::new();
/// Names of the test-harness threads that called `init` (the harness names threads after tests).
static TEST_THREADS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Prepares this process for multiprocessing; call it first in `main` and in every test that
/// spawns.
///
/// In a process started by [`Process::spawn`](crate::Process::spawn) it runs the entry with its
/// arguments, sends the result to the parent and exits the process: it never returns. Anywhere
/// else it returns at once.
///
/// # Coming from Python
///
/// - A child is a fresh run of this program, as with Python's *spawn* start method: everything
///   `main` does **before** `init` runs again in every child (Python's
///   `if __name__ == "__main__":` rule). Put `init` first; set up logging or configuration
///   before it only if children should have it too.
/// - An entry is an `async fn` (or a closure that captures nothing): the child finds it by its
///   type, so data goes through its arguments, never through captures. An entry that captures
///   is refused when the program is built (`cargo build`; `cargo check` cannot see it).
/// - Children die with this process. Python waits for its non-daemon children at exit: call
///   [`shutdown`](crate::shutdown)`().await` at the end of `main` for that;
///   [`Builder::daemon`](crate::Builder::daemon)`(true)` children are not waited for.
///
/// # Errors
///
/// In a child whose bootstrap failed (the parent died before sending it, for example) it returns
/// the error rather than running anything.
///
/// # Cancel safety
///
/// In a parent it completes on its first poll. In a child it never completes; dropping it there
/// abandons the entry.
///
/// # Examples
///
/// ```no_run
/// #[tokio::main]
/// async fn main() -> tokio_multiprocessing::Result<()> {
///     tokio_multiprocessing::init().await?;
///     // ... the program ...
///     Ok(())
/// }
/// ```
pub async fn init() -> Result<()> {
    match child_socket()? {
        None => {
            initialised_as_parent();
            Ok(())
        }
        Some(fd) => run_child(fd).await,
    }
}

/// [`init`] for a synchronous `main`: in a child it builds a tokio runtime for the entry.
///
/// # Errors
///
/// As [`init`].
///
/// # Panics
///
/// In a child, when called from inside a tokio runtime (use [`init`] there).
pub fn init_blocking() -> Result<()> {
    match child_socket()? {
        None => {
            initialised_as_parent();
            Ok(())
        }
        Some(fd) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run_child(fd)),
    }
}

/// This process's name and pid.
pub fn current_process() -> ProcessInfo {
    ProcessInfo {
        name: IDENTITY
            .get()
            .map_or_else(|| "MainProcess".to_owned(), |c| c.name.clone()),
        pid: sys::getpid(),
    }
}

/// The process that spawned this one, `None` in a process not started by this crate.
pub fn parent_process() -> Option<ProcessInfo> {
    IDENTITY.get().map(|c| c.parent.clone())
}

fn initialised_as_parent() {
    INITIALISED.get_or_init(|| ());
    if let Some(name) = std::thread::current().name()
        && name != "main"
    {
        let mut names = TEST_THREADS.lock().unwrap_or_else(|e| e.into_inner());
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
    }
}

/// Whether `init` ran in this process.
pub(crate) fn is_initialised() -> bool {
    INITIALISED.get().is_some()
}

/// The libtest filter a child must run to reach `init` again: `None` for an ordinary `main`.
pub(crate) fn test_to_rerun() -> Result<Option<String>> {
    let names = TEST_THREADS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(current) = std::thread::current().name()
        && names.iter().any(|n| n == current)
    {
        return Ok(Some(current.to_owned()));
    }
    match names.as_slice() {
        [] => Ok(None),
        [only] => Ok(Some(only.clone())),
        _ => Err(Error::InvalidArgument(
            "cannot tell which test to re-run in the child: spawn from the test's own task \
             (several tests of this binary called `init`)"
                .into(),
        )),
    }
}

/// The bootstrap socket's fd if our parent started us with one.
fn child_socket() -> Result<Option<i32>> {
    let Ok(value) = std::env::var(bootstrap::ENV) else {
        return Ok(None);
    };
    let bad = || Error::Corrupt(format!("malformed {} value {value:?}", bootstrap::ENV));
    let (parent, fd) = value.split_once(':').ok_or_else(bad)?;
    let parent: u32 = parent.parse().map_err(|_| bad())?;
    let fd: i32 = fd.parse().map_err(|_| bad())?;
    // The variable is inherited by programs our own children start; it is meant for us only if
    // the process that set it is our parent.
    if sys::getppid() != Some(parent) {
        return Ok(None);
    }
    Ok(Some(fd))
}

async fn run_child(fd: i32) -> Result<()> {
    let sock = sys::spawn::take_inherited(fd)?;
    let mut channel = FdChannel::new(sock, bootstrap::MAX_FRAME)?;
    let crate::connection::Frame {
        payload: frame,
        fds,
    } = channel.recv().await?;
    let boot: Bootstrap = postcard::from_bytes(&frame)
        .map_err(|e| Error::Corrupt(format!("bad bootstrap frame: {e}")))?;
    let parent = ProcessInfo {
        name: boot.parent_name.clone(),
        pid: sys::getppid().unwrap_or(0),
    };
    let _ = IDENTITY.set(ChildIdentity {
        name: boot.name.clone(),
        parent,
    });
    INITIALISED.get_or_init(|| ());
    if let Some(test) = boot.test {
        // Our own children must re-run the same test to reach `init`.
        TEST_THREADS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(test);
    }

    let outcome = match sys::code_address::resolve(boot.entry, boot.exe) {
        Err(e) => Outcome::Failed(e.to_string()),
        Ok(trampoline) => {
            let call = ChildCall {
                args: boot.args,
                fds,
            };
            match AssertUnwindSafe(trampoline(Box::new(call)))
                .catch_unwind()
                .await
            {
                Err(panic) => Outcome::Panicked(panic_message(&*panic)),
                Ok(returned) => match returned.downcast::<Returned>().map(|r| *r) {
                    Ok(Ok((bytes, fds, failed))) => {
                        let frame = postcard::to_allocvec(&Outcome::Returned(bytes))
                            .map_err(|e| Error::Corrupt(e.to_string()))?;
                        // An entry that returned `Err` failed, as a `main` that does.
                        let code = match channel.send(&frame, &fds).await {
                            Ok(()) => i32::from(failed),
                            Err(_) => 1,
                        };
                        std::process::exit(code);
                    }
                    Ok(Err(e)) => Outcome::Failed(e.to_string()),
                    Err(_) => Outcome::Failed("entry returned the wrong type".into()),
                },
            }
        }
    };
    let code = match outcome {
        Outcome::Panicked(_) => 101,
        _ => 1,
    };
    if let Ok(frame) = postcard::to_allocvec(&outcome) {
        let _ = channel.send(&frame, &[]).await;
    }
    std::process::exit(code);
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
