//! Shared memory: raw segments and typed views over them.
//!
//! Python's `multiprocessing.shared_memory`, for async Rust:
//!
//! | Python | here |
//! |---|---|
//! | `SharedMemory(create=True, size=n)` | [`SharedMemory::create`] (anonymous, nothing to leak) or [`SharedMemory::create_named`] |
//! | `SharedMemory(name=...)` | [`SharedMemory::open`] |
//! | `shm.buf[a:b] = data` / `bytes(shm.buf[a:b])` | [`SharedMemory::write_at`] / [`SharedMemory::read_at`] |
//! | `shm.close()` | drop the handle |
//! | `shm.unlink()` | [`SharedMemory::unlink`] (the creator also unlinks on drop unless [`SharedMemory::persist`]) |
//! | `ShareableList([...], name=...)` | [`ShareableList::create_named`] |
//!
//! Segments are sealed memfds by default: they vanish when the last handle and mapping close,
//! and no peer can shrink them under a reader. Both kinds start with a small header (magic,
//! layout version, kind, size) that is checked whenever a segment is opened or received, so a
//! segment that is not ours, too small or of another layout is refused with a clear error.
//!
//! ```
//! use tokio_multiprocessing::SharedMemory;
//!
//! # fn main() -> tokio_multiprocessing::Result<()> {
//! let shm = SharedMemory::create(10)?;
//! shm.write_at(0, &[22, 33, 44, 55])?;
//! let mut buf = [0u8; 4];
//! shm.read_at(0, &mut buf)?;
//! assert_eq!(buf, [22, 33, 44, 55]);
//! # Ok(())
//! # }
//! ```

pub(crate) mod header;
mod shareable_list;
mod shared_memory;
pub(crate) mod tracker;

pub use shareable_list::{Item, MAX_SLOTS, ShareableList, Slot};
pub use shared_memory::SharedMemory;
pub(crate) use shared_memory::SharedMemoryWire;
