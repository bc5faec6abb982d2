//! The engine under every queue flavour: a byte ring in a shared segment, guarded by robust
//! [`Lock`]s, with one wait channel for "not empty" and one for "not full".
//!
//! ```text
//! record = len u32 | flags u32 | payload, padded to 8 bytes
//! tail   = items put (u32, wrapping) | byte position (u32, modulo 2 × capacity)
//! head   = items taken               | byte position
//! ```
//!
//! A put writes the whole record first and then commits it with one store of `tail`; a get copies
//! the record out and then commits by moving `head`. Each commit word carries its side's item
//! count next to its position, so one atomic write moves both and the length (`tail.items -
//! head.items`) is exact at every instant. A process killed in the middle leaves either the whole
//! record or none of it.
//!
//! In a FIFO queue putters take a put lock and write only past `tail`. Getters take no lock at
//! all: a getter copies the oldest record(s) out and commits with a compare-and-swap of `head`;
//! if another getter moved `head` first, the bytes copied may have been overwritten since, so
//! it drops its copy and tries again (only a spilled item, whose segment must be removed exactly
//! once, is taken under a get lock). Putters and getters never wait for each other, and the
//! words each side writes sit on their own cache lines. LIFO and priority queues take items
//! from anywhere, so every operation there takes the one lock; a record taken from the middle
//! is flagged `TAKEN` (one aligned store), and the next locker after a death re-walks the ring
//! and recomputes the count.
//!
//! Everything read from the ring is validated against process-local limits; a ring that fails
//! validation yields [`Error::Corrupt`], never a panic or an out-of-bounds read.

mod batch;
mod get;
mod joinable;
mod locking;
mod position;
mod put;
mod spill;
mod take_fifo;
mod take_ordered;
mod validate;
mod wait;
mod wire;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::notify::{CHANNEL_SIZE, WaitChannel};
use crate::shm::header::Kind;
use crate::sync::Lock;
use crate::sync::segment::Segment;
use crate::sys::eventfd;
use crate::{Error, Result};

pub(crate) use batch::Batch;
use position::{Mark, record_size};
pub(crate) use spill::Record;
pub use wire::RingWire;

// State layout (offsets after the "not empty" channel, which fills the first 16 bytes). Words
// written on every operation get a cache line each, so a putter and a getter in two processes
// do not pull one line back and forth.
const NOT_FULL: usize = 0; // a second wait channel
const CAPACITY: usize = 16; // u64 ring bytes (fixed)
const MAX_ITEMS: usize = 24; // u64, 0 = only the bytes limit (fixed)
const MAX_MESSAGE: usize = 32; // u64 (fixed)
const ORDER: usize = 40; // u32: which record a get takes (fixed)
const JOINABLE: usize = 44; // u32 (fixed)
const QUEUE_ID: usize = 48; // u64, random, names this queue's spill segments (fixed)
const CLOSED: usize = 112; // u32 (0, CLOSED_DRAINING, CLOSED_DISCARDING), its own line: read by every put
const TAIL: usize = 176; // u64 commit word of the putters, its own line
const HEAD_SEEN: usize = 184; // u64: `head` as the putters last read it (FIFO)
const HEAD: usize = 240; // u64 commit word of the getters, its own line
const TAIL_SEEN: usize = 248; // u64: `tail` as the getters last read it (FIFO)
const DONE: usize = 304; // u32: task_done calls (JoinableQueue), wrapping like the item counts
const RING: usize = 368; // 64-byte aligned in the mapping (the state starts 16 bytes in)

/// `CLOSED` after `close`: getters drain what is queued.
const CLOSED_DRAINING: u32 = 1;
/// `CLOSED` after `close_discarding`: what is queued is thrown away.
const CLOSED_DISCARDING: u32 = 2;

/// The largest ring: positions run modulo twice the capacity in 32 bits.
const MAX_CAPACITY: usize = 1 << 30;

/// A record's flags word: set once a get took it out of the middle of the ring.
const TAKEN: u32 = 1;
/// A record's flags word: the payload is the name of a spill segment holding the item.
const SPILLED: u32 = 2;

const RECORD_HEADER: usize = 8;

/// Sizes and behaviour a ring is made with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) capacity: usize,
    pub(crate) max_items: u64,
    pub(crate) max_message: usize,
    pub(crate) order: Order,
    pub(crate) joinable: bool,
}

/// Which item a get takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// The oldest.
    Fifo = 0,
    /// The newest.
    Lifo = 1,
    /// The smallest, by a comparison the typed layer supplies (oldest among equals).
    Priority = 2,
}

impl Order {
    fn from_raw(raw: u32) -> Option<Order> {
        match raw {
            0 => Some(Order::Fifo),
            1 => Some(Order::Lifo),
            2 => Some(Order::Priority),
            _ => None,
        }
    }
}

