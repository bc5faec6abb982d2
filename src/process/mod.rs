//! Child processes that run an async function: [`Process::spawn`], [`init`], and handing handles
//! to any program with [`pass`] / [`inherited`].
//!
//! Python's `multiprocessing.Process(target=f, args=(x,))` with the *spawn* start method, in async
//! Rust. The child is a fresh run of the current executable (`/proc/self/exe`), so `main` must
//! give the crate a chance to take over in a child: call [`init`] first.
//!
//! ```no_run
//! use tokio_multiprocessing as mp;
//!
//! async fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! #[tokio::main]
//! async fn main() -> mp::Result<()> {
//!     mp::init().await?; // in a child: runs the entry and exits; here: returns at once
//!     let mut child = mp::Process::spawn(square, 7)?;
//!     assert_eq!(child.join().await?, 49);
//!     Ok(())
//! }
//! ```
//!
//! # In tests
//!
//! Spawning works from `#[tokio::test]` functions of integration tests with the default test
//! harness (under `cargo test` and `cargo nextest`): call `mp::init().await?` first in every test
//! that spawns. The child re-runs the test binary filtered to that one test (`<name> --exact`),
//! whose `init` call then runs the entry. The test is found by the name of the thread that called
//! `init`, which the test harness sets to the test's name; spawn from the test's own task (or
//! from anywhere, when only one test of the binary called `init`).
//!
//! # Children never outlive the parent
//!
//! Every child gets `SIGKILL` when its parent dies (`PR_SET_PDEATHSIG`, armed from a thread of
//! ours that lives as long as the process, because the kernel ties the signal to the forking
//! *thread*). Dropping a [`Process`] detaches it: it keeps running, and is reaped when it exits.

mod bootstrap;
mod children;
pub(crate) mod entry;
mod exit_status;
mod init;
mod pass;
mod spawn;
mod spawner;

pub use children::{ProcessSet, active_children, cpu_count, shutdown};
pub use init::{ProcessInfo, current_process, init, init_blocking, parent_process};
pub(crate) use init::{is_initialised, panic_message, test_to_rerun};
pub use pass::{inherited, pass};
pub use spawn::{Builder, Process};
