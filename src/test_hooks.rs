//! Hooks for this crate's own integration tests, which must look at shared state no user needs
//! (waiter counts, spill segment names) or play a hostile peer (a segment's raw fd).
//!
//! Compiled only with the `test-hooks` feature, which is off by default and turned on by the
//! crate's dev-dependency on itself, so `cargo test` has it and a user's build does not. Not part
//! of the API: no stability promise of any kind.

use std::os::fd::BorrowedFd;

use crate::{Event, Lock, Queue, SharedMemory};

/// Waiters counted in on a queue's (not empty, not full) channels, each (blocking, async).
pub fn queue_waiters<T>(queue: &Queue<T>) -> ((u32, u32), (u32, u32)) {
    queue.waiters()
}

/// The `/dev/shm` name prefix of a queue's spilled items.
pub fn queue_spill_prefix<T>(queue: &Queue<T>) -> String {
    queue.spill_prefix()
}

/// Overwrites a queue's `head` commit word (items taken, byte position), as a hostile or buggy
/// peer could.
pub fn queue_forge_head<T>(queue: &Queue<T>, items: u32, pos: u32) {
    queue.ring().forge_head(items, pos);
}

/// The shared segment a queue lives in (its state and ring after the header), to scribble on
/// as a hostile peer would.
pub fn queue_segment<T>(queue: &Queue<T>) -> SharedMemory {
    queue.ring().segment().clone()
}

/// A queue's commit words: ((items taken, head position), (items put, tail position)).
pub fn queue_marks<T>(queue: &Queue<T>) -> ((u32, u32), (u32, u32)) {
    queue.ring().marks()
}

/// Waiters counted in on a lock's channel (blocking, async).
pub fn lock_waiters(lock: &Lock) -> (u32, u32) {
    lock.waiters()
}

/// Waiters counted in on an event's channel (blocking, async).
pub fn event_waiters(event: &Event) -> (u32, u32) {
    event.waiters()
}

/// Rings an event's wait channel without changing its state (a spurious notify).
pub fn event_notify(event: &Event) {
    event.notify_spuriously();
}

/// Sets how long any waiter in this process sleeps at most before it re-checks on its own
/// (normally 1 s), so a test can tell a real wake-up from that safety timer.
pub fn set_safety_recheck(period: std::time::Duration) {
    crate::notify::set_safety_recheck(period);
}

/// A segment's file descriptor, to shrink or grow it as a hostile peer would.
pub fn shared_memory_fd(shm: &SharedMemory) -> BorrowedFd<'_> {
    shm.fd()
}
