//! Queues between processes (Python's `multiprocessing.Queue`), over a ring in shared memory.
//!
//! | Python | here |
//! |---|---|
//! | `Queue(maxsize)` | [`Queue::new`] / [`Queue::builder`] |
//! | `put(x)`, `get()` (block, timeout) | `put(x).await`, `get().await`, `put_timeout`, `get_timeout`, `*_blocking` |
//! | `put_nowait`, `get_nowait` | `try_put` (`PutError::Full(x)`), `try_get` (`Error::Empty`) |
//! | `qsize`, `empty`, `full`, `close` | `len` (exact), `is_empty`, `is_full`, `close` |
//! | — | `put_bytes` / `get_bytes` (raw bytes), `put_many` / `get_many`, `put_many_bytes` / `get_many_bytes` (batches) |
//!
//! | `SimpleQueue`, `JoinableQueue` (`task_done`, `join`) | [`SimpleQueue`], [`JoinableQueue`] |
//! | `queue.LifoQueue`, `queue.PriorityQueue` (threads only in Python) | [`LifoQueue`], [`PriorityQueue`] — across processes |
//!
//! A refused put always hands the item back in its [`PutError`].

mod error;
mod fifo;
mod flavours;
mod ring;

pub use error::PutError;
pub use fifo::{DEFAULT_CAPACITY, DEFAULT_MAX_MESSAGE, Queue, QueueBuilder};
pub use flavours::{JoinableQueue, LifoQueue, PriorityQueue, SimpleQueue};
