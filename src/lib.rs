//! Python's `multiprocessing` for async Rust.
//!
//! Every primitive a Python programmer reaches for works **across OS processes** and is
//! **awaited inside tokio**. This release has pipes and connections, queues, locks, events and the other
//! synchronization primitives, shared memory, typed shared lists,
//! child processes running async functions, process pools, managers (shared objects behind
//! typed proxies, across processes or machines), and handles that cross to other processes.
//!
//! | Python `multiprocessing` | tokio-multiprocessing |
//! |---|---|
//! | `Process(target=f, args=(x,)).start()` / `.join()` | [`Process::spawn(f, x)`](Process::spawn) / [`join().await`](Process::join) |
//! | `if __name__ == "__main__":` | [`init().await`](init) first in `main` |
//! | `current_process()`, `parent_process()` | [`current_process()`], [`parent_process()`] |
//! | `Pipe()`, `Connection.send` / `recv` | [`Pipe::duplex`], [`Connection::send`] / [`Connection::recv`] |
//! | `connection.Listener` / `Client` (authkey) | [`Listener`], [`Client`] |
//! | `Event`, `Lock`, `RLock`, `Semaphore`, `Condition`, `Barrier` | [`Event`], [`Lock`], [`RLock`], [`Semaphore`], [`Condition`], [`Barrier`] (see [`sync`]) |
//! | `Value('i', 0)`, `Array('d', n)` | [`Value`], [`Array`] |
//! | `Queue`, `SimpleQueue`, `JoinableQueue`, `queue.LifoQueue`, `queue.PriorityQueue` | [`Queue`], [`SimpleQueue`], [`JoinableQueue`], [`LifoQueue`], [`PriorityQueue`] (see [`queue`]) |
//! | `shared_memory.SharedMemory` | [`SharedMemory`] (anonymous memfd, or named with [`SharedMemory::create_named`]) |
//! | `shared_memory.ShareableList` | [`ShareableList`] |
//! | `Pool(n)`: `apply`, `map`, `imap_unordered` | [`Pool`] (see [`pool`]) |
//! | `Manager()`, `BaseManager.register`, `SharedMemoryManager` | [`Manager`], [`managed!`], [`SharedMemoryManager`] (see [`manager`]) |
//! | passing a handle to a child | as a spawn argument, inside a message, or [`pass`] / [`inherited`] for any program |
//!
//! ```no_run
//! use tokio_multiprocessing as mp;
//!
//! async fn fill(shm: mp::SharedMemory) -> usize {
//!     shm.write_at(0, b"written by the child").unwrap();
//!     shm.size()
//! }
//!
//! #[tokio::main]
//! async fn main() -> mp::Result<()> {
//!     mp::init().await?;
//!     let shm = mp::SharedMemory::create(64)?;
//!     let size = mp::Process::spawn(fill, shm.clone())?.join().await?;
//!     assert_eq!(size, 64);
//!     assert_eq!(&shm.to_vec()?[..20], b"written by the child");
//!     Ok(())
//! }
//! ```
//!
//! # Layers
//!
//! `sys` is the only module with syscalls and `unsafe`; [`shm`] builds segments on it; [`handle`]
//! says how any handle crosses to another process; `notify` is the one wait/wake protocol and
//! [`sync`] the primitives built on it; [`connection`] frames messages over sockets;
//! [`process`] starts children; [`pool`] and [`manager`] are built from all of these. Linux only.
#![doc(test(attr(deny(warnings))))]

#[cfg(not(target_os = "linux"))]
compile_error!(
    "tokio-multiprocessing uses futex, eventfd, memfd and pidfd: it supports Linux only"
);

pub mod connection;
mod error;
#[cfg(test)]
mod fuzz_tests;

/// Every Rust code block of README.md, compiled by `cargo test --doc` so the README cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub mod handle;
pub mod manager;
mod notify;
pub mod pool;
pub mod process;
pub mod queue;
pub mod shm;
pub mod sync;
mod sys;

/// serde, for the code [`managed!`] writes; not an API.
#[doc(hidden)]
pub use serde as __serde;
#[cfg(feature = "test-hooks")]
pub mod test_hooks;

pub use connection::{Client, Connection, Listener, Pipe};
pub use error::{Error, ProcessFailure, Result};
pub use manager::{Manager, SharedMemoryManager};
pub use pool::{Pool, PoolBuilder, Task};
pub use process::{
    Builder, Process, ProcessInfo, ProcessSet, active_children, cpu_count, current_process,
    inherited, init, init_blocking, parent_process, pass, shutdown,
};
pub use queue::{JoinableQueue, LifoQueue, PriorityQueue, PutError, Queue, SimpleQueue};
pub use shm::{Item, ShareableList, SharedMemory, Slot};
pub use sync::{
    Array, Barrier, BoundedSemaphore, Condition, Event, Lock, LockError, LockGuard, RLock,
    RawArray, RawValue, Semaphore, SemaphorePermit, Value,
};