/// Orders two serialised items (for priority queues).
pub(crate) type Compare = fn(&[u8], &[u8]) -> Result<std::cmp::Ordering>;

/// What a locked attempt found.
pub(crate) enum Put {
    Done,
    Full,
}

pub(crate) struct Ring {
    seg: Arc<Segment>,
    not_full: WaitChannel,
    /// Serialises putters (and, for LIFO and priority queues, everyone).
    put_lock: Lock,
    /// Serialises getters of a FIFO queue.
    get_lock: Lock,
    limits: Limits,
}

impl Ring {
    pub(crate) fn new(limits: Limits) -> Result<Self> {
        if limits.capacity < 64 || limits.capacity > MAX_CAPACITY {
            return Err(Error::InvalidArgument(
                "queue capacity must be 64 bytes to 1 GiB".into(),
            ));
        }
        let capacity = limits.capacity.next_multiple_of(8);
        let limits = Limits { capacity, ..limits };
        let seg = Segment::create(Kind::Queue, RING + capacity, |shm| {
            let at = |o| shm.atomic_u64(CHANNEL_SIZE + o);
            at(CAPACITY)?.store(capacity as u64, Ordering::Relaxed);
            at(MAX_ITEMS)?.store(limits.max_items, Ordering::Relaxed);
            at(MAX_MESSAGE)?.store(limits.max_message as u64, Ordering::Relaxed);
            let mut id = [0u8; 8];
            crate::sys::random_bytes(&mut id)?;
            at(QUEUE_ID)?.store(u64::from_le_bytes(id) | 1, Ordering::Relaxed);
            shm.atomic_u32(CHANNEL_SIZE + ORDER)?
                .store(limits.order as u32, Ordering::Relaxed);
            shm.atomic_u32(CHANNEL_SIZE + JOINABLE)?
                .store(u32::from(limits.joinable), Ordering::Relaxed);
            Ok(())
        })?;
        let not_full = WaitChannel::new(seg.shm(), CHANNEL_SIZE + NOT_FULL, eventfd::create()?)?;
        Ok(Ring {
            seg: Arc::new(seg),
            not_full,
            put_lock: Lock::new()?,
            get_lock: Lock::new()?,
            limits,
        })
    }

    /// Whether the single lock guards everything (LIFO and priority queues).
    fn single_lock(&self) -> bool {
        self.limits.order != Order::Fifo
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn len(&self) -> usize {
        let (head, tail) = self.snapshot();
        tail.items.wrapping_sub(head.items) as usize
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.seg.u32(CLOSED).load(Ordering::Acquire) != 0
    }

    /// Closes the queue and wakes every waiter in every process; getters drain what is queued.
    pub(crate) fn close(&self) {
        self.seg
            .u32(CLOSED)
            .fetch_max(CLOSED_DRAINING, Ordering::AcqRel);
        self.seg.channel.notify();
        self.not_full.notify();
    }

    /// Closes the queue, discards what is queued and wakes every waiter in every process
    /// (Python 3.13's `shutdown(immediate=True)`).
    pub(crate) fn close_discarding(&self) {
        self.seg
            .u32(CLOSED)
            .fetch_max(CLOSED_DISCARDING, Ordering::AcqRel);
        self.discard_all();
        self.seg.channel.notify();
        self.not_full.notify();
    }

    /// Whether the queue was closed with [`close_discarding`](Self::close_discarding).
    pub(crate) fn is_discarding(&self) -> bool {
        self.seg.u32(CLOSED).load(Ordering::Acquire) >= CLOSED_DISCARDING
    }

    /// Overwrites the getters' commit word (item count, byte position), as a hostile or buggy
    /// peer could, for tests.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn forge_head(&self, items: u32, pos: u32) {
        self.commit(HEAD, Mark { items, pos });
    }

    /// The segment the ring lives in, for tests that play a hostile peer.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn segment(&self) -> &crate::SharedMemory {
        self.seg.shm()
    }

    /// The getters' and putters' commit words, (items, position) each, for tests.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn marks(&self) -> ((u32, u32), (u32, u32)) {
        let (head, tail) = (self.mark(HEAD), self.mark(TAIL));
        ((head.items, head.pos), (tail.items, tail.pos))
    }

    /// Waiters on (not empty, not full), for tests.
    pub(crate) fn waiters(&self) -> ((u32, u32), (u32, u32)) {
        (self.seg.channel.waiters(), self.not_full.waiters())
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("len", &self.len())
            .field("limits", &self.limits)
            .finish()
    }
}

/// A deadline `timeout` from now.
pub(crate) fn deadline(timeout: Duration) -> Option<Instant> {
    Some(Instant::now() + timeout)
}
